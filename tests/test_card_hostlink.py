"""Sans-I/O core of the card host link: mapping, field 90, STANs, deadlines, sign-on/echo."""

import pytest

from adapters.card.hostlink import (
    Close,
    Completed,
    HostConnection,
    Late,
    LinkMetrics,
    Send,
    SignedOn,
    StanAllocator,
    State,
    Unmatched,
    acquirer_ref,
    answers,
    fields_view,
    mask_pan,
    original_data,
    parse_ref,
    request_fields,
    reversal_fields,
    scrub,
    transmission_time,
)
from switch.core.acquirer import NOT_FOUND, REFUSED, RETRY, REVERSED, Original, Refused, Request, Result
from switch.core.messages import response_mti

ACQ = "12345678901"
WALL = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
F7 = "1114221320"


def make_request(**kw) -> Request:
    base = dict(
        txn_id=1, kind="card", mti="0200", processing_code="000000", amount=1000,
        currency="840", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
        stan="000042", transmission_time="1114221300", rrn="331822000001",
        local_time="221300", local_date="1114", pan="4111111111111111",
        expiry="2812", entry_mode="051", pos_condition="00",
    )
    base.update(kw)
    return Request(**base)


def make_reversal(original: Original, **kw) -> Request:
    return make_request(mti="0400", rrn="331822000002", original=original, pin_block=None, **kw)


def answer_to(msg: dict, **fields) -> object:
    out = {"mti": response_mti(msg["mti"], keep_origin=True)}
    for f in (3, 4, 7, 11, 32, 37, 41, 42, 49, 70):
        if f in msg:
            out[f] = msg[f]
    out.update({int(k[1:]): v for k, v in fields.items()})
    return fields_view(out)


def ready_connection(clock=0.0, **kw) -> HostConnection:
    conn = HostConnection(StanAllocator(), acquirer_id=ACQ, echo_interval=30.0,
                          network_timeout=5.0, **kw)
    sign_on = conn.connection_made(clock, WALL)
    assert conn.receive(answer_to(sign_on, f39="00"), clock) == [SignedOn()]
    assert conn.state is State.READY
    return conn


# -- formats ----------------------------------------------------------------

def test_transmission_time_is_utc_mmddhhmmss():
    assert transmission_time(WALL) == F7


def test_answers_to_a_request_and_to_its_repeat():
    assert [answers(m) for m in ("0100", "0200", "0220", "0400", "0420", "0800")] == [
        ("0110",), ("0210",), ("0230",), ("0410",), ("0430",), ("0810",)]
    assert answers("0421") == ("0431", "0430")
    assert answers("0201") == ("0211", "0210")


def test_mask_pan_and_scrub():
    assert mask_pan("4111111111111111") == "411111******1111"
    assert mask_pan("") == ""
    assert scrub("field 2 value 4111111111111111 too long") == "field 2 value 411111******1111 too long"
    # Runs of 12 digits keep only their last 4, as every number under 13 digits does.
    assert scrub("STAN 000042 value 123456789012") == "STAN 000042 value ********9012"


def test_acquirer_ref_round_trip():
    ref = acquirer_ref("000123", F7, "331822000001")
    assert ref == "000123|1114221320|331822000001"
    parsed = parse_ref(ref)
    assert (parsed.stan, parsed.f7, parsed.rrn) == ("000123", F7, "331822000001")
    for bad in (None, "", "x", "12|1114221320|r", "000123|11142213|r", "a|b|c|d"):
        assert parse_ref(bad) is None


# -- Request -> host message ----------------------------------------------------

def test_request_fields_full():
    req = make_request(track2="4111111111111111=2812101", pin_block=b"\x01" * 8, icc=b"\x9f\x02\x01\x00")
    m = request_fields(req, stan="000007", f7=F7, acquirer_id=ACQ)
    assert m == {
        "mti": "0200", 2: "4111111111111111", 3: "000000", 4: "000000001000", 7: F7, 11: "000007",
        12: "221300", 13: "1114", 14: "2812", 22: "051", 25: "00", 32: ACQ,
        35: "4111111111111111=2812101", 37: "331822000001", 41: "DEMO0001", 42: "DEMO00000000001",
        49: "840", 52: b"\x01" * 8, 55: b"\x9f\x02\x01\x00",
    }


def test_request_fields_only_what_is_present():
    req = make_request(mti="0100", pan=None, expiry=None, local_time=None, local_date=None,
                       pos_condition=None, currency=None, amount=None,
                       track2="4111111111111111=2812101")
    m = request_fields(req, stan="000007", f7=F7, acquirer_id=ACQ)
    assert sorted(k for k in m if k != "mti") == [3, 7, 11, 22, 32, 35, 37, 41, 42]
    assert m["mti"] == "0100"


def test_completion_names_its_preauthorization():
    pre = Original(txn_id=9, mti="0100", processing_code="000000", amount=5000, currency="840",
                   stan="000010", transmission_time="1114210000", rrn="331822000009",
                   auth_code="A1B2C3", acquirer_ref="000555|1114210001|331822000009")
    m = request_fields(make_request(mti="0220", original=pre), stan="000008", f7=F7, acquirer_id=ACQ)
    assert m[90] == "0100" + "000555" + "1114210001" + ACQ + "0" * 11
    assert m[38] == "A1B2C3"
    assert m[4] == "000000001000"  # the final amount


# -- field 90 / reversal ----------------------------------------------------------

def original(**kw) -> Original:
    base = dict(txn_id=1, mti="0200", processing_code="000000", amount=1068, currency="840",
                stan="000042", transmission_time="1114221300", rrn="331822000001",
                acquirer_ref="000777|1114221301|331822000001")
    base.update(kw)
    return Original(**base)


def test_field_90_uses_acquirer_side_stan_and_f7():
    f90 = original_data(original(), "1234")
    assert f90 == "0200" "000777" "1114221301" "00000001234" "00000000000"
    assert len(f90) == 42


def test_field_90_without_acquirer_ref_names_no_stan_and_never_the_terminals():
    f90 = original_data(original(acquirer_ref=None), ACQ)
    assert f90 == "0200" "000000" "0000000000" + ACQ + "0" * 11
    assert "000042" not in f90 and "1114221300" not in f90  # the terminal-side STAN and field 7


def test_reversal_fields_are_the_same_on_every_retry():
    rev = make_reversal(original())
    a = reversal_fields(rev, stan="000100", f7=F7, acquirer_id=ACQ)
    b = reversal_fields(rev, stan="000101", f7="1114221400", acquirer_id=ACQ)
    assert a["mti"] == "0420"
    assert a[90] == "0200000777111422130112345678901" + "0" * 11
    assert a[4] == "000000001068" and a[3] == "000000" and a[49] == "840"
    assert a[37] == "331822000001"
    assert 52 not in a and 35 not in a and 55 not in a
    same = {k: v for k, v in a.items() if k not in (7, 11)}
    assert same == {k: v for k, v in b.items() if k not in (7, 11)}


def test_reversal_needs_an_original():
    with pytest.raises(ValueError):
        reversal_fields(make_request(mti="0400"), stan="000001", f7=F7, acquirer_id=ACQ)


# -- STAN allocation ------------------------------------------------------------

def test_stan_allocation_sequence_and_wrap():
    stans = StanAllocator(start=999_998)
    assert [stans.allocate() for _ in range(3)] == ["999998", "999999", "000001"]


def test_stan_never_reused_while_in_flight():
    stans = StanAllocator(start=999_999)
    held = stans.allocate()  # 999999 stays in flight
    first = stans.allocate()
    assert first == "000001"
    stans.release(first)
    for _ in range(999_997):
        stans.release(stans.allocate())
    # the allocator has wrapped to 999999 again: still in flight, so it is skipped
    assert stans.allocate() == "000001"
    assert held == "999999" and stans.in_use("999999")


def test_stan_allocator_all_in_flight():
    stans = StanAllocator()
    stans._in_use = {f"{n:06d}" for n in range(1, 1_000_000)}
    with pytest.raises(RuntimeError):
        stans.allocate()


def test_stan_shared_by_connections():
    stans = StanAllocator()
    a = HostConnection(stans, acquirer_id=ACQ)
    b = HostConnection(stans, acquirer_id=ACQ)
    sa = a.connection_made(0.0, WALL)[11]
    sb = b.connection_made(0.0, WALL)[11]
    assert sa != sb


# -- sign-on, requests, answers ------------------------------------------------------

def test_sign_on_state_machine():
    conn = HostConnection(StanAllocator(), acquirer_id=ACQ, network_timeout=5.0)
    assert conn.state is State.CONNECTING
    msg = conn.connection_made(0.0, WALL)
    assert msg == {"mti": "0800", 7: F7, 11: "000001", 70: "001"}
    assert conn.state is State.SIGNING_ON and not conn.ready
    with pytest.raises(RuntimeError):
        conn.request(make_request(), now=0.0, wall=WALL, timeout=1.0)
    assert conn.receive(answer_to(msg, f39="00"), 0.1) == [SignedOn()]
    assert conn.ready
    assert len(conn.stans) == 0


def test_sign_on_refused_closes():
    metrics = LinkMetrics()
    conn = HostConnection(StanAllocator(), acquirer_id=ACQ, metrics=metrics, endpoint="a")
    msg = conn.connection_made(0.0, WALL)
    events = conn.receive(answer_to(msg, f39="91"), 0.1)
    assert events == [Close("sign-on refused with 39=91")]
    assert metrics.get("sign_on_failures", endpoint="a") == 1


def test_sign_on_unanswered_closes():
    conn = HostConnection(StanAllocator(), acquirer_id=ACQ, network_timeout=5.0)
    conn.connection_made(0.0, WALL)
    assert conn.next_wakeup() == 5.0
    assert conn.poll(4.9, WALL) == []
    assert conn.poll(5.0, WALL) == [Close("sign-on unanswered")]


def test_request_answered():
    metrics = LinkMetrics()
    conn = ready_connection(metrics=metrics)
    msg, pending = conn.request(make_request(icc=b"\x9f\x26"), now=1.0, wall=WALL, timeout=2.0, token="t")
    assert msg["mti"] == "0200" and msg[11] == "000002" and msg[7] == F7 and msg[32] == ACQ
    assert pending.deadline == 3.0 and pending.token == "t"
    events = conn.receive(answer_to(msg, f38="AB12CD", f39="00", f55=b"\x91\x00"), 1.5)
    assert len(events) == 1 and isinstance(events[0], Completed)
    assert events[0].pending is pending
    assert events[0].outcome == Result(response_code="00", auth_code="AB12CD",
                                       acquirer_ref="000002|1114221320|331822000001",
                                       icc=b"\x91\x00")
    assert len(conn.inflight) == 0 and len(conn.stans) == 0
    assert metrics.get("requests", mti="0200", response_code="00") == 1


@pytest.mark.parametrize("rc", ["05", "13", "51", "55", "96"])
def test_request_declined(rc):
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    [done] = conn.receive(answer_to(msg, f39=rc), 0.5)
    assert done.outcome.response_code == rc and not done.outcome.uncertain
    assert done.outcome.auth_code is None


def test_answer_keeps_the_acquirers_rrn():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    [done] = conn.receive(answer_to(msg, f37="999999999999", f39="00"), 0.5)
    assert done.outcome.acquirer_ref.endswith("|999999999999")


def test_answer_without_39_is_uncertain():
    conn = ready_connection()
    msg, _ = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    [done] = conn.receive(answer_to(msg), 0.5)
    assert done.outcome.uncertain and done.outcome.response_code == "96"


def test_answers_out_of_order_match_by_stan():
    conn = ready_connection()
    sent = [conn.request(make_request(rrn=f"{i:012d}"), now=0.0, wall=WALL, timeout=2.0, token=i)
            for i in range(50)]
    for msg, pending in reversed(sent):
        [done] = conn.receive(answer_to(msg, f39="00"), 0.1)
        assert done.pending is pending
        assert done.outcome.acquirer_ref.endswith(f"|{pending.token:012d}")
    assert len(conn.inflight) == 0


@pytest.mark.parametrize("change,reason", [
    ({"mti": "0410"}, "answer MTI does not fit the request 0200"),
    ({41: "OTHER001"}, "field 41 does not match the request"),
    ({7: "0101000000"}, "field 7 does not match the request"),
    ({11: "123456"}, "no request in flight with this STAN"),
    ({42: "OTHER0000000001"}, "field 42 does not match the request"),
    ({3: "200000"}, "field 3 names another transaction type than the request's"),
])
def test_mismatched_answers_are_not_matched(change, reason):
    conn = ready_connection()
    msg, pending = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    ans = {"mti": "0210", 7: msg[7], 11: msg[11], 41: msg[41], 39: "00"}
    ans.update(change)
    [event] = conn.receive(fields_view(ans), 0.5)
    assert isinstance(event, Unmatched) and event.reason == reason
    assert msg[11] in conn.inflight


@pytest.mark.parametrize("change", [{41: "DEMO0001  "}, {42: "DEMO00000000001 "}, {3: "003000"}, {3: "000000"}])
def test_answers_repeating_fields_padded_or_with_other_account_types_are_matched(change):
    conn = ready_connection()
    msg, pending = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    ans = {"mti": "0210", 7: msg[7], 11: msg[11], 41: msg[41], 42: msg[42], 39: "00"}
    ans.update(change)
    [event] = conn.receive(fields_view(ans), 0.5)
    assert isinstance(event, Completed) and event.pending is pending


# -- deadlines (fake clock) ------------------------------------------------------

def test_deadline_gives_68_uncertain_then_late_answer_dropped():
    metrics = LinkMetrics()
    conn = ready_connection(metrics=metrics)
    msg, pending = conn.request(make_request(), now=10.0, wall=WALL, timeout=1.5)
    assert conn.next_wakeup() == 11.5
    assert conn.poll(11.49, WALL) == []
    [done] = conn.poll(11.5, WALL)
    assert done.pending is pending
    assert done.outcome == Result(response_code="68", acquirer_ref="000002|1114221320|331822000001",
                                  uncertain=True)
    assert len(conn.stans) == 0
    assert metrics.get("timeouts", mti="0200") == 1
    # the answer arrives after the deadline: reported late, counted, dropped
    # (with its field 7 and 38: the switch keeps the auth code for the reversal it queued)
    assert conn.receive(answer_to(msg, f39="00", f38="AB12CD"), 12.0) == [
        Late("0210", msg[11], "00", msg[7], "AB12CD", approved=True)]
    assert metrics.get("late_answers", mti="0200") == 1
    # a second copy is no longer "late", just unmatched
    assert isinstance(conn.receive(answer_to(msg, f39="00"), 12.1)[0], Unmatched)


def test_deadlines_expire_in_order_and_answered_ones_do_not():
    conn = ready_connection()
    a, pa = conn.request(make_request(), now=0.0, wall=WALL, timeout=3.0, token="a")
    b, pb = conn.request(make_request(), now=0.0, wall=WALL, timeout=1.0, token="b")
    c, pc = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0, token="c")
    conn.receive(answer_to(b, f39="00"), 0.5)
    assert conn.next_wakeup() == 2.0
    assert [e.pending.token for e in conn.poll(5.0, WALL)] == ["c", "a"]
    assert conn.next_wakeup() is not None  # only the echo is left
    assert len(conn.inflight) == 0


def test_cancel_releases_the_stan():
    conn = ready_connection()
    _, pending = conn.request(make_request(), now=0.0, wall=WALL, timeout=1.0)
    conn.cancel(pending)
    assert len(conn.inflight) == 0 and len(conn.stans) == 0
    assert conn.poll(5.0, WALL) == []


def test_connection_lost_makes_requests_uncertain_91():
    metrics = LinkMetrics()
    conn = ready_connection(metrics=metrics)
    _, p1 = conn.request(make_request(), now=0.0, wall=WALL, timeout=5.0)
    _, p2 = conn.reversal(make_reversal(original()), now=0.0, wall=WALL, timeout=5.0)
    events = conn.connection_lost()
    outcomes = {e.pending.kind.value: e.outcome for e in events}
    assert outcomes["request"].response_code == "91" and outcomes["request"].uncertain
    assert outcomes["request"].acquirer_ref == p1.ref
    assert outcomes["reversal"] == RETRY
    assert {e.how for e in events} == {"lost"}
    assert conn.state is State.CLOSED and len(conn.stans) == 0
    assert metrics.get("lost_in_flight", mti="0200") == 1


# -- reversal -------------------------------------------------------------------

@pytest.mark.parametrize("rc,outcome", [("00", REVERSED), ("25", NOT_FOUND), ("96", RETRY),
                                        ("91", RETRY), ("68", RETRY), ("09", RETRY), ("X7", RETRY),
                                        (None, RETRY), ("12", REFUSED), ("13", REFUSED), ("14", REFUSED),
                                        ("30", REFUSED), ("64", REFUSED)])
def test_reversal_outcome(rc, outcome):
    """A refusal no repeat can change ends the retries (Refused, with the host's code);
    a transient, unknown or missing code is tried again."""
    metrics = LinkMetrics()
    conn = ready_connection(metrics=metrics)
    msg, _ = conn.reversal(make_reversal(original()), now=0.0, wall=WALL, timeout=1.0)
    assert msg["mti"] == "0420"
    [event] = conn.receive(answer_to(msg, **({"f39": rc} if rc else {})), 0.1)
    assert event.outcome == outcome and event.how == "answered"
    assert isinstance(event.outcome, Refused) == (outcome == REFUSED)
    if outcome == REFUSED:
        assert event.outcome.code == rc and rc in event.outcome.reason
    assert metrics.get("reversals", mti="0420", response_code=rc or "none") == 1


@pytest.mark.parametrize("known, rc, held_unknown", [
    ({}, "64", True), ({}, "13", True), ({}, "12", False), ({}, "30", False),
    ({"auth_code": "AB12CD"}, "64", False),  # the answer came: the amount it approved is known
    ({"acquirer_ref": "000777|1114221301|331822000001|10|534"}, "64", False),
])
def test_a_refused_amount_is_held_unknown_only_when_no_answer_told_the_amount(known, rc, held_unknown):
    """A strict host refuses a reversal of another amount than it holds (64); when the switch
    never had the original's answer (no field 38, no approved amount), a late answer may yet tell it."""
    conn = ready_connection()
    msg, _ = conn.reversal(make_reversal(original(**known)), now=0.0, wall=WALL, timeout=1.0)
    [event] = conn.receive(answer_to(msg, f39=rc), 0.1)
    assert event.outcome == REFUSED and event.outcome.held_unknown is held_unknown


def test_a_late_partial_approval_reports_the_amount_held_for_the_reversal():
    conn = ready_connection()
    msg, pending = conn.request(make_request(amount=2010), now=10.0, wall=WALL, timeout=1.5)
    [done] = conn.poll(11.5, WALL)
    assert done.outcome.uncertain
    [late] = conn.receive(answer_to(msg, f39="10", f4="000000001005", f38="AB12CD", f37="HOST00000001"), 12.0)
    assert late == Late("0210", msg[11], "10", msg[7], "AB12CD", f"{msg[11]}|{msg[7]}|HOST00000001|10|1005",
                        approved=True)
    assert parse_ref(late.acquirer_ref).approved == 1005
    # A full approval holds what was requested: nothing to add.
    msg, _ = conn.request(make_request(amount=2000), now=20.0, wall=WALL, timeout=1.5)
    conn.poll(21.5, WALL)
    [late] = conn.receive(answer_to(msg, f39="00", f38="AB12CE"), 22.0)
    assert late.acquirer_ref is None


def test_reversal_timeout_is_retry():
    metrics = LinkMetrics()
    conn = ready_connection(metrics=metrics)
    conn.reversal(make_reversal(original()), now=0.0, wall=WALL, timeout=1.0)
    [event] = conn.poll(1.0, WALL)
    assert event.outcome == RETRY and event.how == "timeout"
    assert metrics.get("reversals", mti="0420", response_code="timeout") == 1


# -- echo -----------------------------------------------------------------------

def test_echo_when_idle_and_answered():
    conn = ready_connection(clock=0.0)
    assert conn.next_wakeup() == 30.0
    assert conn.poll(29.9, WALL) == []
    [send] = conn.poll(30.0, WALL)
    assert isinstance(send, Send) and send.message[70] == "301" and send.message["mti"] == "0800"
    assert conn.next_wakeup() == 35.0  # the echo's own deadline; no second echo
    assert conn.poll(31.0, WALL) == []
    assert conn.receive(answer_to(send.message, f39="00"), 31.0) == []
    assert len(conn.stans) == 0
    assert conn.next_wakeup() == 61.0


def test_traffic_postpones_echo():
    conn = ready_connection(clock=0.0)
    msg, _ = conn.request(make_request(), now=20.0, wall=WALL, timeout=1.0)
    conn.receive(answer_to(msg, f39="00"), 20.5)
    assert conn.poll(30.0, WALL) == []
    assert conn.next_wakeup() == 50.5


def test_echo_unanswered_closes():
    conn = ready_connection(clock=0.0)
    conn.poll(30.0, WALL)
    assert conn.poll(35.0, WALL) == [Close("echo unanswered")]


def test_echo_unanswered_but_other_traffic_keeps_link():
    conn = ready_connection(clock=0.0)
    conn.poll(30.0, WALL)
    msg, _ = conn.request(make_request(), now=31.0, wall=WALL, timeout=1.0)
    conn.receive(answer_to(msg, f39="00"), 31.5)
    assert conn.poll(35.0, WALL) == []


def test_acquirer_initiated_echo_is_answered():
    conn = ready_connection()
    [send] = conn.receive(fields_view({"mti": "0800", 7: F7, 11: "123456", 70: "301"}), 1.0)
    assert send.message == {"mti": "0810", 7: F7, 11: "123456", 70: "301", 39: "00"}


def test_sign_off():
    conn = ready_connection()
    msg = conn.sign_off(1.0, WALL)
    assert msg[70] == "002" and conn.state is State.SIGNING_OFF
    with pytest.raises(RuntimeError):
        conn.request(make_request(), now=1.0, wall=WALL, timeout=1.0)
    assert conn.receive(answer_to(msg, f39="00"), 1.1) == [Close("signed off")]


def test_metrics_listener():
    seen = []
    m = LinkMetrics(listener=lambda name, labels, n: seen.append((name, labels, n)))
    m.inc("requests", mti="0200", response_code="00")
    m.inc("requests", mti="0200", response_code="00")
    assert m.get("requests", mti="0200", response_code="00") == 2
    assert m.total("requests") == 2
    assert seen[0] == ("requests", {"mti": "0200", "response_code": "00"}, 1)


class _Lazy:
    """A received message whose field 39 fails to decode on access (lazy codec)."""

    def __init__(self, fields):
        self.mti = fields["mti"]
        self._f = fields

    def get(self, n, default=None):
        if n == 39:
            raise ValueError("field 39: bad BCD at offset 40")
        return self._f.get(n, default)


def test_a_field_failing_to_decode_leaves_the_request_in_flight():
    conn = ready_connection()
    msg, pending = conn.request(make_request(), now=0.0, wall=WALL, timeout=2.0)
    with pytest.raises(ValueError):
        conn.receive(_Lazy({"mti": "0210", 7: msg[7], 11: msg[11], 41: msg[41]}), 0.5)
    assert conn.inflight.peek(msg[11]) is pending
    [lost] = conn.connection_lost()
    assert lost.outcome.uncertain
