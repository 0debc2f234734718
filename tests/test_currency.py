"""Field 49, "Currency code, ISO 4217 numeric" (spec section 2), on the service harness.

A request whose field 49 is no ISO 4217 currency (000, 999 "no currency",
digits no currency has) answers 30 before it is routed: journaled as the
switch's own answer, so that a retransmission gets it byte for byte, counted
in no 0500 totals, sent to no acquirer.  An 0400 is never refused for its
field 49: a reversal must always be able to undo money.
"""
from __future__ import annotations

import pytest

from native.iso8583 import dialect
from switch.core import states
from switch.core.currencies import CURRENCIES
from tests.test_service import KEY_ENV, KEY_HEX, call, field90, record, request, reversal, run, settlement

TERM = dialect("terminal-87")
NOT_CURRENCIES = ["000", "999", "123", "963", "960", "959", "997", "998", "927"]


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


def _untouched(sw):
    return all(a.authorized == [] and a.reversed == [] for a in sw.acquirers.values())


def test_the_list_holds_the_currencies_terminals_pay_in_and_no_x_code_but_the_regional_ones():
    for code in ("008", "036", "156", "344", "446", "532", "826", "840", "901", "925", "926", "928", "941",
                 "950", "951", "952", "953", "978", "985", "986"):
        assert code in CURRENCIES, code
    for code in NOT_CURRENCIES + ["940", "947", "948", "955", "958", "961", "962", "964", "965", "994"]:
        assert code not in CURRENCIES, code
    assert all(len(c) == 3 and c.isdigit() for c in CURRENCIES)


@pytest.mark.parametrize("mti", ["0100", "0200"])
@pytest.mark.parametrize("currency", ["999", "000", "123"])
def test_a_purchase_in_no_iso_4217_currency_answers_30_journaled_and_reaches_no_acquirer(mti, currency):
    async def scenario(sw):
        resp = await call(sw, request(mti, f49=currency))
        assert (resp.mti, resp[39], resp[49]) == (mti[:2] + "10", "30", currency) and 38 not in resp
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code, rec.acquirer, rec.rrn) == (states.REJECTED, "30", None, resp[37])
        # A retransmission, and the terminal's repeat: the journaled answer, never authorized.
        assert await call(sw, request(mti, f49=currency)) == resp
        again = await call(sw, request(mti[:3] + "1", f49=currency))
        assert (again[39], again[37]) == ("30", resp[37])
        assert _untouched(sw)

    run(scenario)


@pytest.mark.parametrize("currency", ["978", "840"])
def test_a_purchase_in_a_currency_is_approved(currency):
    async def scenario(sw):
        resp = await call(sw, request(f49=currency))
        assert (resp[39], resp[49]) == ("00", currency)
        (req, _), = sw.acquirers["bank-a"].authorized
        assert req.currency == currency

    run(scenario)


def test_a_completion_advice_in_no_currency_answers_30():
    async def scenario(sw):
        assert (await call(sw, request("0100")))[39] == "00"
        resp = await call(sw, request("0220", stan="000002", f49="999", f90=field90("0100", "000001")))
        assert (resp.mti, resp[39]) == ("0230", "30")
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario)


def test_the_0400_of_a_purchase_refused_for_its_currency_answers_00_and_reverses_nothing():
    async def scenario(sw):
        assert (await call(sw, request(f49="999")))[39] == "30"
        resp = await call(sw, reversal("000002", "000001", f49="999"))
        assert (resp.mti, resp[39]) == ("0410", "00")
        assert (await record(sw, "000001")).state == states.REJECTED
        assert _untouched(sw)

    run(scenario)


def test_an_0400_is_never_refused_for_its_field_49():
    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        resp = await call(sw, reversal("000002", "000001", f49="000"))
        assert (resp.mti, resp[39]) == ("0410", "00")
        assert (await record(sw, "000002")).original_id == (await record(sw, "000001")).id

    run(scenario)


def test_an_0500_in_no_currency_answers_30_and_counts_nothing():
    async def scenario(sw):
        assert (await call(sw, request(f49="999")))[39] == "30"
        body = TERM.decode(settlement("000002", debits=1, debit_amount=2500))
        resp = await call(sw, TERM.encode({"mti": "0500", **body.fields(), 49: "999"}))
        assert (resp.mti, resp[39]) == ("0510", "30")
        # The refused purchase is in no currency's totals, and the refused 0500 closed no period.
        assert (await call(sw, settlement("000003")))[39] == "00"

    run(scenario)


def test_an_0500_without_field_49_is_settled_in_the_merchant_currency():
    async def scenario(sw):
        body = TERM.decode(settlement("000001"))
        fields = {n: v for n, v in body.fields().items() if n != 49}
        resp = await call(sw, TERM.encode({"mti": "0500", **fields}))
        assert (resp.mti, resp[39]) == ("0510", "00") and 49 not in resp

    run(scenario)
