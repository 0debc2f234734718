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


ALL_STATES = {v for k, v in vars(s).items() if k.isupper() and isinstance(v, str)}


def test_every_state_a_reversal_may_undo_has_a_reverse_transition():
    for state in ALL_STATES:
        for code in ("00", "05", "68", None):
            if s.needs_reversal(state, code):
                assert (state, "reverse") in s.TRANSITIONS, state


def test_a_terminal_0400_of_any_state_it_can_name_is_a_transition_or_nothing_to_do():
    # Issue "money at the edges", defect 1: SENT needed reversing but had no reverse step.
    for state in ALL_STATES - {s.RECEIVED, s.REJECTED}:
        assert (state, "reverse") in s.TRANSITIONS or not s.needs_reversal(state, "00"), state


def test_every_transition_is_reachable_from_an_initial_state():
    reached = set(s.INITIAL)
    frontier = list(s.INITIAL)
    while frontier:
        state = frontier.pop()
        for (src, _event), dst in s.TRANSITIONS.items():
            if src == state and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert {src for src, _ in s.TRANSITIONS} <= reached
    assert set(s.TRANSITIONS.values()) <= reached
    assert reached == ALL_STATES


def test_the_diagram_names_every_transition():
    doc = s.__doc__
    for (src, event), dst in s.TRANSITIONS.items():
        line = next((ln for ln in doc.splitlines() if f"──{event}─" in ln and ln.strip().startswith(src)), None)
        assert line is not None and dst in line, (src, event, dst)


def test_unmatched_and_void_are_ends():
    assert s.advance(s.REVERSAL_PENDING, "not_found") == s.UNMATCHED
    assert not s.needs_reversal(s.UNMATCHED, "00") and not s.needs_reversal(s.VOID, None)
    assert s.advance(s.SENT, "reverse") == s.REVERSAL_PENDING
