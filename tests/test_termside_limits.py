"""Requests open per terminal ID (issue 8): counted in up to the limit, refused beyond it
without counting, and a terminal with none open left out of the count."""
from __future__ import annotations

import pytest

from switch.core.limits import TerminalSlots


def test_slots_count_up_to_the_limit_and_forget_a_terminal_with_none_open():
    slots = TerminalSlots()
    assert [slots.take("T1", 2) for _ in range(3)] == [True, True, False]
    assert slots.take("T2", 2) is True
    assert slots.open == {"T1": 2, "T2": 1}
    slots.release("T1")
    assert slots.take("T1", 2) is True  # one left again
    slots.release("T1")
    slots.release("T1")
    slots.release("T2")
    assert slots.open == {}
    with pytest.raises(KeyError):
        slots.release("T2")  # none open: a release without its take is a bug, not a count below 0


def test_a_limit_of_zero_takes_nothing():
    slots = TerminalSlots()
    assert slots.take("T1", 0) is False
    assert slots.open == {}
