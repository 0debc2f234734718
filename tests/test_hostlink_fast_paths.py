"""What the host link does in C instead of through Python calls does the same:
an answer's fields read (field_of, as ``msg.get``), a STAN's, field 7's or an
amount's digits checked (valid_stan / valid_f7 / isdigit, as ``str.isdigit``),
answers counted (LinkMetrics given the key's hash), a request's Pending made
(new_pending, as ``Pending(...)``), a closed breaker passed without reading the
clock (Breaker.closed, as ``allow``)."""
import re
from pathlib import Path

import pytest

from adapters.card.answers import field_of
from adapters.card.breaker import Breaker, BreakerState
from adapters.card.hostlink import LinkMetrics
from adapters.card.inflight import Kind, Pending, new_pending
from adapters.card.messages import fields_view, isdigit, valid_f7, valid_stan
from native.iso8583 import dialect
from switch.core.link_metrics import key
from tests.test_card_hostlink import answer_to, make_request, ready_connection

HOST = dialect("host-87-bcd")
ANSWER = {"mti": "0210", 3: "000000", 4: "000000001000", 7: "1114221320", 11: "000042", 37: "331822000001",
          38: "A1B2C3", 39: "00", 41: "DEMO0001", 42: "DEMO00000000001", 49: "840", 55: b"\x9f\x02"}


@pytest.mark.parametrize("msg", [HOST.decode(HOST.encode(ANSWER)), fields_view(ANSWER)], ids=["decoded", "view"])
def test_field_of_reads_what_get_reads_present_or_not(msg):
    for f in (2, 3, 4, 7, 11, 12, 37, 38, 39, 41, 42, 49, 55, 64, 70, 90, 128, 192):
        assert field_of(msg, f) == msg.get(f)
        assert type(field_of(msg, f)) is type(msg.get(f))
    assert field_of(msg, 39) == "00" and field_of(msg, 55) == b"\x9f\x02" and field_of(msg, 2) is None


def test_field_of_asks_any_other_message_its_get():
    class Asked:
        def get(self, f):
            return ("asked", f)

    assert field_of(Asked(), 11) == ("asked", 11)


@pytest.mark.parametrize("text", ["000042", "999999", "00004", "0000420", "", "00004a", "00 042", "٠٠٠٠٤٢",
                                  "００００４２", "00004²", "0000\u00b942"])
def test_valid_stan_is_six_characters_isdigit_takes(text):
    assert valid_stan(text) is (len(text) == 6 and text.isdigit())


@pytest.mark.parametrize("text", ["1114221320", "111422132", "11142213200", "111422132x", "١١١٤٢٢١٣٢٠",
                                  "111422132²", ""])
def test_valid_f7_is_ten_characters_isdigit_takes(text):
    assert valid_f7(text) is (len(text) == 10 and text.isdigit())


def test_valid_stan_and_f7_of_what_is_not_a_str():
    assert valid_stan(None) is False and valid_f7(None) is False

    class Digits(str):
        pass

    assert valid_stan(Digits("000042")) is True and valid_f7(Digits("111422132x")) is False
    assert valid_stan(b"000042") is True and valid_f7(b"1114221320") is True


@pytest.mark.parametrize("text", ["000000001000", "", "12a", "١٢", "１２", "12²", b"0012", b"12a"])
def test_isdigit_is_the_method_of_what_it_is_given(text):
    assert isdigit(text) is text.isdigit()


class _Children:
    """A listener with ``child``, like the switch's: asked once a key, its child told every increment."""

    def __init__(self):
        self.asked, self.told = [], []

    def __call__(self, name, labels, amount):
        raise AssertionError("a listener with child() is not called")

    def child(self, name, labels):
        self.asked.append((name, labels))
        told = self.told

        class Child:
            def inc(self, amount):
                told.append((name, tuple(sorted(labels.items())), amount))

        return Child()


def test_answers_are_counted_under_their_key_and_told_to_the_listener_once_a_key_asked():
    listener = _Children()
    metrics = LinkMetrics(listener)
    conn = ready_connection(metrics=metrics)
    for n, rc in enumerate(["00", "05", "00", "00"]):
        msg, _ = conn.request(make_request(txn_id=n + 1), now=1.0, wall=1_700_000_000.0, timeout=2.0)
        conn.receive(answer_to(msg, f39=rc), 1.5)
    assert metrics.get("requests", mti="0200", response_code="00") == 3
    assert metrics.get("requests", mti="0200", response_code="05") == 1
    assert metrics.counters[key("requests", mti="0200", response_code="00")] == 3
    assert listener.asked.count(("requests", {"mti": "0200", "response_code": "00"})) == 1
    labels = (("mti", "0200"), ("response_code", "00"))
    assert listener.told.count(("requests", labels, 1)) == 3
    # add() with an equal key built anew counts the same counter.
    metrics.add(key("requests", mti="0200", response_code="00"), 2)
    assert metrics.get("requests", mti="0200", response_code="00") == 5 and metrics.total("requests") == 6
    assert listener.told[-1] == ("requests", labels, 2)


def _pending_fields() -> list[str]:
    """Every field of Pending, as inflight.pxd declares them."""
    pxd = (Path(__file__).parent.parent / "adapters" / "card" / "inflight.pxd").read_text()
    body = pxd.split("cdef class Pending:", 1)[1].split("\n\n", 1)[0]
    return [name.strip() for line in re.findall(r"cdef public \w+ (.+)", body) for name in line.split(",")]


def test_new_pending_sets_every_field_pending_sets():
    args = (Kind.REQUEST, "0200", "000042", "1114221320", "331822000001", "DEMO0001", 3.5, 1.5, object(),
            "000000001000", "000000", "840", "DEMO00000000001")
    made, built = new_pending(*args), Pending(*args)
    fields = _pending_fields()
    assert len(fields) == 14 and "held_known" in fields
    assert type(made) is Pending
    assert {f: getattr(made, f) for f in fields} == {f: getattr(built, f) for f in fields}


def test_a_request_registers_its_pending_with_the_fields_sent():
    conn = ready_connection()
    msg, pending = conn.request(make_request(), now=1.0, wall=1_700_000_000.0, timeout=2.0, token="t")
    assert (pending.kind, pending.mti, pending.stan, pending.f7, pending.rrn, pending.terminal_id) == (
        Kind.REQUEST, "0200", msg[11], msg[7], msg[37], msg[41])
    assert (pending.deadline, pending.sent_at, pending.token, pending.held_known) == (3.0, 1.0, "t", True)
    assert (pending.amount, pending.processing_code, pending.currency, pending.merchant_id) == (
        msg[4], msg[3], msg[49], msg[42])


def test_a_breaker_is_closed_exactly_when_allow_needs_no_clock():
    b = Breaker(threshold=1, cooldown=10.0)
    assert b.closed() and b.allow(0.0) and b.allow(1e12)
    b.failure(5.0)  # open
    assert not b.closed() and not b.allow(14.9)
    assert b.allow(15.0) and not b.closed()  # half-open: the probe went
    b.success()
    assert b.closed() and b.state(15.1) is BreakerState.CLOSED
