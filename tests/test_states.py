"""The transaction state table: allowed steps, refused steps, reversal decisions."""
import pytest

from switch.core import states as s


def test_happy_paths():
    assert s.advance(s.RECEIVED, "send") == s.SENT
    assert s.advance(s.SENT, "answer") == s.ANSWERED
    assert s.advance(s.RECEIVED, "reject") == s.REJECTED
    assert s.advance(s.RECEIVED, "handle") == s.ANSWERED


def test_uncertain_outcome_is_reversed_until_acknowledged():
    st = s.advance(s.SENT, "uncertain")
    assert st == s.REVERSAL_PENDING
    assert s.advance(st, "retry") == s.REVERSAL_PENDING
    assert s.advance(st, "reversed") == s.REVERSED
    assert s.advance(s.REVERSED, "reverse") == s.REVERSED  # idempotent


def test_crash_recovery_queues_in_flight_transactions():
    assert s.advance(s.SENT, "crash_recovery") == s.REVERSAL_PENDING


@pytest.mark.parametrize(
    "state, event",
    [(s.ANSWERED, "send"), (s.REVERSED, "answer"), (s.REJECTED, "reverse"), (s.RECEIVED, "reversed")],
)
def test_impossible_steps_raise(state, event):
    with pytest.raises(s.InvalidTransition, match=f"no transition from '{state}' on '{event}'"):
        s.advance(state, event)


@pytest.mark.parametrize(
    "state, code, expected",
    [
        (s.ANSWERED, "00", True),
        (s.ANSWERED, "05", False),
        (s.SENT, None, True),
        (s.REVERSAL_PENDING, "68", True),
        (s.REVERSED, "00", False),
        (s.REJECTED, "14", False),
    ],
)
def test_needs_reversal(state, code, expected):
    assert s.needs_reversal(state, code) is expected
