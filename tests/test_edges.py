"""Money at the edges (spec section 6.1), one scenario per rule, on the service harness.

Each of these failed before the transaction engine: the issue "money at the
edges" lists them as defects 1-7.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from switch import config as config_mod
from switch.core import states
from switch.core.acquirer import NOT_FOUND, REVERSED, Result
from switch.io.service import Switch
from tests.test_service import (
    CONFIG,
    KEY_ENV,
    MASTERCARD,
    T7,
    TERM,
    VISA,
    JOURNAL_WRITER,
    FakeAcquirer,
    call,
    fakes,
    field90,
    journal,
    record,
    request,
    reversal,
    settlement,
    wait_state,
)

@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "5e" * 32)


CITYCARD = """
[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:5"]
timeout = 0.3

[[routes]]
name = "citycard"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["citycard"]
"""
CC_CARD = "8800123456789015"
CC_DATA = "CC035" + "00001" + "000000010000" + "0000000001" + "69C169C3"


def run(scenario, *, acquirers=None, extra="", tweak=None, journal_url=None, merchant="", **fmt):
    """``await scenario(switch)`` on a started switch of test_service's configuration,
    with ``tweak`` (top-level keys), ``merchant`` (keys of the first merchant) and
    ``extra`` (tables) added."""
    args = dict(timeout=0.3, response_timeout=2.0, key_env=KEY_ENV)
    args.update(fmt)
    text = CONFIG.format(**args) + extra
    if tweak:
        text = tweak + "\n" + text
    if journal_url:
        text = text.replace('url = "sqlite://:memory:"', f'url = "{journal_url}"')
    if merchant:
        text = text.replace('terminals = ["TERM0001-TERM0009"]', 'terminals = ["TERM0001-TERM0009"]\n' + merchant, 1)
    cfg = config_mod.loads(text, "test_edges.toml")
    acquirers = acquirers if acquirers is not None else fakes()

    async def main():
        sw = Switch(cfg, acquirers=acquirers)
        try:
            await sw.start()
            return await scenario(sw)
        finally:
            await asyncio.wait_for(sw.close(), 5)

    return asyncio.run(main())


def fail_first_answer(sw) -> None:
    """Make the journal fail the first write that stores an answer (store(), or update())."""
    update, store = sw.journal.update, sw.journal.store
    failed: list[int] = []

    def refused(txn_id):
        failed.append(txn_id)
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(RuntimeError("disk full"))
        return fut

    def failing_update(txn_id, **changes):
        return refused(txn_id) if "response" in changes and not failed else update(txn_id, **changes)

    def failing_store(txn_id, expect=None, /, **changes):
        return refused(txn_id) if "response" in changes and not failed else store(txn_id, expect, **changes)

    sw.journal.update, sw.journal.store = failing_update, failing_store


# -- defect 1: an approval whose journaling fails ---------------------------------------


def test_an_approval_the_journal_cannot_take_is_answered_96_and_reversed():
    async def scenario(sw):
        fail_first_answer(sw)
        resp = await call(sw, request())
        assert resp[39] == "96" and 38 not in resp
        await wait_state(sw, "000001", states.REVERSED)
        assert len(sw.acquirers["bank-a"].reversed) == 1
        # The terminal's own 0400 for it: 00, nothing reversed twice.
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        assert len(sw.acquirers["bank-a"].reversed) == 1

    run(scenario)


@pytest.mark.parametrize("answer", [
    Result(response_code="00", auth_code="T00001", acquirer_ref="w-1", tlv={"WT": "4" * 1200}),  # over field 48's 999
    Result(response_code="00", auth_code="T\u4ea4\u6613", acquirer_ref="w-1"),  # not an an6 field 38
])
def test_an_approval_that_cannot_be_put_in_a_response_is_answered_96_and_reversed(answer):
    wallet = FakeAcquirer("wallet-a", answer=answer)

    async def scenario(sw):
        body = request(pan=None, f22="031", f48="BC018281234567890123456")
        resp = await call(sw, body)
        assert resp[39] == "96" and 38 not in resp
        await wait_state(sw, "000001", states.REVERSED)
        assert len(wallet.reversed) == 1
        again = await call(sw, body)  # answered from the journal, never paid twice
        assert (again[39], again[37]) == ("96", resp[37]) and len(wallet.authorized) == 1

    run(scenario, acquirers=fakes(**{"wallet-a": wallet}))


def test_a_terminal_0400_of_a_transaction_left_sent_reverses_it():
    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        rec = await record(sw, "000001")
        await journal(sw, sw.journal.update(rec.id, state=states.SENT))  # as a process that died would leave it
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)

    run(scenario)


# -- defect 2: reversals a real host can match ------------------------------------------


def test_a_reversal_names_its_original_by_the_host_stan_journaled_before_sending():
    bank_a = FakeAcquirer("bank-a", answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.REVERSED)
        (auth, _), = bank_a.authorized
        (rev, _), = bank_a.reversed
        assert rec.host_stan and auth.host_stan == rec.host_stan and auth.host_time == rec.host_time
        assert (rev.original.host_stan, rev.original.host_time) == (rec.host_stan, rec.host_time)
        assert rev.host_stan == rec.reversal_stan != rec.host_stan
        assert rev.original.pan == VISA  # for hosts that want field 2 again (in memory; sealed in the journal)
        assert "4761739001010119" not in repr(await record(sw, "000001"))

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_host_stans_go_on_across_a_restart(tmp_path):
    stans = []
    for stan in ("000001", "000002"):
        bank_a = FakeAcquirer("bank-a")

        async def scenario(sw, stan=stan, bank_a=bank_a):
            assert (await call(sw, request(stan=stan)))[39] == "00"
            stans.append(bank_a.authorized[0][0].host_stan)

        run(scenario, acquirers=fakes(**{"bank-a": bank_a}), journal_url=f"sqlite://{tmp_path / 'j.sqlite'}")
    assert stans[0] != stans[1] and all(len(s) == 6 and s.isdigit() for s in stans)


class Answers(FakeAcquirer):
    """A fake whose reverse() answers from a script of outcomes."""

    def __init__(self, name, outcomes, **kw):
        super().__init__(name, **kw)
        self.outcomes = list(outcomes)

    async def reverse(self, request, timeout):
        self.reversed.append((request, timeout))
        return self.outcomes.pop(0) if self.outcomes else REVERSED


def test_a_25_is_repeated_for_its_window_as_0421s_then_recorded_as_unmatched_not_reversed():
    bank_a = Answers("bank-a", [NOT_FOUND] * 50, answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.UNMATCHED, timeout=5)
        attempts = [r.attempt for r, _ in bank_a.reversed]
        assert attempts[:3] == [0, 1, 2] and len(attempts) >= 3
        assert len({(r.host_stan, r.host_time) for r, _ in bank_a.reversed}) == 1
        assert rec.state == states.UNMATCHED and rec.reversal_attempts >= 2

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}),
        tweak="reversal_not_found_window = 0.3\nreversal_backoff_max = 0.1")


def test_a_25_that_turns_into_00_within_the_window_is_reversed():
    bank_a = Answers("bank-a", [NOT_FOUND, NOT_FOUND, REVERSED], answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        await wait_state(sw, "000001", states.REVERSED, timeout=5)
        assert len(bank_a.reversed) == 3

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak="reversal_not_found_window = 30.0")


# -- defect 3: completions --------------------------------------------------------------


def preauth_then(sw, amount="000000002500"):
    return call(sw, request("0100", amount=amount))


@pytest.mark.parametrize(
    "second, code",
    [
        (dict(stan="000003", amount="000000900000"), "94"),  # completed already, whatever the amount
        (dict(stan="000003", amount="000000001000"), "94"),
    ],
)
def test_a_preauthorization_is_completed_once(second, code):
    async def scenario(sw):
        assert (await preauth_then(sw))[39] == "00"
        first = await call(sw, request("0220", stan="000002", amount="000000002000", f90=field90("0100", "000001")))
        assert first[39] == "00"
        again = await call(sw, request("0220", f90=field90("0100", "000001"), **second))
        assert again[39] == code
        assert len(sw.acquirers["bank-a"].authorized) == 2  # the pre-authorization and one completion

    run(scenario)


def test_a_completion_above_the_preauthorized_amount_answers_13_and_another_card_25():
    async def scenario(sw):
        assert (await preauth_then(sw))[39] == "00"
        over = await call(sw, request("0220", stan="000002", amount="000000002501", f90=field90("0100", "000001")))
        assert over[39] == "13"
        other = await call(sw, request("0220", stan="000003", pan="4111111111111111", amount="000000001000",
                                       f90=field90("0100", "000001")))
        assert other[39] == "25"
        # First of 25, 94, 13: another card AND over the amount is 25.
        both = await call(sw, request("0220", stan="000004", pan="4111111111111111", amount="000000009000",
                                      f90=field90("0100", "000001")))
        assert both[39] == "25"
        ok = await call(sw, request("0220", stan="000005", amount="000000002500", f90=field90("0100", "000001")))
        assert ok[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario)


def test_a_completion_whose_outcome_was_uncertain_does_not_count():
    bank_a = FakeAcquirer("bank-a", answers=[None, "timeout", None])

    async def scenario(sw):
        assert (await preauth_then(sw))[39] == "00"
        assert (await call(sw, request("0220", stan="000002", amount="000000002000",
                                      f90=field90("0100", "000001"))))[39] == "68"
        # The terminal sends it again (section 6.1: advices are delivered): forwarded.
        again = await call(sw, request("0221", stan="000002", amount="000000002000", f90=field90("0100", "000001")))
        assert (again.mti, again[39]) == ("0230", "00")
        assert len(bank_a.authorized) == 3

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_two_completions_at_once_complete_once():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", answers=[None], gate=None)

    async def scenario(sw):
        assert (await preauth_then(sw))[39] == "00"
        bank_a.gate = gate
        a = asyncio.create_task(call(sw, request("0220", stan="000002", amount="000000001000",
                                                 f90=field90("0100", "000001"))))
        b = asyncio.create_task(call(sw, request("0220", stan="000003", amount="000000001000",
                                                 f90=field90("0100", "000001"))))
        await asyncio.sleep(0.05)
        gate.set()
        codes = sorted(r[39] for r in await asyncio.gather(a, b))
        assert codes == ["00", "94"]

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- defect 5: 0410 within 3 s whatever the acquirer does --------------------------------


def test_the_0410_does_not_wait_for_a_slow_acquirer():
    class Slow(FakeAcquirer):
        async def reverse(self, request, timeout):
            await asyncio.sleep(timeout)
            return await super().reverse(request, timeout)

    bank_a = Slow("bank-a")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        assert loop.time() - t0 < 0.2  # the acquirer takes 2 s
        await wait_state(sw, "000001", states.REVERSED, timeout=5)

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=1.0)


# -- defect 6: city-card uploads and repeats ---------------------------------------------


def test_a_city_card_upload_answered_68_is_forwarded_again_and_never_reversed():
    centre = FakeAcquirer("citycard", answers=["timeout", None])

    async def scenario(sw):
        upload = dict(stan="000001", pan=CC_CARD, amount="000000002500", f22="051", f48=CC_DATA)
        first = await call(sw, request("0220", **upload))
        assert first[39] == "68"
        assert centre.reversed == []  # the card paid already: never reversed
        again = await call(sw, request("0221", **upload))
        assert (again.mti, again[39]) == ("0230", "00")
        assert len(centre.authorized) == 2
        # Confirmed now: a third copy is answered from the journal.
        third = await call(sw, request("0220", **upload))
        assert (third[39], third[37]) == ("00", again[37]) and len(centre.authorized) == 2
        await asyncio.sleep(0.1)
        assert centre.reversed == []

    run(scenario, acquirers=fakes(citycard=centre), extra=CITYCARD)


@pytest.mark.parametrize("dates", [dict(t7="1332153000"), dict(f13="1340"), dict(f12="256000")])
def test_a_city_card_upload_with_an_impossible_date_is_30_and_never_forwarded(dates):
    centre = FakeAcquirer("citycard")

    async def scenario(sw):
        upload = dict(stan="000001", pan=CC_CARD, amount="000000002500", f22="051", f48=CC_DATA)
        answer = await call(sw, request("0220", **upload, **dates))
        assert (answer.mti, answer[39]) == ("0230", "30") and 38 not in answer
        assert centre.authorized == []
        good = await call(sw, request("0220", **{**upload, "stan": "000002"}))
        assert good[39] == "00" and len(centre.authorized) == 1

    run(scenario, acquirers=fakes(citycard=centre), extra=CITYCARD)


@pytest.mark.parametrize("repeat", ["0101", "0201", "0401"])
def test_a_repeat_is_answered_as_its_original_never_authorized_twice(repeat):
    async def scenario(sw):
        base = repeat[:3] + "0"
        if base == "0400":
            assert (await call(sw, request()))[39] == "00"
            first = await call(sw, reversal("000002", "000001"))
            again = await call(sw, request(repeat, stan="000002", f90=field90("0200", "000001")))
        else:
            first = await call(sw, request(base))
            again = await call(sw, request(repeat))
        assert again.mti == first.mti and again[39] == first[39] and again[37] == first[37]
        assert again.get(38) == first.get(38)
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario)


def test_a_repeat_whose_original_never_came_is_handled_as_the_original():
    async def scenario(sw):
        resp = await call(sw, request("0201"))
        assert (resp.mti, resp[39]) == ("0210", "00")
        assert (await record(sw, "000001")).mti == "0200"
        assert (await call(sw, request("0201", amount="000000009999")))[39] == "94"

    run(scenario)


# -- defect 7: settlement -------------------------------------------------------------------


def test_settlement_counts_one_currency_and_an_in_flight_one_belongs_to_the_next_period():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        assert (await call(sw, request(stan="000002", amount="000000000700", f49="840")))[39] == "00"
        bank_a.gate = gate
        slow = asyncio.create_task(call(sw, request(stan="000003", amount="000000000300")))
        await asyncio.wait_for(bank_a.entered.wait(), 2)
        await asyncio.sleep(0.02)
        # 978: only the first; the one in flight is not counted, the 840 one neither.
        assert (await call(sw, settlement("000010", debits=1, debit_amount=1000)))[39] == "00"
        gate.set()
        assert (await slow)[39] == "00"
        # Next period (978): exactly the one that was in flight.
        assert (await call(sw, settlement("000011", debits=1, debit_amount=300)))[39] == "00"
        usd = TERM.encode({"mti": "0500", 3: "920000", 7: T7, 11: "000012", 41: "TERM0001", 42: "SHOP00000000001",
                           49: "840", 74: "%010d" % 0, 76: "%010d" % 1, 86: "%016d" % 0, 88: "%016d" % 700})
        assert (await call(sw, usd))[39] == "00"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- refund limits and the retransmission window (section 6.1) -----------------------------


def test_refunds_beyond_the_merchants_limits_answer_58():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", pcode="200000", amount="000000100000")))[39] == "00"
        assert (await call(sw, request(stan="000002", pcode="200000", amount="000000100001")))[39] == "58"
        assert (await call(sw, request(stan="000003", pcode="200000", amount="000000060000")))[39] == "58"  # daily
        assert (await call(sw, request(stan="000004", pcode="200000", amount="000000050000")))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario, merchant="currency = \"978\"\nrefund_max = 100000\nrefund_daily_max = 150000")


def test_refunds_at_once_keep_to_the_daily_limit_and_one_at_its_acquirer_counts():
    # Two lanes of a cash-register host refund at once: the second must see the
    # first, still at its acquirer, or both pass a daily limit only one fits.
    gate = asyncio.Event()

    async def scenario(sw):
        bank = sw.acquirers["bank-a"]
        first = asyncio.ensure_future(call(sw, request(stan="000001", pcode="200000", amount="000000100000")))
        await asyncio.wait_for(bank.entered.wait(), 5)
        second = asyncio.ensure_future(call(sw, request(stan="000002", pcode="200000", amount="000000060000")))
        await asyncio.wait({second}, timeout=1.0)
        gate.set()
        assert (await first)[39] == "00"
        assert (await second)[39] == "58"
        assert len(bank.authorized) == 1
        # answered, the first counts from the journal: 50000 more fits, 1 more does not
        assert (await call(sw, request(stan="000003", pcode="200000", amount="000000050000")))[39] == "00"
        assert (await call(sw, request(stan="000004", pcode="200000", amount="000000000001")))[39] == "58"

    run(scenario, acquirers=fakes(**{"bank-a": FakeAcquirer("bank-a", gate=gate)}),
        merchant="currency = \"978\"\nrefund_daily_max = 150000")


def test_a_refund_over_the_daily_limit_is_journaled_58_and_its_retransmission_gets_that_answer():
    async def scenario(sw):
        assert (await call(sw, request(stan="000001", pcode="200000", amount="000000100000")))[39] == "00"
        over = request(stan="000002", pcode="200000", amount="000000060000")
        first, again = await call(sw, over), await call(sw, over)
        assert first[39] == again[39] == "58" and again[37] == first[37]
        refused = await record(sw, "000002")
        assert (refused.state, refused.response_code, refused.host_stan) == (states.REJECTED, "58", None)
        assert len(sw.acquirers["bank-a"].authorized) == 1
        # The refused one holds nothing of the day's limit.
        assert (await call(sw, request(stan="000003", pcode="200000", amount="000000050000")))[39] == "00"

    run(scenario, merchant="currency = \"978\"\nrefund_daily_max = 150000")


def test_a_refund_whose_key_is_renewed_is_counted_against_the_daily_limit_again():
    async def scenario(sw):
        old = request(stan="000001", pcode="200000", amount="000000100000")
        assert (await call(sw, old))[39] == "00"
        later = sw.engine.clock() + 3  # past the retransmission window: the key is new again
        sw.engine.clock = lambda: later
        # 100000 of today already: the same key and content, a new refund, does not fit.
        assert (await call(sw, old))[39] == "58"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario, merchant="currency = \"978\"\nrefund_daily_max = 150000", tweak="retransmission_window = 2.0")


def test_a_key_older_than_the_retransmission_window_is_a_new_request():
    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        now = [sw.engine.clock()]
        sw.engine.clock = lambda: now[0]
        assert (await call(sw, request(amount="000000003000")))[39] == "94"  # within the window
        now[0] += 3601
        fresh = await call(sw, request(amount="000000003000"))
        assert fresh[39] == "00" and len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario, tweak="retransmission_window = 3600.0")


def test_a_mastercard_fallback_reversal_names_the_host_stan_of_the_acquirer_that_had_it():
    async def scenario(sw):
        sw.acquirers["bank-a"].up = False
        assert (await call(sw, request(pan=MASTERCARD)))[39] == "00"
        rec = await record(sw, "000001")
        assert rec.acquirer == "bank-b"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)
        (rev, _), = sw.acquirers["bank-b"].reversed
        assert (rev.original.host_stan, rev.original.host_time) == (rec.host_stan, rec.host_time)

    run(scenario)


def test_requests_in_flight_are_a_gauge_by_kind():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        def in_flight():
            return sw.metrics.registry.get_sample_value("payswitch_requests_in_flight", {"kind": "card"}) or 0.0

        task = asyncio.create_task(call(sw, request()))
        await asyncio.wait_for(bank_a.entered.wait(), 2)
        assert in_flight() == 1.0
        gate.set()
        assert (await task)[39] == "00"
        assert in_flight() == 0.0

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_a_refund_never_answered_before_midnight_counts_against_the_day_it_is_sent_in():
    # Section 6.1, daily refund limit at midnight.  A refund refused 58 at
    # 23:59:59.9 and journaled, but never answered (the switch stopped in
    # between), is handled again when the terminal retransmits it at
    # 00:00:00.2; it goes to the acquirer then, so it must count against that
    # day: a refund after it may not take the new day past its limit.
    midnight = (int(time.time()) // 86400 + 1) * 86400
    now = [midnight - 0.1]

    async def scenario(sw):
        sw.engine.clock = sw.journal._clock = lambda: now[0]  # one clock for the engine and the journal
        assert (await call(sw, request(stan="000001", pcode="200000", amount="000000100000")))[39] == "00"
        late = request(stan="000002", pcode="200000", amount="000000060000")
        assert (await call(sw, late))[39] == "58"  # the day before is full
        refused = await record(sw, "000002")
        await journal(sw, sw.journal.update(refused.id, state=states.RECEIVED, response=None, response_code=None))
        now[0] = midnight + 0.2
        assert (await call(sw, late))[39] == "00"  # never answered: a refund of the new day, which has room
        now[0] = midnight + 0.3
        assert (await call(sw, request(stan="000003", pcode="200000", amount="000000100000")))[39] == "58"
        assert (await call(sw, request(stan="000004", pcode="200000", amount="000000090000")))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 3

    if JOURNAL_WRITER != "thread":
        pytest.skip("the journal's clock is set in this process")
    run(scenario, merchant="currency = \"978\"\nrefund_daily_max = 150000")


def test_a_request_journaled_but_never_sent_is_sent_again_with_the_whole_acquirer_timeout():
    # Section 6: the terminal is answered within response_timeout of its request.  A
    # completion journaled but never sent (the switch stopped in between) is handled again
    # when the terminal retransmits it; its time runs from then, not from when its first
    # copy was journaled (before: 50 ms for the acquirer, so 68 and a reversal).
    async def scenario(sw):
        bank = sw.acquirers["bank-a"]
        assert (await call(sw, request("0100", stan="000001")))[39] == "00"
        completion = request("0220", stan="000002", f90=field90("0100", "000001"))
        assert (await call(sw, completion))[39] == "00"
        rec = await record(sw, "000002")
        await journal(sw, sw.journal.update(rec.id, state=states.RECEIVED, response=None, response_code=None))
        later = sw.engine.clock() + 60  # within the retransmission window, past response_timeout
        sw.engine.clock = lambda: later
        assert (await call(sw, completion))[39] == "00"
        (_, first), (_, again) = bank.authorized[1:]
        assert again == first == 0.3  # the acquirer's whole timeout, both times

    run(scenario)
