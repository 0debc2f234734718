"""A reversal the acquirer refuses for good (0430 39=12, 30, 64...) leaves the queue for an operator.

Before, every answer but 00 and 25 was tried again, doubling the wait up to
reversal_backoff_max, for ever: the backlog alert fired for ever and nobody
was told which payment or why.
"""
from __future__ import annotations

import asyncio
import logging

from switch.core import states
from switch.core.acquirer import RETRY, REVERSED, Refused, Result
from switch.io.status import snapshot
import pytest

from tests.test_edges import Answers, fail_first_answer, run
from tests.test_service import KEY_ENV, FakeAcquirer, call, fakes, reversal, request, sample, settlement, wait_state

FAST = "reversal_backoff_max = 0.1"


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "5e" * 32)


async def settle(sw, seconds=0.5):
    """Let the sweeper run a few more rounds."""
    await asyncio.sleep(seconds)


def test_a_refused_reversal_is_not_retried_and_is_flagged_for_an_operator(caplog):
    bank_a = Answers("bank-a", [Refused("64", "64 (original amount incorrect)")] + [REVERSED] * 5)

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        rec = await wait_state(sw, "000001", states.REVERSAL_REFUSED)
        await settle(sw)
        assert len(bank_a.reversed) == 1  # never repeated: a repeat carries the same content
        assert rec.reversal_attempts == 0
        assert rec.reversal_code == "64"  # the acquirer's code, in the journal after the logs rotate
        # Out of the backlog (its alert clears), counted apart, and on /status.
        assert sample(sw, "payswitch_reversal_queue") == 0
        assert sample(sw, "payswitch_reversal_oldest_timestamp_seconds") == 0
        assert sample(sw, "payswitch_reversals_refused") == 1
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="refused") == 1
        doc = snapshot(sw.metrics, {"ready": True, "reasons": [], "journal": {"ok": True}, "acquirers": {}})
        assert doc["reversals"]["queue"] == 0 and doc["reversals"]["refused"] == 1
        # The terminal was told it is undone: it counts in no settlement totals.
        assert (await call(sw, settlement("000003")))[39] == "00"
        return rec

    with caplog.at_level(logging.ERROR, logger="payswitch"):
        rec = run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)
    [line] = [r for r in caplog.records if "refused its reversal" in r.getMessage()]
    assert line.levelno == logging.ERROR
    text = line.getMessage()
    assert rec.rrn in text and "64 (original amount incorrect)" in text and "runbook" in text


def test_a_transient_answer_is_still_retried_until_reversed():
    bank_a = Answers("bank-a", [RETRY, RETRY, REVERSED])

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)
        assert [r.attempt for r, _ in bank_a.reversed] == [0, 1, 2]
        assert sample(sw, "payswitch_reversals_refused") == 0

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)


def test_a_refused_reversal_is_still_refused_after_a_restart_and_a_new_0400_does_not_requeue_it(tmp_path):
    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    first = Answers("bank-a", [Refused("12", "12 (invalid transaction)")])

    async def refuse(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSAL_REFUSED)

    run(refuse, acquirers=fakes(**{"bank-a": first}), tweak=FAST, journal_url=url)
    second = Answers("bank-a", [])

    async def after(sw):
        await settle(sw)
        # Start-up recovery leaves it alone; the sender counts it from the journal.
        assert sample(sw, "payswitch_reversals_refused") == 1
        assert sample(sw, "payswitch_reversal_queue") == 0
        # The terminal repeats its 0400 under a new STAN: answered 00, nothing queued.
        assert (await call(sw, reversal("000003", "000001")))[39] == "00"
        await settle(sw)
        assert second.reversed == []
        rec = await wait_state(sw, "000001", states.REVERSAL_REFUSED)
        assert (rec.state, rec.reversal_code) == (states.REVERSAL_REFUSED, "12")

    run(after, acquirers=fakes(**{"bank-a": second}), tweak=FAST, journal_url=url)


# -- what the reversal names its original by (a strict host matches on 38 and 37) -------


def test_the_reversal_of_an_approval_the_journal_could_not_take_carries_its_auth_code_and_ref():
    async def scenario(sw):
        fail_first_answer(sw)
        assert (await call(sw, request()))[39] == "96"
        rec = await wait_state(sw, "000001", states.REVERSED)
        [(rev, _)] = sw.acquirers["bank-a"].reversed
        assert (rev.original.auth_code, rev.original.acquirer_ref) == ("A00001", "bank-a-ref-1")
        assert (rec.auth_code, rec.acquirer_ref) == ("A00001", "bank-a-ref-1")

    run(scenario)


def test_the_auth_code_of_a_late_approval_goes_with_the_repeats_of_its_reversal():
    bank_a = Answers("bank-a", [RETRY, RETRY, REVERSED], answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.REVERSAL_PENDING)
        late = sw.engine.reversals.late_auth_code
        assert not await sw.run(late("bank-b", rec.host_stan, rec.host_time, "LATE01"))  # another acquirer's
        assert not await sw.run(late("bank-a", rec.host_stan, rec.host_time, "TOO LONG"))  # not an an6 field 38
        sw._late_auth_code("bank-a", rec.host_stan, rec.host_time, "LATE01")  # as the card link calls it
        rec = await wait_state(sw, "000001", states.REVERSED)
        assert rec.auth_code == "LATE01"
        assert bank_a.reversed[-1][0].original.auth_code == "LATE01"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)


# -- a refused amount the switch never knew (its original's answer came late) -------------

AMOUNT = "64 (original amount incorrect)"


def test_a_reversal_refused_for_an_amount_never_answered_waits_for_the_late_answer_that_tells_it():
    # The acquirer approved part of a purchase the switch gave up on (68): a strict host
    # refuses the reversal of the amount requested.  Before, that was refused for good and
    # the part approved stayed held; now it is repeated within the window, and the late
    # answer's amount (in its acquirer_ref) goes with the repeats.
    bank_a = Answers("bank-a", [Refused("64", AMOUNT, held_unknown=True)] * 3 + [REVERSED], answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.REVERSAL_PENDING)
        while len(bank_a.reversed) < 2:
            await asyncio.sleep(0.01)
        held = f"{rec.host_stan}|{rec.host_time}|HOST00000001|10|1250"
        sw._late_auth_code("bank-a", rec.host_stan, rec.host_time, "LATE01", held)  # as the card link calls it
        rec = await wait_state(sw, "000001", states.REVERSED)
        assert (rec.auth_code, rec.acquirer_ref) == ("LATE01", held)
        assert bank_a.reversed[-1][0].original.acquirer_ref == held
        assert bank_a.reversed[-1][0].original.auth_code == "LATE01"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)


def test_a_refused_amount_no_late_answer_explains_is_refused_for_good_after_the_window():
    bank_a = Answers("bank-a", [Refused("64", AMOUNT, held_unknown=True)] * 50, answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.REVERSAL_REFUSED, timeout=5)
        assert len(bank_a.reversed) >= 2 and rec.reversal_code == "64"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}),
        tweak="reversal_not_found_window = 0.3\nreversal_backoff_max = 0.1")


class AnsweredLateAsItGaveUp(FakeAcquirer):
    """Times out, and its answer comes in the very moment the switch gives up: before the
    switch has journaled the 68 and queued the reversal."""

    def __init__(self, name, ref):
        super().__init__(name)
        self.sw = None
        self.ref = ref

    async def authorize(self, request, timeout):
        self.authorized.append((request, timeout))
        ref = self.ref.format(stan=request.host_stan, f7=request.host_time)
        self.sw._late_auth_code(self.name, request.host_stan, request.host_time, "LATE01", ref)
        await asyncio.gather(*self.sw._late_tasks)  # the link has told the switch all it knows
        return Result(response_code="68", uncertain=True, acquirer_ref=f"{request.host_stan}|{request.host_time}|x")


def test_a_late_answer_that_comes_before_the_reversal_is_queued_still_goes_with_it():
    bank_a = AnsweredLateAsItGaveUp("bank-a", "{stan}|{f7}|HOST00000001|10|1250")

    async def scenario(sw):
        bank_a.sw = sw
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.REVERSED)
        assert (rec.auth_code, rec.acquirer_ref) == ("LATE01", f"{rec.host_stan}|{rec.host_time}|HOST00000001|10|1250")
        assert bank_a.reversed[0][0].original.auth_code == "LATE01"
        assert bank_a.reversed[0][0].original.acquirer_ref == rec.acquirer_ref

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)
