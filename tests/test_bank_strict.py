"""A strict bank acquirer on the ISO 8583 host link: what its answers may and may not do.

Nothing is lost or charged twice: an answer the switch cannot take as the
acquirer's word on the request it sent is never an approval to the
terminal, and whatever the acquirer may hold is reversed, by what it holds.
"""
from __future__ import annotations

from adapters.card.hostlink import Completed, HostConnection, SignedOn, Late, Unmatched, fields_view, parse_ref, reversal_fields
from switch.core.acquirer import RETRY, REVERSED, Original

from tests.test_card_hostlink import ACQ, WALL, answer_to, make_request, make_reversal, ready_connection


def sent_and_answered(conn, req=None, clock=1.0, **fields):
    msg, pending = conn.request(req or make_request(), now=clock, wall=WALL, timeout=10.0)
    return msg, conn.receive(answer_to(msg, **fields), clock + 0.1)


def reversal_of(result, req=None) -> dict:
    """The 0420 the switch sends for ``result`` (journaled as the engine does: the terminal's amount
    and currency, the acquirer's references)."""
    req = req or make_request()
    original = Original(txn_id=1, mti=req.mti, processing_code=req.processing_code, amount=req.amount,
                        currency=req.currency, stan=req.stan, transmission_time=req.transmission_time,
                        rrn=req.rrn, auth_code=result.auth_code, acquirer_ref=result.acquirer_ref,
                        host_stan="000321", host_time="1114221320")
    return reversal_fields(make_reversal(original), stan="000400", f7="1114221400", acquirer_id=ACQ)


# -- 1. an approval in another currency or of another amount ------------------------------

def test_an_approval_in_another_currency_is_answered_96_and_reversed_in_the_hosts_currency():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f49="978")
    result = done.outcome
    assert (result.response_code, result.uncertain) == ("96", True)
    rev = reversal_of(result)
    assert (rev[4], rev[49], rev[38]) == ("000000001000", "978", "AB12CD")


def test_an_approval_of_another_amount_and_currency_is_reversed_for_what_the_host_holds():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f4="000000000700", f49="978")
    result = done.outcome
    assert (result.response_code, result.uncertain) == ("96", True)
    ref = parse_ref(result.acquirer_ref)
    assert (ref.approved, ref.currency) == (700, "978")
    rev = reversal_of(result)
    assert (rev[4], rev[49]) == ("000000000700", "978")


def test_a_full_approval_of_less_than_requested_is_a_96_not_a_decline():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f4="000000000999")
    assert (done.outcome.response_code, done.outcome.uncertain) == ("96", True)
    rev = reversal_of(done.outcome)
    assert (rev[4], rev[49]) == ("000000000999", "840")


def test_an_approval_in_the_currency_sent_is_an_approval():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f49="840")
    assert (done.outcome.response_code, done.outcome.uncertain) == ("00", False)



def test_a_late_approval_in_another_currency_tells_the_reversal_the_currency_held():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    conn.poll(2.5, WALL)
    [late] = conn.receive(answer_to(msg, f39="00", f38="LATE01", f49="978"), 3.0)
    assert type(late) is Late and late.approved
    ref = parse_ref(late.acquirer_ref)
    assert (ref.approved, ref.currency) == (1000, "978")

# -- 2. an answer to a request given up on (deadline passed, connection cut) --------------

def next_connection(first: HostConnection) -> HostConnection:
    """The link's next connection after ``first``: the link's STANs, and what the link gave up on."""
    conn = HostConnection(first.stans, acquirer_id=ACQ, given_up=first.given_up)
    sign_on = conn.connection_made(5.0, WALL)
    assert conn.receive(answer_to(sign_on, f39="00"), 5.0) == [SignedOn()]
    return conn


def test_an_approval_to_a_request_whose_connection_was_cut_goes_to_its_reversal_on_the_next_connection():
    first = ready_connection()
    msg, _ = first.request(make_request(), now=1.0, wall=WALL, timeout=10.0)
    [lost] = first.connection_lost()
    assert (lost.outcome.response_code, lost.outcome.uncertain) == ("91", True)
    # The link's next connection shares the link's STANs and what the link gave up on.
    second = next_connection(first)
    [late] = second.receive(answer_to(msg, f39="00", f38="LATE01"), 2.0)
    assert type(late) is Late
    assert (late.stan, late.f7, late.response_code, late.auth_code) == (msg[11], msg[7], "00", "LATE01")


def test_an_approval_after_the_deadline_on_a_new_connection_is_late_not_stray():
    first = ready_connection()
    msg, _ = first.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    [timed_out] = [e for e in first.poll(2.5, WALL) if type(e) is Completed]
    assert timed_out.outcome.response_code == "68"
    first.connection_lost()
    second = next_connection(first)
    [late] = second.receive(answer_to(msg, f39="00", f38="LATE01", f4="000000000700"), 3.0)
    assert type(late) is Late and late.auth_code == "LATE01"
    assert parse_ref(late.acquirer_ref).approved == 700
    # A second answer to it is stray.
    [again] = second.receive(answer_to(msg, f39="00", f38="LATE01"), 3.1)
    assert type(again) is Unmatched


def test_a_late_decline_is_late_and_names_no_amount_held():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    conn.poll(2.5, WALL)
    [late] = conn.receive(answer_to(msg, f39="05"), 3.0)
    assert type(late) is Late and (late.response_code, late.acquirer_ref) == ("05", None)


# -- 3. what answers a request: 7, 41, 42 and the transaction type of field 3 -------------

def without(view, *fields):
    return fields_view({"mti": view.mti, **{k: v for k, v in view.fields().items() if k not in fields}})


def test_an_answer_without_field_7_is_matched_by_the_field_7_sent():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=10.0)
    [done] = conn.receive(without(answer_to(msg, f39="00", f38="AB12CD"), 7), 1.1)
    assert type(done) is Completed and done.outcome.response_code == "00"
    assert parse_ref(done.outcome.acquirer_ref).f7 == msg[7]


def test_a_late_answer_without_field_7_is_late_with_the_field_7_sent():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    conn.poll(2.5, WALL)
    [late] = conn.receive(without(answer_to(msg, f39="00", f38="LATE01"), 7), 3.0)
    assert type(late) is Late and late.f7 == msg[7]


import pytest  # noqa: E402


@pytest.mark.parametrize("field, value", [
    (7, "1114221399"), (41, "OTHER001"), (42, "OTHER0000000001"), (3, "200000"),
])
def test_an_answer_naming_another_request_is_unmatched_and_the_request_still_times_out(field, value):
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    [stray] = conn.receive(answer_to(msg, f39="00", f38="AB12CD", **{f"f{field}": value}), 1.1)
    assert type(stray) is Unmatched
    assert conn.metrics.get("unmatched_answers", mti="0210") == 1
    [timed_out] = [e for e in conn.poll(2.5, WALL) if type(e) is Completed]
    assert (timed_out.outcome.response_code, timed_out.outcome.uncertain) == ("68", True)


@pytest.mark.parametrize("field, value", [(41, "OTHER001"), (42, "OTHER0000000001"), (3, "200000")])
def test_a_late_answer_naming_another_request_is_unmatched(field, value):
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    conn.poll(2.5, WALL)
    [stray] = conn.receive(answer_to(msg, f39="00", f38="AB12CD", **{f"f{field}": value}), 3.0)
    assert type(stray) is Unmatched
    # The answer that does fit is still taken as late.
    [late] = conn.receive(answer_to(msg, f39="00", f38="AB12CD"), 3.1)
    assert type(late) is Late


def test_the_same_transaction_type_with_another_account_is_still_the_answer():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=10.0)
    [done] = conn.receive(answer_to(msg, f39="00", f38="AB12CD", f3="002000"), 1.1)
    assert type(done) is Completed and done.outcome.response_code == "00"


# -- 5. a late answer with a missing or wrong MAC ------------------------------------------

def test_a_late_answer_with_a_wrong_mac_changes_nothing():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    conn.poll(2.5, WALL)
    forged = answer_to(msg, f39="00", f38="FORGED", f4="000000000001")
    [event] = conn.receive(forged, 3.0, authentic=False)
    assert type(event) is not Late  # nothing for the reversal: not its 38, not an amount held
    assert conn.metrics.get("mac_failures", mti="0210") == 1
    # The acquirer's own answer, MACed, is still taken as the late answer.
    [late] = conn.receive(answer_to(msg, f39="00", f38="LATE01"), 3.1)
    assert type(late) is Late and late.auth_code == "LATE01"


# -- 6. 94 (duplicate transmission) to an 0420 ---------------------------------------------

def original_approved() -> Original:
    req = make_request()
    return Original(txn_id=1, mti=req.mti, processing_code=req.processing_code, amount=req.amount,
                    currency=req.currency, stan=req.stan, transmission_time=req.transmission_time,
                    rrn=req.rrn, auth_code="AB12CD", host_stan="000321", host_time="1114221320")


def test_a_94_to_an_0420_is_repeated_as_an_0421():
    conn = ready_connection()
    msg, _ = conn.reversal(make_reversal(original_approved()), now=1.0, wall=WALL, timeout=10.0)
    assert msg["mti"] == "0420"
    [done] = conn.receive(answer_to(msg, f39="94"), 1.1)
    assert done.outcome == RETRY  # not done, not refused: the switch repeats it
    repeat, _ = conn.reversal(make_reversal(original_approved(), attempt=1), now=2.0, wall=WALL, timeout=10.0)
    assert repeat["mti"] == "0421"
    [done] = conn.receive(answer_to(repeat, f39="00"), 2.1)
    assert done.outcome == REVERSED


# -- 4. a late approval for a reversal already unmatched ------------------------------------

import asyncio  # noqa: E402

from switch.core import states  # noqa: E402
from switch.core.acquirer import NOT_FOUND  # noqa: E402
from tests.test_edges import Answers, run  # noqa: E402
from tests.test_service import KEY_ENV, VISA, call, fakes, request  # noqa: E402
from tests.test_service import wait_state  # noqa: E402

WINDOW = "reversal_not_found_window = 0.3\nreversal_backoff_max = 0.1"


@pytest.fixture
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "5e" * 32)


def test_a_late_approval_reopens_a_reversal_recorded_unmatched(hmac_key):
    bank_a = Answers("bank-a", [NOT_FOUND] * 20 + [REVERSED] * 5, answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.UNMATCHED, timeout=5)
        tries = len(bank_a.reversed)
        bank_a.outcomes = [REVERSED]
        sw._late_auth_code("bank-a", rec.host_stan, rec.host_time, "LATE01", None, True)  # as the card link does
        rec = await wait_state(sw, "000001", states.REVERSED, timeout=5)
        assert len(bank_a.reversed) == tries + 1
        assert bank_a.reversed[-1][0].original.auth_code == "LATE01"
        assert bank_a.reversed[-1][0].original.pan == VISA  # field 2, as every try of it had

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=WINDOW)


def test_a_late_decline_leaves_an_unmatched_reversal_as_it_is(hmac_key):
    bank_a = Answers("bank-a", [NOT_FOUND] * 50, answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        rec = await wait_state(sw, "000001", states.UNMATCHED, timeout=5)
        tries = len(bank_a.reversed)
        sw._late_auth_code("bank-a", rec.host_stan, rec.host_time, None, None, False)
        await asyncio.sleep(0.3)
        rec = await wait_state(sw, "000001", states.UNMATCHED)
        assert len(bank_a.reversed) == tries

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=WINDOW)


def test_a_late_approval_reopens_an_unmatched_reversal_after_a_restart(hmac_key, tmp_path):
    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    first = Answers("bank-a", [NOT_FOUND] * 50, answer="timeout")
    found = {}

    async def unmatched(sw):
        assert (await call(sw, request()))[39] == "68"
        found["rec"] = await wait_state(sw, "000001", states.UNMATCHED, timeout=5)

    run(unmatched, acquirers=fakes(**{"bank-a": first}), tweak=WINDOW, journal_url=url)
    second = Answers("bank-a", [REVERSED])

    async def restarted(sw):
        rec = found["rec"]
        sw._late_auth_code("bank-a", rec.host_stan, rec.host_time, "LATE01", None, True)
        await wait_state(sw, "000001", states.REVERSED, timeout=5)
        [(rev, _)] = second.reversed
        assert rev.original.auth_code == "LATE01" and rev.attempt > 0  # the same reversal, repeated
        assert rev.original.pan == VISA  # field 2 again: the journal kept its card sealed while unmatched

    run(restarted, acquirers=fakes(**{"bank-a": second}), tweak=WINDOW, journal_url=url)


# -- 7. a pending reversal for an acquirer no longer configured ------------------------------

import logging  # noqa: E402

from switch.core.acquirer import RETRY as _RETRY  # noqa: E402
from tests.test_service import sample  # noqa: E402


def test_a_reversal_for_an_acquirer_no_longer_configured_is_logged_once_and_counted(hmac_key, caplog):
    bank_a = Answers("bank-a", [_RETRY] * 1000, answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        await wait_state(sw, "000001", states.REVERSAL_PENDING)
        # As after a restart with bank-a taken out of the configuration.
        del sw.engine.acquirer_cfg["bank-a"]
        sent = len(bank_a.reversed)
        with caplog.at_level(logging.ERROR, logger="payswitch"):
            await asyncio.sleep(0.6)  # several sweeps
        said = [r for r in caplog.records if "no longer configured" in r.getMessage()]
        assert len(said) == 1 and "bank-a" in said[0].getMessage() and "runbook" in said[0].getMessage()
        assert sample(sw, "payswitch_reversals_unconfigured") == 1
        assert len(bank_a.reversed) == sent
        await wait_state(sw, "000001", states.REVERSAL_PENDING)  # kept, for when it comes back

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak="reversal_backoff_max = 0.1")
