"""Host link, sans-I/O: switch-assigned STAN and field 7, field 90, reversals as 0420/0421 advices."""
import msgspec
import pytest

from adapters.card.hostlink import (
    Completed,
    HostConnection,
    LinkMetrics,
    SignedOn,
    StanAllocator,
    StanInUse,
    Unmatched,
    fields_view,
    original_data,
    reversal_fields,
)
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Original, Request
from switch.core.messages import response_mti

ACQ = "12345678901"
WALL = 1_700_000_000.0
F7 = "1114221320"
PAN = "4111111111111111"


def make_request(**kw) -> Request:
    base = dict(
        txn_id=1, kind="card", mti="0200", processing_code="000000", amount=1000,
        currency="840", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
        stan="000042", transmission_time="1114221300", rrn="331822000001",
        local_time="221300", local_date="1114", pan=PAN, expiry="2812", entry_mode="051",
        pos_condition="00",
    )
    base.update(kw)
    return Request(**base)


def make_original(**kw) -> Original:
    base = dict(txn_id=1, mti="0200", processing_code="000000", amount=1068, currency="840",
                stan="000042", transmission_time="1114221300", rrn="331822000001",
                auth_code="A1B2C3", host_stan="004711", host_time="1114221301",
                pan=PAN, local_time="221300", local_date="1114", entry_mode="071")
    base.update(kw)
    return Original(**base)


def make_reversal(original: Original, **kw) -> Request:
    # The switch-raised reversal: its own terminal-side fields say little (no PAN, other 12/13/22).
    base = dict(mti="0400", rrn="331822000002", original=original, pan=None, local_time="230000",
                local_date="1115", entry_mode="012", amount=None, currency=None,
                host_stan="004800", host_time="1114230000")
    base.update(kw)
    return make_request(**base)


def answer_to(msg: dict, mti: str | None = None, **fields) -> object:
    out = {"mti": mti or response_mti(msg["mti"], keep_origin=True)}
    for f in (3, 4, 7, 11, 32, 37, 41, 42, 49, 70):
        if f in msg:
            out[f] = msg[f]
    out.update({int(k[1:]): v for k, v in fields.items()})
    return fields_view(out)


def ready(stans=None, **kw) -> HostConnection:
    conn = HostConnection(StanAllocator() if stans is None else stans, acquirer_id=ACQ, **kw)
    sign_on = conn.connection_made(0.0, WALL)
    assert conn.receive(answer_to(sign_on, f39="00"), 0.0) == [SignedOn()]
    return conn


# -- rule 1: the switch's STAN and field 7 --------------------------------------------

def test_request_goes_out_with_the_switch_assigned_stan_and_field_7():
    conn = ready()
    msg, pending = conn.request(make_request(host_stan="123456", host_time="1114220000"),
                                now=1.0, wall=WALL, timeout=2.0)
    assert msg[11] == "123456" and msg[7] == "1114220000"
    assert pending.ref == "123456|1114220000|331822000001"
    [done] = conn.receive(answer_to(msg, f39="00"), 1.1)
    assert done.outcome.acquirer_ref == "123456|1114220000|331822000001"
    assert not conn.stans.in_use("123456")


def test_without_host_stan_the_link_allocates_as_before():
    conn = ready(StanAllocator(start=500))
    msg, _ = conn.request(make_request(), now=1.0, wall=WALL, timeout=2.0)
    assert msg[11] == "000501" and msg[7] == F7  # 000500 went to the sign-on


def test_a_host_stan_in_flight_is_refused_and_nothing_is_registered():
    metrics = LinkMetrics()
    conn = ready(metrics=metrics)
    conn.request(make_request(host_stan="123456", host_time="1114220000"), now=1.0, wall=WALL, timeout=2.0)
    with pytest.raises(StanInUse):
        conn.request(make_request(txn_id=2, host_stan="123456", host_time="1114220001"),
                     now=1.0, wall=WALL, timeout=2.0)
    assert len(conn.inflight) == 1 and metrics.get("stan_collisions", mti="0200") == 1


def test_a_host_stan_collides_with_the_links_own_network_stans():
    stans = StanAllocator(start=7)
    conn = ready(stans)  # the sign-on took 000007 and was answered: free again
    conn.poll(30.0, WALL)  # the echo takes 000008
    assert stans.in_use("000008")
    with pytest.raises(StanInUse):
        conn.request(make_request(host_stan="000008", host_time="1114220000"), now=30.0, wall=WALL, timeout=1.0)


@pytest.mark.parametrize("host_time", [None, "11142200", "abcdefghij"])
def test_host_stan_needs_a_well_formed_field_7(host_time):
    conn = ready()
    with pytest.raises(ValueError, match="host_time"):
        conn.request(make_request(host_stan="123456", host_time=host_time), now=1.0, wall=WALL, timeout=2.0)
    assert len(conn.stans) == 0


def test_stan_source_feeds_the_links_own_messages():
    issued = iter(["000100", "000101", "000102", "000103"])
    stans = StanAllocator(source=lambda: next(issued))
    conn = HostConnection(stans, acquirer_id=ACQ, echo_interval=30.0)
    sign_on = conn.connection_made(0.0, WALL)
    assert sign_on[11] == "000100"
    conn.receive(answer_to(sign_on, f39="00"), 0.0)
    [echo] = conn.poll(30.0, WALL)
    assert echo.message[11] == "000101"
    msg, _ = conn.request(make_request(), now=30.0, wall=WALL, timeout=1.0)  # no host STAN
    assert msg[11] == "000102"
    assert conn.sign_off(31.0, WALL)[11] == "000103"


def test_stan_source_skips_what_is_in_flight_and_rejects_garbage():
    stans = StanAllocator(source=iter(["000001", "000001", "000002"]).__next__)
    assert stans.allocate() == "000001"
    assert stans.allocate() == "000002"  # 000001 still in flight: skipped
    with pytest.raises(ValueError, match="stan_source"):
        StanAllocator(source=lambda: "12345").allocate()
    stuck = StanAllocator(source=lambda: "000001")
    stuck.allocate()
    with pytest.raises(StanInUse):
        stuck.allocate()


# -- rule 2: field 90 and what a reversal repeats -------------------------------------

def test_field_90_prefers_the_journaled_host_stan_and_time():
    o = make_original(acquirer_ref="000777|1114221399|331822000001")
    assert original_data(o, ACQ) == "0200" "004711" "1114221301" + ACQ + "0" * 11
    # without them: acquirer_ref, then zeros
    o = make_original(host_stan=None, host_time=None, acquirer_ref="000777|1114221399|331822000001")
    assert original_data(o, ACQ) == "0200" "000777" "1114221399" + ACQ + "0" * 11
    o = make_original(host_stan="004711", host_time=None, acquirer_ref=None)
    assert original_data(o, ACQ) == "0200" + "0" * 16 + ACQ + "0" * 11


def test_completion_field_90_uses_the_preauthorizations_host_stan():
    conn = ready()
    pre = make_original(mti="0100", host_stan="000321", host_time="1114200000")
    msg, _ = conn.request(make_request(mti="0220", original=pre, host_stan="000322",
                                       host_time="1114210000"), now=0.0, wall=WALL, timeout=1.0)
    assert msg[90] == "0100" "000321" "1114200000" + ACQ + "0" * 11 and msg[38] == "A1B2C3"


def test_reversal_carries_the_originals_fields():
    m = reversal_fields(make_reversal(make_original()), stan="004800", f7="1114230000", acquirer_id=ACQ)
    assert m["mti"] == "0420"
    assert m[2] == PAN and m[3] == "000000" and m[4] == "000000001068" and m[49] == "840"
    assert (m[12], m[13], m[22], m[38], m[37]) == ("221300", "1114", "071", "A1B2C3", "331822000001")
    assert (m[11], m[7]) == ("004800", "1114230000")
    assert m[90] == "0200" "004711" "1114221301" + ACQ + "0" * 11
    assert not {35, 52, 55} & set(m)


def test_reversal_falls_back_to_the_requests_card_and_local_fields():
    o = make_original(pan=None, local_time=None, local_date=None, entry_mode=None)
    m = reversal_fields(make_reversal(o, pan=PAN), stan="004800", f7="1114230000", acquirer_id=ACQ)
    assert (m[2], m[12], m[13], m[22]) == (PAN, "230000", "1115", "012")


def test_every_repeat_is_an_0421_with_the_same_stan_field_7_and_content():
    conn = ready()
    rev = make_reversal(make_original())
    first, _ = conn.reversal(rev, now=0.0, wall=WALL, timeout=1.0)
    [timed_out] = conn.poll(1.0, WALL)
    assert timed_out.outcome == RETRY
    sent = [first]
    for attempt in (1, 2):
        msg, _ = conn.reversal(msgspec.structs.replace(rev, attempt=attempt), now=2.0 * attempt,
                               wall=WALL + 100 * attempt, timeout=1.0)
        sent.append(msg)
        conn.poll(2.0 * attempt + 1.0, WALL)
    assert [m["mti"] for m in sent] == ["0420", "0421", "0421"]
    assert all(m[11] == "004800" and m[7] == "1114230000" for m in sent)
    assert {k: v for k, v in sent[1].items() if k != "mti"} == {k: v for k, v in first.items() if k != "mti"}
    assert sent[1] == sent[2]


@pytest.mark.parametrize("answer_mti_,attempt", [("0430", 0), ("0431", 1), ("0430", 1)])
def test_0430_answers_0420_and_0421(answer_mti_, attempt):
    conn = ready()
    msg, _ = conn.reversal(make_reversal(make_original(), attempt=attempt), now=0.0, wall=WALL, timeout=1.0)
    [done] = conn.receive(answer_to(msg, mti=answer_mti_, f39="00"), 0.1)
    assert isinstance(done, Completed) and done.outcome == REVERSED


def test_0431_does_not_answer_an_0420():
    conn = ready()
    msg, _ = conn.reversal(make_reversal(make_original()), now=0.0, wall=WALL, timeout=1.0)
    [event] = conn.receive(answer_to(msg, mti="0431", f39="00"), 0.1)
    assert isinstance(event, Unmatched)


def test_25_is_not_found_and_counted_by_mti():
    metrics = LinkMetrics()
    conn = ready(metrics=metrics)
    msg, _ = conn.reversal(make_reversal(make_original(), attempt=3), now=0.0, wall=WALL, timeout=1.0)
    [done] = conn.receive(answer_to(msg, f39="25"), 0.1)
    assert done.outcome == NOT_FOUND
    assert metrics.get("reversals", mti="0421", response_code="25") == 1


def test_late_0430_after_the_timeout_is_reported_late():
    conn = ready()
    msg, _ = conn.reversal(make_reversal(make_original()), now=0.0, wall=WALL, timeout=1.0)
    conn.poll(1.0, WALL)
    [late] = conn.receive(answer_to(msg, f39="00"), 1.5)
    assert type(late).__name__ == "Late" and late.mti == "0430"


def test_a_failing_stan_source_closes_the_connection_but_expired_requests_still_complete():
    calls = {"n": 0}

    def source():
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("journal sequence unavailable")
        return "000001"

    conn = HostConnection(StanAllocator(source=source), acquirer_id=ACQ, echo_interval=30.0)
    sign_on = conn.connection_made(0.0, WALL)
    conn.receive(answer_to(sign_on, f39="00"), 0.0)
    _, pending = conn.request(make_request(host_stan="500000", host_time="1114220000"),
                              now=29.0, wall=WALL, timeout=1.0)
    events = conn.poll(30.0, WALL)  # the request expires, and the echo finds no STAN
    assert [type(e).__name__ for e in events] == ["Completed", "Close"]
    assert events[0].pending is pending and events[0].outcome.response_code == "68"
    assert "no STAN for a network message: OSError" in events[1].reason
