"""Settlement (0500), refund limits and completions as a bank reconciles them
(spec sections 3 and 6.1), on the service harness of ``tests/test_service``."""
from __future__ import annotations

import pytest

from switch.journal import Totals
from tests.test_edges import fail_first_answer, hmac_key, run  # noqa: F401  (the fixture sets the journal's key)
from tests.test_service import MERCHANT, T7, TERM, TID, call, field90, journal, record, request

_NOT_DIGITS = (b"-000000007", b"+000000007", b"00000000 7", b" 000000007")


def settlement(stan: str, credits=0, debits=0, credit_amount=0, debit_amount=0, *, currency="978", t7=T7,
               tid=TID) -> bytes:
    msg = {"mti": "0500", 3: "920000", 7: t7, 11: stan, 41: tid, 42: MERCHANT,
           74: "%010d" % credits, 76: "%010d" % debits, 86: "%016d" % credit_amount, 88: "%016d" % debit_amount}
    if currency is not None:
        msg[49] = currency
    return TERM.encode(msg)


@pytest.mark.parametrize("field", [74, 76, 86, 88])
@pytest.mark.parametrize("bad", _NOT_DIGITS)
def test_an_0500_whose_totals_are_not_digits_is_30_and_settles_nothing(field, bad):
    width = 10 if field in (74, 76) else 16
    value = bad.rjust(width, b"0")

    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        marked = {74: 1111111111, 76: 2222222222, 86: 3333333333333333, 88: 4444444444444444}
        good = TERM.encode({"mti": "0500", 3: "920000", 7: T7, 11: "000010", 41: TID, 42: MERCHANT, 49: "978",
                            **{n: "%0*d" % (10 if n in (74, 76) else 16, v) for n, v in marked.items()}})
        mark = b"%d" % marked[field]
        body = good.replace(mark, value, 1)
        assert body != good and len(body) == len(good)
        resp = TERM.decode(await sw.handle(body))
        assert (resp.mti, resp[39]) == ("0510", "30")
        # The period is still open: the terminal's right totals close it.
        assert (await call(sw, settlement("000011", debits=1, debit_amount=1000)))[39] == "00"

    run(scenario)


def test_a_corrected_0500_under_the_key_of_a_refused_one_is_94_not_its_95_again():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        wrong = await call(sw, settlement("000010", debits=1, debit_amount=999))
        assert wrong[39] == "95"
        # Same 41, 11 and 7, other totals: not a retransmission (section 6).
        assert (await call(sw, settlement("000010", debits=1, debit_amount=1000)))[39] == "94"
        # The same 0500 again is one: its own answer.
        again = await call(sw, settlement("000010", debits=1, debit_amount=999))
        assert (again[39], again[37]) == ("95", wrong[37])
        # The period is still open: the corrected 0500 under a new STAN closes it.
        assert (await call(sw, settlement("000011", debits=1, debit_amount=1000)))[39] == "00"

    run(scenario)


def test_an_0500_whose_answer_was_lost_is_answered_as_decided_when_sent_again_and_settles_once():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        fail_first_answer(sw)  # the 0500's answer cannot be journaled: the terminal gets 96
        right = settlement("000010", debits=1, debit_amount=1000)
        assert (await call(sw, right))[39] == "96"
        # Its totals matched and closed the period: sent again, it is told so, not 95.
        again = await call(sw, right)
        assert again[39] == "00"
        assert (await call(sw, right))[37] == again[37]
        assert (await record(sw, "000010")).response_code == "00"
        # Closed once: nothing in the next period, and the purchase in no other.
        assert await journal(sw, sw.journal.totals(TID, "978")) == Totals(0, 0, 0, 0)
        assert (await call(sw, settlement("000011", debits=1, debit_amount=1000)))[39] == "95"
        assert (await call(sw, settlement("000012")))[39] == "00"

    run(scenario)


def test_an_0500_refused_whose_answer_was_lost_is_95_again_and_leaves_the_period_open():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        fail_first_answer(sw)
        wrong = settlement("000010", debits=1, debit_amount=1)
        assert (await call(sw, wrong))[39] == "96"
        assert (await call(sw, wrong))[39] == "95"
        assert (await call(sw, settlement("000011", debits=1, debit_amount=1000)))[39] == "00"

    run(scenario)


# -- completions (section 6.1: 25, then 94, then 13) ------------------------------------


def completion(stan: str, amount: int, preauth: str = "000001", **extra) -> bytes:
    return request("0220", stan=stan, amount="%012d" % amount, f90=field90("0100", preauth), **extra)


@pytest.mark.parametrize("pan", ["6011111111111117", "4761739001010118"])  # no route; fails the Luhn check
def test_a_completion_carrying_a_card_no_route_takes_is_another_card_25_not_14(pan):
    async def scenario(sw):
        assert (await call(sw, request("0100")))[39] == "00"
        assert (await call(sw, completion("000002", 1000, pan=pan)))[39] == "25"
        assert (await call(sw, completion("000003", 1000, "000009", pan=pan)))[39] == "25"
        assert len(sw.acquirers["bank-a"].authorized) == 1
        assert (await call(sw, completion("000004", 1000)))[39] == "00"

    run(scenario)


def test_a_completion_of_nothing_is_13_after_25_and_94():
    async def scenario(sw):
        # No such pre-authorization: 25 first, whatever the amount.
        assert (await call(sw, completion("000009", 0)))[39] == "25"
        assert (await call(sw, request("0100")))[39] == "00"
        refused = await call(sw, completion("000002", 0))
        assert (refused.mti, refused[39]) == ("0230", "13")
        assert (await record(sw, "000002")).response_code == "13"  # journaled: its retransmission gets it
        assert (await call(sw, completion("000003", 2500)))[39] == "00"
        assert (await call(sw, completion("000004", 0)))[39] == "94"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario)


def test_a_completion_in_another_currency_than_its_preauthorization_is_13():
    async def scenario(sw):
        assert (await call(sw, request("0100")))[39] == "00"  # 978
        # 1000 US cents cannot be compared with 2500 euro cents, nor counted in the 978 totals.
        assert (await call(sw, completion("000002", 1000, f49="840")))[39] == "13"
        assert len(sw.acquirers["bank-a"].authorized) == 1
        assert (await call(sw, completion("000003", 1000)))[39] == "00"
        assert (await call(sw, completion("000004", 1000, f49="840")))[39] == "94"
        assert (await call(sw, settlement("000010", debits=1, debit_amount=1000)))[39] == "00"

    run(scenario)
