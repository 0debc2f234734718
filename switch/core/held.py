"""Reversal outcomes the journal refused to record, held until it takes them.

A reversal's answer is recorded in the journal (reversed, refused, nothing
to reverse, one more attempt).  When the journal refuses that write (disk
full, I/O error, its writer gone), the outcome is held here in memory and
the write is tried again every ``reversal_retry`` seconds; meanwhile the
reversal is not sent again (the journal still says it is pending, and a
restart sends it again, which an acquirer answers as a repeat).  A sweep
that cannot read or write the journal also waits ``reversal_retry``.

A failing journal is said once per failure burst: one ERROR line when it
starts to refuse, one line when it takes the writes again.  Sans-I/O: the
caller passes ``now``.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

log = logging.getLogger("payswitch")


class Held(NamedTuple):
    """One outcome to write: ``Op(op, txn_id, expect, **changes)``, not before ``due``."""

    op: str  # "update_if" (one more attempt) or "end_reversal"
    expect: str  # the state the record was read in
    changes: dict[str, Any]
    event: str  # what the acquirer answered: reversed, not_found, refused, retry
    due: float


class HeldOutcomes:
    """The outcomes held (by transaction id) and the failure burst they belong to."""

    def __init__(self) -> None:
        self.outcomes: dict[int, Held] = {}
        self.failing = False  # in a burst of the journal's refusals

    def __len__(self) -> int:
        return len(self.outcomes)

    def __contains__(self, txn_id: int) -> bool:
        return txn_id in self.outcomes

    def hold(self, txn_id: int, held: Held, error: Exception, retry: float) -> None:
        self.outcomes[txn_id] = held
        self.refused(f"txn {txn_id}: the outcome of its reversal ({held.event}) could not be journaled", error, retry)

    def due(self, now: float) -> list[tuple[int, Held]]:
        return [(txn_id, h) for txn_id, h in self.outcomes.items() if h.due <= now]

    def next_due(self, txn_id: int) -> float:
        return self.outcomes[txn_id].due

    def later(self, now: float, retry: float) -> None:
        """The journal still refuses: every held outcome waits ``retry`` more seconds."""
        for txn_id, h in list(self.outcomes.items()):
            if h.due <= now:
                self.outcomes[txn_id] = h._replace(due=now + retry)

    def refused(self, what: str, error: Exception, retry: float) -> None:
        """The journal refused a write or read of the reversals: said once per burst."""
        if self.failing:
            return
        self.failing = True
        log.error("%s: %s; reversals held and tried again every %.1f s until the journal takes writes "
                  "(runbook: \"Journal failing\")", what, error, retry)

    def recovered(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("the journal takes the reversals' writes again; %d held outcome(s) left to write",
                        len(self.outcomes))
