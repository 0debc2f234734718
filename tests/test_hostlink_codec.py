"""A link encodes its requests and decodes its answers with its native dialect in C
(link._encoded, slot._decoded); a dialect of another type is still asked its own
encode and decode, and the purchase ends the same."""
from __future__ import annotations

import asyncio

import pytest

from adapters.card import HostLinkAcquirer
from adapters.card.hostlink import HostConnection
from tests.test_card_link import ACQ, purchase
from tests.test_card_slot import Transport, settle


class Asked:
    """A dialect that is not the native type: the native one's work, each call counted."""

    def __init__(self, native) -> None:
        self.native = native
        self.encoded: list[str] = []
        self.decoded = 0

    def encode(self, msg):
        self.encoded.append(msg["mti"])
        return self.native.encode(msg)

    def decode(self, data):
        self.decoded += 1
        return self.native.decode(data)


async def one_purchase(wrap: bool):
    acq = HostLinkAcquirer("bank-a", [("127.0.0.1", 9)], ACQ, connections=1)
    native = acq.dialect
    if wrap:
        acq.dialect = Asked(native)
    acq.loop = asyncio.get_running_loop()
    slot = acq.slots[0]
    slot.core = HostConnection(acq.stans, acquirer_id=ACQ, echo_interval=1e9, network_timeout=1e9,
                               endpoint=slot.label, metrics=acq.metrics)
    slot.framer = acq.framer_factory()
    transport = Transport(slot)
    slot.connected(transport)
    sign_on = native.decode(slot.framer.feed(transport.out[0])[0])
    slot.data_received(slot.framer.encode(native.encode({**sign_on.fields(), "mti": "0810", 39: "00"})))
    assert slot.usable
    task = asyncio.ensure_future(acq.authorize(purchase(1000, pin_block=None, icc=None), 5.0))
    await settle()
    request = native.decode(slot.framer.feed(transport.out[1])[0])
    assert request.mti == "0200" and request[4] == "000000001000"
    answer = {k: v for k, v in request.fields().items() if k not in (35, 52, 55)}
    slot.data_received(slot.framer.encode(native.encode({**answer, "mti": "0210", 38: "A00001", 39: "00"})))
    result = await asyncio.wait_for(task, 1.0)
    return acq, result


@pytest.mark.parametrize("wrap", [False, True], ids=["native", "another type"])
def test_a_purchase_is_encoded_and_its_answer_decoded_by_the_links_dialect(wrap):
    acq, result = asyncio.run(one_purchase(wrap))
    assert result.response_code == "00" and result.auth_code == "A00001" and not result.uncertain
    if wrap:
        # The sign-on and the purchase encoded, their two answers decoded, by the dialect's own methods.
        assert acq.dialect.encoded == ["0800", "0200"] and acq.dialect.decoded == 2
