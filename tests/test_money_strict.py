"""Money as a bank's reconciliation team checks it (spec sections 3 and 6.1), on the
service harness of ``tests/test_service``: the 0500 totals are exactly what the
journal says was approved and not reversed, per terminal and per currency; the
limits of field 4; completions; refunds under a daily limit."""
from __future__ import annotations

import pytest

from switch.core.acquirer import Result
from tests.test_edges import hmac_key, run  # noqa: F401  (the fixture sets the journal's key)
from tests.test_service import TID, call, fakes, field90, request, reversal, wait_state
from tests.test_settlement import settlement

EUR, JPY = "978", "392"
OTHER = "TERM0002"


def amount(n: int) -> str:
    return "%012d" % n


def test_0500_totals_are_what_was_approved_and_not_reversed_per_terminal_and_currency():
    # bank-a answers in order; None approves.
    answers = [
        None,  # 1 purchase 1000: a debit
        None,  # 2 purchase 2000, reversed below: neither
        # 3 the host approved part of 3000 (10): the terminal is told 51 and it is reversed
        Result(response_code="51", uncertain=True, acquirer_ref="p", acquirer_code="10"),
        None,  # 4 pre-authorization 5000: not counted
        None,  # 5 its completion at 4000: a debit of 4000
        None,  # 6 refund 300: a credit
        None,  # 7 purchase of 1000 JPY: in the 392 totals only
        "timeout",  # 8 uncertain (68), reversed by the switch: neither
        None,  # 9 another terminal's purchase: not this terminal's
    ]
    acquirers = fakes()
    acquirers["bank-a"].answers = answers

    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount=amount(1000))))[39] == "00"
        assert (await call(sw, request(stan="000002", amount=amount(2000))))[39] == "00"
        assert (await call(sw, reversal("000102", "000002", f4=amount(2000))))[39] == "00"
        assert (await call(sw, request(stan="000003", amount=amount(3000))))[39] == "51"
        assert (await call(sw, reversal("000103", "000003", f4=amount(3000))))[39] == "00"
        assert (await call(sw, request("0100", stan="000004", amount=amount(5000))))[39] == "00"
        done = await call(sw, request("0220", stan="000005", amount=amount(4000), f90=field90("0100", "000004")))
        assert (done.mti, done[39]) == ("0230", "00")
        assert (await call(sw, request(stan="000006", pcode="200000", amount=amount(300))))[39] == "00"
        assert (await call(sw, request(stan="000007", amount=amount(1000), f49=JPY)))[39] == "00"
        assert (await call(sw, request(stan="000008", amount=amount(700))))[39] == "68"
        assert (await call(sw, request(stan="000009", amount=amount(900), tid=OTHER)))[39] == "00"

        # Another terminal's totals, or this one's in another currency, are 95 ...
        wrong = await call(sw, settlement("000010", 1, 3, 300, 5900))
        assert wrong[39] == "95"
        # ... and the 0510 says nothing of what the journal holds.
        assert not {74, 76, 86, 88, 2, 35, 52} & set(wrong.fields())
        assert (await call(sw, settlement("000011", 1, 2, 300, 5000)))[39] == "00"
        assert (await call(sw, settlement("000012", 0, 1, 0, 1000, currency=JPY)))[39] == "00"
        assert (await call(sw, settlement("000013", 0, 1, 0, 900, tid=OTHER)))[39] == "00"

    run(scenario, acquirers=acquirers)


def test_field_4_at_its_n12_maximum_is_approved_and_settled_in_full():
    most = 999_999_999_999

    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount=amount(most))))[39] == "00"
        assert (await call(sw, request(stan="000002", amount=amount(most))))[39] == "00"
        # Two of them already exceed n12: 86/88 are n16 and hold them exactly.
        assert (await call(sw, settlement("000010", 0, 2, 0, 2 * most)))[39] == "00"

    run(scenario)


@pytest.mark.parametrize("mti, pcode, code", [
    ("0200", "000000", "13"),  # purchase
    ("0200", "200000", "13"),  # refund
    ("0100", "000000", "13"),  # pre-authorization
    ("0200", "310000", "00"),  # balance inquiry: no money
])
def test_a_zero_amount_is_13_except_for_a_balance_inquiry(mti, pcode, code):
    async def scenario(sw):
        assert (await call(sw, request(mti, stan="000001", pcode=pcode, amount=amount(0))))[39] == code

    run(scenario)


def test_a_currency_without_minor_units_counts_field_4_as_whole_units_and_apart():
    async def scenario(sw):
        # 1 JPY and 12345 KRW: field 4 is in the currency's smallest unit, the unit itself.
        assert (await call(sw, request(stan="000001", amount=amount(1), f49=JPY)))[39] == "00"
        assert (await call(sw, request(stan="000002", amount=amount(12345), f49="410")))[39] == "00"
        assert (await call(sw, settlement("000010", 0, 1, 0, 1, currency=JPY)))[39] == "00"
        assert (await call(sw, settlement("000011", 0, 1, 0, 12345, currency="410")))[39] == "00"

    run(scenario)


def test_completions_above_twice_and_after_a_reversal_get_the_specs_codes():
    async def scenario(sw):
        assert (await call(sw, request("0100", stan="000001", amount=amount(5000))))[39] == "00"
        above = request("0220", stan="000002", amount=amount(5001), f90=field90("0100", "000001"))
        assert (await call(sw, above))[39] == "13"
        first = request("0220", stan="000003", amount=amount(5000), f90=field90("0100", "000001"))
        assert (await call(sw, first))[39] == "00"
        second = request("0220", stan="000004", amount=amount(10), f90=field90("0100", "000001"))
        assert (await call(sw, second))[39] == "94"
        # Above and already completed: 94 comes before 13.
        both = request("0220", stan="000005", amount=amount(9999), f90=field90("0100", "000001"))
        assert (await call(sw, both))[39] == "94"
        assert (await call(sw, request("0100", stan="000006", amount=amount(800))))[39] == "00"
        assert (await call(sw, reversal("000007", "000006", orig_mti="0100", f4=amount(800))))[39] == "00"
        late = request("0220", stan="000008", amount=amount(800), f90=field90("0100", "000006"))
        assert (await call(sw, late))[39] == "25"
        # One completion of 5000 is the period's only debit.
        assert (await call(sw, settlement("000010", 0, 1, 0, 5000)))[39] == "00"

    run(scenario)


def refund(stan: str, n: int) -> bytes:
    return request(stan=stan, pcode="200000", amount=amount(n))


def test_a_refund_retransmitted_counts_once_against_the_daily_limit_and_the_limit_survives_a_restart(tmp_path):
    url = f"sqlite://{tmp_path / 'journal.db'}"

    async def before(sw):
        assert (await call(sw, refund("000001", 600)))[39] == "00"
        again = await call(sw, refund("000001", 600))
        assert again[39] == "00"
        assert (await call(sw, refund("000002", 401)))[39] == "58"
        assert (await call(sw, refund("000003", 400)))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    async def after(sw):
        assert (await call(sw, refund("000004", 1)))[39] == "58"
        assert (await call(sw, refund("000001", 600)))[39] == "00"  # still its own answer
        assert sw.acquirers["bank-a"].authorized == []
        assert (await call(sw, settlement("000010", 2, 0, 1000, 0)))[39] == "00"

    limits = "refund_daily_max = { 978 = 1000 }\nrefund_max = { 978 = 800 }"
    run(before, merchant=limits, journal_url=url)
    run(after, merchant=limits, journal_url=url)


def test_a_refund_above_the_single_refund_limit_is_58_and_sent_nowhere():
    async def scenario(sw):
        assert (await call(sw, refund("000001", 801)))[39] == "58"
        assert sw.acquirers["bank-a"].authorized == []
        assert (await call(sw, settlement("000010")))[39] == "00"

    run(scenario, merchant="refund_max = { 978 = 800 }")


def test_a_repeat_seen_first_counts_as_its_original():
    async def scenario(sw):
        assert (await call(sw, request("0201", stan="000001", amount=amount(1000))))[39] == "00"
        assert (await call(sw, request("0101", stan="000002", amount=amount(5000))))[39] == "00"
        done = request("0221", stan="000003", amount=amount(4000), f90=field90("0100", "000002"))
        assert (await call(sw, done))[39] == "00"
        assert (await call(sw, request("0201", stan="000004", pcode="200000", amount=amount(300))))[39] == "00"
        assert (await call(sw, settlement("000010", 1, 2, 300, 5000)))[39] == "00"

    run(scenario)


def test_an_0500_without_field_49_settles_the_merchants_currency():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount=amount(1000), f49="156")))[39] == "00"
        assert (await call(sw, request(stan="000002", amount=amount(2000))))[39] == "00"  # 978
        assert (await call(sw, settlement("000010", 0, 1, 0, 1000, currency=None)))[39] == "00"
        assert (await call(sw, settlement("000011", 0, 1, 0, 2000)))[39] == "00"

    run(scenario)


def test_a_reversed_completion_counts_nowhere_and_its_preauthorization_may_be_completed_again():
    async def scenario(sw):
        assert (await call(sw, request("0100", stan="000001", amount=amount(5000))))[39] == "00"
        first = request("0220", stan="000002", amount=amount(4000), f90=field90("0100", "000001"))
        assert (await call(sw, first))[39] == "00"
        assert (await call(sw, reversal("000003", "000002", orig_mti="0220", f4=amount(4000))))[39] == "00"
        assert (await call(sw, settlement("000010")))[39] == "00"
        again = request("0220", stan="000004", amount=amount(3000), f90=field90("0100", "000001"))
        assert (await call(sw, again))[39] == "00"
        assert (await call(sw, settlement("000011", 0, 1, 0, 3000)))[39] == "00"

    run(scenario)


def test_a_clock_set_back_across_a_restart_keeps_what_is_answered_after_it_in_the_next_period(tmp_path):
    from switch.journal import Totals, open_journal
    from tests.test_journal import KEY, ok, txn

    url = f"sqlite://{tmp_path / 'journal.sqlite'}"
    now = [2_000_000.0]
    j = open_journal(url, hmac_key=KEY, clock=lambda: now[0])
    rec, _ = ok(j.insert(txn(1, terminal=TID)))
    ok(j.update(rec.id, response_code="00", state="approved"))
    assert ok(j.settle_totals(TID, "978", Totals(0, 1, 0, 1000)))[1]
    j.close()
    now[0] -= 3600  # the host's clock stepped back an hour while the switch was down
    j = open_journal(url, hmac_key=KEY, clock=lambda: now[0])
    try:
        rec, _ = ok(j.insert(txn(2, terminal=TID)))
        ok(j.update(rec.id, response_code="00", state="approved"))
        # Approved after the accepted 0500: the next period's, never in none.
        assert ok(j.totals(TID, "978")) == Totals(0, 1, 0, 1000)
    finally:
        j.close()


def test_a_purchase_reversed_after_the_0500_that_counted_it_counts_in_no_later_period():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount=amount(1000))))[39] == "00"
        assert (await call(sw, settlement("000010", 0, 1, 0, 1000)))[39] == "00"
        assert (await call(sw, reversal("000002", "000001", f4=amount(1000))))[39] == "00"
        # Section 3 counts reversed transactions in neither: the next period holds no credit for it.
        assert (await call(sw, settlement("000011")))[39] == "00"
        await wait_state(sw, "000001", "reversed")  # reversed at the acquirer, in the background

    run(scenario)


def test_an_0500_for_another_merchants_terminal_is_03_and_tells_nothing_of_its_totals():
    async def scenario(sw):
        theirs = request(stan="000001", amount=amount(1000), tid="OTHR0001", mid="SHOP00000000002")
        assert (await call(sw, theirs))[39] == "00"
        # The terminal of merchant 2 named under merchant 1 (settlement's field 42): not its totals to check.
        for stan, totals in (("000010", (0, 1, 0, 1000)), ("000011", (0, 0, 0, 0))):
            resp = await call(sw, settlement(stan, *totals, tid="OTHR0001"))
            assert resp[39] == "03"
            assert not {74, 76, 86, 88} & set(resp.fields())

    run(scenario)
