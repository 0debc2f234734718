"""Which processing codes (field 3) go where (spec sections 3 and 4.1).

A financial 0200 is a purchase (00), a refund (20) or a balance inquiry (31);
a top-up (21) loads cash onto a city card (section 4.1) and is nothing else:
on a bank card or a wallet code it is answered 12, journaled, and sent nowhere.
"""
from __future__ import annotations

import pytest

from switch.core import messages as m
from switch.core import states
from tests.test_edges import CC_CARD, CC_DATA, CITYCARD, run
from tests.test_core_messages import msg
from tests.test_service import KEY_ENV, KEY_HEX, MASTERCARD, FakeAcquirer, call, fakes, record, request


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


@pytest.mark.parametrize("kind", ["card", "wallet", "unknown"])
def test_a_top_up_of_anything_but_a_city_card_is_12(kind):
    with pytest.raises(m.Rejection) as e:
        m.check_topup(msg(f3="210000"), kind)
    assert e.value.code == "12" and "21xxxx" in e.value.reason
    m.check_topup(msg(f3="210000"), "citycard")
    for pcode in ("000000", "200000", "310000"):
        m.check_topup(msg(f3=pcode), kind)


@pytest.mark.parametrize("body", [
    request(pcode="210000"),
    request(pcode="210000", pan=MASTERCARD),
    request(pcode="210000", pan=None, f22="031", f48="BC018281234567890123456"),
], ids=["visa", "mastercard", "wallet"])
def test_a_top_up_of_a_bank_card_or_wallet_answers_12_and_reaches_no_acquirer(body):
    async def scenario(sw):
        resp = await call(sw, body)
        assert (resp.mti, resp[39]) == ("0210", "12") and 38 not in resp
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code, rec.host_stan, rec.card_sealed) == (states.REJECTED, "12", None, None)
        assert await call(sw, body) == resp  # journaled: a retransmission gets the same answer
        assert all(a.authorized == [] for a in sw.acquirers.values())

    run(scenario)


def test_a_city_card_top_up_still_goes_to_its_centre():
    centre = FakeAcquirer("citycard")

    async def scenario(sw):
        topup = request(pcode="210000", pan=CC_CARD, f48=CC_DATA + "M1008" + "0A1B2C3D")
        assert (await call(sw, topup))[39] == "00"
        (req, _), = centre.authorized
        assert req.processing_code == "210000"

    run(scenario, acquirers=fakes(citycard=centre), extra=CITYCARD)
