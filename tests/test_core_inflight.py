"""The response mux of the acquirer links (switch.core.inflight): entries by
key with deadlines, late answers told from stray ones, everything failed at once."""
import pytest

from switch.core.inflight import InFlight


class Entry:
    def __init__(self, mti):
        self.mti = mti


def test_add_peek_pop():
    inflight = InFlight()
    a, b = Entry("0200"), Entry("0100")
    inflight.add("000001", a, 5.0)
    inflight.add("000002", b, 3.0)
    assert len(inflight) == 2 and "000001" in inflight and "000003" not in inflight
    assert inflight.peek("000001") is a and len(inflight) == 2
    assert inflight.pop("000001") is a
    assert inflight.pop("000001") is None and inflight.peek("000001") is None
    assert list(inflight.values()) == [b]


def test_a_key_in_flight_cannot_be_added_twice():
    inflight = InFlight()
    inflight.add(7, Entry("0200"), 1.0)
    with pytest.raises(RuntimeError, match="7 is already in flight"):
        inflight.add(7, Entry("0200"), 2.0)


def test_expire_in_deadline_order_and_skip_what_was_answered():
    inflight = InFlight()
    early, answered, late = Entry("0200"), Entry("0200"), Entry("0420")
    inflight.add("000003", late, 9.0)
    inflight.add("000001", early, 1.0)
    inflight.add("000002", answered, 2.0)
    inflight.pop("000002")
    assert inflight.next_deadline() == 1.0
    assert inflight.expire(0.5) == []
    assert inflight.expire(5.0) == [early]
    assert inflight.next_deadline() == 9.0  # the answered one no longer counts
    assert inflight.expire(9.0) == [late] and len(inflight) == 0
    assert inflight.next_deadline() is None


def test_a_key_reused_after_its_answer_expires_only_the_new_entry():
    inflight = InFlight()
    old, new = Entry("0200"), Entry("0200")
    inflight.add("000001", old, 1.0)
    inflight.pop("000001")
    inflight.add("000001", new, 4.0)
    assert inflight.expire(2.0) == []
    assert inflight.next_deadline() == 4.0
    assert inflight.expire(4.0) == [new]


def test_expired_keys_are_remembered_to_tell_a_late_answer_from_a_stray_one():
    inflight = InFlight(remember=lambda entry: entry.mti)
    inflight.add("000001", Entry("0200"), 1.0)
    inflight.expire(1.0)
    assert inflight.expired("000001") == "0200"  # late: its MTI says which answers fit
    assert inflight.expired("000002") is None  # stray: never sent
    inflight.forget_expired("000001")
    assert inflight.expired("000001") is None  # a second answer is stray


def test_given_up_on_before_the_deadline_is_remembered_as_expired():
    inflight = InFlight()
    future = object()
    inflight.add(12, future)
    assert inflight.give_up(12) is future and 12 not in inflight
    assert inflight.expired(12) is True
    assert inflight.give_up(12) is None  # answered or gone: nothing to remember


def test_an_answered_key_is_not_remembered():
    inflight = InFlight()
    inflight.add(1, object())
    inflight.pop(1)
    assert inflight.give_up(1) is None and inflight.expired(1) is None


def test_the_memory_of_expired_keys_is_bounded_oldest_first():
    inflight = InFlight(late_memory=3)
    for n in range(5):
        inflight.add(n, Entry("0200"), float(n))
    inflight.expire(10.0)
    assert [n for n in range(5) if inflight.expired(n)] == [2, 3, 4]


def test_entries_without_a_deadline_never_expire_here():
    inflight = InFlight()
    inflight.add(1, object())
    assert inflight.next_deadline() is None
    assert inflight.expire(float("inf")) == [] and 1 in inflight


def test_drain_returns_and_removes_everything():
    inflight = InFlight()
    a, b = Entry("0200"), Entry("0800")
    inflight.add("000001", a, 1.0)
    inflight.add("000002", b)
    assert inflight.drain() == [a, b]
    assert len(inflight) == 0 and inflight.next_deadline() is None and inflight.expire(5.0) == []
    assert inflight.expired("000001") is None  # lost with the connection, not late
