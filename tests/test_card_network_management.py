"""Host link, sans-I/O: the acquirer's own 0800s (echo, sign-off, sign-on, key change, unknown)."""
import pytest

from adapters.card.hostlink import (
    Close,
    Completed,
    HostConnection,
    KeyChange,
    LinkMetrics,
    Send,
    SignedOffByAcquirer,
    SignedOn,
    StanAllocator,
    State,
    fields_view,
)
from switch.core.acquirer import Request
from switch.core.messages import response_mti

ACQ = "12345678901"
WALL = 1_700_000_000.0
F7 = "1114221320"


def request(**kw) -> Request:
    base = dict(txn_id=1, kind="card", mti="0200", processing_code="000000", amount=1000,
                currency="840", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
                stan="000042", transmission_time="1114221300", rrn="331822000001")
    base.update(kw)
    return Request(**base)


def answer_to(msg: dict, **fields) -> object:
    out = {"mti": response_mti(msg["mti"], keep_origin=True)}
    for f in (7, 11, 41, 70):
        if f in msg:
            out[f] = msg[f]
    out.update({int(k[1:]): v for k, v in fields.items()})
    return fields_view(out)


def from_acquirer(code: str, stan: str = "900001", extra: dict | None = None) -> object:
    return fields_view({"mti": "0800", 7: F7, 11: stan, 70: code, **(extra or {})})


def ready(**kw) -> HostConnection:
    kw.setdefault("resign_wait", 10.0)
    conn = HostConnection(StanAllocator(), acquirer_id=ACQ, echo_interval=30.0, network_timeout=5.0, **kw)
    sign_on = conn.connection_made(0.0, WALL)
    conn.receive(answer_to(sign_on, f39="00"), 0.0)
    assert conn.ready
    return conn


def test_echo_from_the_acquirer_is_answered_00():
    conn = ready()
    [send] = conn.receive(from_acquirer("301"), 1.0)
    assert send.message == {"mti": "0810", 7: F7, 11: "900001", 70: "301", 39: "00"}


def test_sign_off_from_the_acquirer_stops_new_requests_but_in_flight_ones_complete():
    metrics = LinkMetrics()
    conn = ready(metrics=metrics, endpoint="a")
    msg, pending = conn.request(request(), now=1.0, wall=WALL, timeout=5.0)
    events = conn.receive(from_acquirer("002"), 2.0)
    assert events == [Send({"mti": "0810", 7: F7, 11: "900001", 70: "002", 39: "00"}),
                      SignedOffByAcquirer(12.0)]
    assert conn.state is State.SIGNED_OFF and not conn.ready
    with pytest.raises(RuntimeError):
        conn.request(request(txn_id=2), now=2.0, wall=WALL, timeout=5.0)
    # the request written before the sign-off still gets its answer
    [done] = conn.receive(answer_to(msg, f39="00"), 2.5)
    assert isinstance(done, Completed) and done.pending is pending and done.outcome.response_code == "00"
    assert metrics.get("network_requests", endpoint="a", code="002") == 1


def test_sign_off_then_the_acquirer_signs_on_again():
    conn = ready()
    conn.receive(from_acquirer("002"), 2.0)
    assert conn.next_wakeup() == 12.0
    events = conn.receive(from_acquirer("001", stan="900002"), 3.0)
    assert events == [Send({"mti": "0810", 7: F7, 11: "900002", 70: "001", 39: "00"}), SignedOn()]
    assert conn.ready and conn.resume_at is None
    assert conn.next_wakeup() == 33.0  # back to echoes


def test_sign_off_then_we_sign_on_ourselves_after_the_wait():
    conn = ready()
    conn.receive(from_acquirer("002"), 2.0)
    assert conn.poll(11.9, WALL) == []  # no echo while signed off either
    [send] = conn.poll(12.0, WALL)
    assert send.message["mti"] == "0800" and send.message[70] == "001"
    assert conn.state is State.SIGNING_ON
    assert conn.receive(answer_to(send.message, f39="00"), 12.1) == [SignedOn()]
    assert conn.ready


def test_our_sign_on_refused_after_an_acquirer_sign_off_closes():
    conn = ready()
    conn.receive(from_acquirer("002"), 2.0)
    [send] = conn.poll(12.0, WALL)
    assert conn.receive(answer_to(send.message, f39="91"), 12.1) == [Close("sign-on refused with 39=91")]


def test_sign_off_in_flight_times_out_normally():
    conn = ready()
    conn.request(request(), now=1.0, wall=WALL, timeout=2.0)
    conn.receive(from_acquirer("002"), 1.5)
    [done] = conn.poll(3.0, WALL)
    assert done.outcome.response_code == "68" and done.outcome.uncertain and done.how == "timeout"


def test_sign_on_from_the_acquirer_while_ready_is_just_answered():
    conn = ready()
    [send] = conn.receive(from_acquirer("001"), 1.0)
    assert send.message[39] == "00" and conn.ready


@pytest.mark.parametrize("code", ["101", "161", "162"])
def test_key_change_is_reported_and_answered_by_the_owners_verdict(code):
    metrics = LinkMetrics()
    conn = ready(metrics=metrics, endpoint="a")
    msg = from_acquirer(code, extra={48: "KEY-UNDER-ZMK-0123456789ABCDEF", 53: "0000000000000000"})
    [event] = conn.receive(msg, 1.0)
    assert isinstance(event, KeyChange) and event.code == code and event.stan == "900001"
    assert event.fields[48] == "KEY-UNDER-ZMK-0123456789ABCDEF" and event.fields[70] == code
    accepted = conn.key_change_answer(event, True)
    assert accepted == {"mti": "0810", 7: F7, 11: "900001", 70: code, 39: "00"}
    assert 48 not in accepted and 53 not in accepted  # the key is never echoed back
    assert conn.key_change_answer(event, False)[39] == "96"
    assert metrics.get("key_changes", endpoint="a", response_code="00") == 1
    assert metrics.get("key_changes", endpoint="a", response_code="96") == 1
    assert "KEY-UNDER-ZMK" not in repr(metrics.counters)


@pytest.mark.parametrize("code", ["999", "003", None])
def test_unknown_network_codes_are_answered_12(code):
    conn = ready()
    fields = {"mti": "0800", 7: F7, 11: "900001"}
    if code is not None:
        fields[70] = code
    [send] = conn.receive(fields_view(fields), 1.0)
    assert send.message["mti"] == "0810" and send.message[39] == "12"
    assert conn.ready
