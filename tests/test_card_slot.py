"""A host-link slot's delivery without sockets: a MAC checked at once or awaited (an HSM) ends the same.

The slot checks what it receives with the software module synchronously and
with an HSM in a task, one message at a time; both must give the core the
same messages in the same order and close the connection on the same ones.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adapters.card import HostLinkAcquirer
from adapters.card.hostlink import HostConnection
from adapters.card.hostmac import HostMac
from native.iso8583 import dialect
from switch.security import sandbox as sandbox_keys
from tests.test_card_link import ACQ, purchase

# What the acquirer's side MACs its answers with (the same key as the link's).
ACQUIRER = HostMac("bank-a", "tdes-retail", "zak-bank-a", dialect("host-87-bcd"))
ACQUIRER.use(sandbox_keys.module())


class Transport:
    """Records what is written; closed, it tells the slot on the next pass of the loop, as asyncio does."""

    def __init__(self, slot) -> None:
        self.slot = slot
        self.out: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            asyncio.get_running_loop().call_soon(self.slot.lost, None)

    close = abort


class AtOnce:
    """The sandbox module, answering synchronously as the software module does; counts its checks."""

    def __init__(self) -> None:
        self.module = sandbox_keys.module()
        self.checks = 0

    def generate_mac_now(self, key, data):
        return self.module.generate_mac_now(key, data)

    def verify_mac_now(self, key, data, mac):
        self.checks += 1
        return self.module.verify_mac_now(key, data, mac)


class Awaited(AtOnce):
    """The sandbox module answering only through await, as an HSM does."""

    generate_mac_now = verify_mac_now = None

    async def generate_mac(self, key, data):
        await asyncio.sleep(0)
        return self.module.generate_mac_now(key, data)

    async def verify_mac(self, key, data, mac):
        await asyncio.sleep(0)
        self.checks += 1
        return self.module.verify_mac_now(key, data, mac)


def arrive(slot, *payloads: bytes) -> None:
    """``payloads`` framed, arriving in one read."""
    slot.data_received(b"".join(slot.framer.encode(p) for p in payloads))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Core(HostConnection):
    """A connection core a test can break by replacing a method on the instance
    (compiled, HostConnection is an extension type whose instances take no new attributes)."""


async def signed_on(module):
    """A slot of a link that MACs with ``module``, signed on over a fake transport."""
    acq = HostLinkAcquirer("bank-a", [("127.0.0.1", 9)], ACQ, connections=1, mac="tdes-retail",
                           mac_key="zak-bank-a")
    acq.use_security_module(module)
    acq.loop = asyncio.get_running_loop()
    slot = acq.slots[0]
    slot.core = Core(acq.stans, acquirer_id=ACQ, echo_interval=1e9, network_timeout=1e9,
                               endpoint=slot.label, metrics=acq.metrics)
    slot.framer = acq.framer_factory()
    transport = Transport(slot)
    slot.connected(transport)
    await settle()
    sign_on = acq.dialect.decode(slot.framer.feed(transport.out[0])[0])
    arrive(slot, ACQUIRER.encode_now({**dict(sign_on.fields()), "mti": "0810", 39: "00"}))
    await settle()
    assert slot.usable
    return acq, slot, transport


def answer(msg: dict, wrong_mac: bool = False) -> bytes:
    wire = ACQUIRER.encode_now({**{k: v for k, v in msg.items() if k not in (35, 45, 52, 55)},
                                "mti": "0210", 38: "A00001", 39: "00"})
    return wire[:-1] + bytes([wire[-1] ^ 1]) if wrong_mac else wire


async def in_flight(acq, slot, n: int):
    loop = asyncio.get_running_loop()
    futs, msgs = [], []
    for i in range(n):
        fut = loop.create_future()
        msg, _ = slot.core.request(purchase(1000 + i, pin_block=None, icc=None), now=loop.time(),
                                   wall=time.time(), timeout=1e9, token=fut)
        futs.append(fut)
        msgs.append(msg)
    return futs, msgs


MODULES = pytest.mark.parametrize("module", [AtOnce, Awaited], ids=["at-once", "awaited"])


@MODULES
def test_answers_in_order_a_wrong_mac_uncertain_and_nothing_after_garbage(module):
    async def main():
        acq, slot, transport = await signed_on(module())
        futs, msgs = await in_flight(acq, slot, 3)
        arrive(slot, answer(msgs[0]), answer(msgs[1], wrong_mac=True))
        arrive(slot, b"\x02\x10garbage", answer(msgs[2]))
        await settle()
        assert futs[0].result().response_code == "00" and not futs[0].result().uncertain
        assert futs[1].result().uncertain
        assert futs[2].result().uncertain  # its approval came after the garbage: never read
        assert transport.aborted and acq.metrics.total("protocol_errors") == 1
        assert acq.metrics.get("mac_failures", mti="0200") == 1

    asyncio.run(main())


@MODULES
def test_a_failure_handling_a_message_closes_the_connection_and_is_logged(module, caplog):
    async def main():
        acq, slot, transport = await signed_on(checker := module())
        futs, msgs = await in_flight(acq, slot, 2)
        checks = checker.checks

        def broken(msg, now, authentic=True):
            raise RuntimeError("core bug")

        slot.core.receive = broken
        arrive(slot, answer(msgs[0]), answer(msgs[1]))
        await settle()
        assert transport.aborted and acq.metrics.total("protocol_errors") == 1
        assert futs[0].result().uncertain and futs[1].result().uncertain
        assert checker.checks == checks + 1  # the second answer was not looked at
        [record] = [r for r in caplog.records if "failed to handle a message" in r.getMessage()]
        assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError

    with caplog.at_level(logging.INFO, logger="payswitch.card"):
        asyncio.run(main())


@MODULES
def test_the_answers_before_bad_framing_count_then_the_connection_closes(module):
    async def main():
        acq, slot, transport = await signed_on(module())
        futs, msgs = await in_flight(acq, slot, 2)
        slot.data_received(slot.framer.encode(answer(msgs[0])) + b"\xff\xff" + slot.framer.encode(answer(msgs[1])))
        await settle()
        # Checked at once, the whole answer before the bad bytes counts; with an
        # HSM its check is still out when the connection closes: dropped, uncertain.
        assert futs[0].result().uncertain is (module is Awaited)
        assert futs[1].result().uncertain
        assert transport.aborted and acq.metrics.total("protocol_errors") == 1

    asyncio.run(main())
