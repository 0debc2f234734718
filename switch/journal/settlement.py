"""Settlement (0500) in the SQLite journal: the terminal's totals against its period (spec sections 3 and 6.1).

A period runs from the terminal's last accepted 0500 in a currency to this
one, by when each transaction was answered (``switch.journal.statements``
TOTALS, LAST_CUTOFF).  :meth:`Settlement.settle_totals` takes the cut-off,
counts the totals, records the settlement and gives the 0500's own record its
code, 00 or 95, in one operation on the writer (its batch's transaction).  An
0500 handled again because its answer never reached the terminal (the
journal failed to store it, the switch stopped) finds its code there and is
answered with it: a period is closed once, and a terminal whose totals
matched is never told 95 for having asked twice.
"""
from __future__ import annotations

from concurrent.futures import Future

import msgspec

from switch.journal import Totals
from switch.journal.statements import SETTLE, SETTLED, SETTLED_AS, TOTALS


class Settlement:
    """Mixed into :class:`switch.journal.sqlite.SqliteJournal` (its caller's side and writer's side)."""

    def totals(self, terminal_id: str, currency: str | None = None) -> Future[Totals]:
        return self._submit(self._totals, (terminal_id, currency), False)

    def settle(
        self, terminal_id: str, totals: Totals, accepted: bool, currency: str | None = None
    ) -> Future[None]:
        args = (
            terminal_id,
            1 if accepted else 0,
            totals.credits_count,
            totals.debits_count,
            totals.credits_amount,
            totals.debits_amount,
        )
        return self._submit(self._settle, (args, currency), True)

    def settle_totals(
        self, terminal_id: str, currency: str | None, theirs: Totals, txn_id: int | None = None
    ) -> Future[tuple[Totals | None, bool]]:
        return self._submit(self._settle_totals, (terminal_id, currency, theirs, txn_id), True)

    # -- the writer's side

    def _totals(self, terminal_id: str, currency: str | None, cutoff: float | None = None) -> Totals:
        if cutoff is None:
            cutoff = self._now()
        return Totals(*self._conn.execute(TOTALS, (terminal_id, currency, cutoff)).fetchone())

    def _settle(self, args: tuple, currency: str | None, cutoff: float | None = None) -> None:
        now = self._now()
        self._conn.execute(SETTLE, args + (now, currency, now if cutoff is None else cutoff))

    def _settle_totals(
        self, terminal_id: str, currency: str | None, theirs: Totals, txn_id: int | None = None
    ) -> tuple[Totals | None, bool]:
        # One operation on the writer: the cut-off is taken with the totals, so
        # every transaction answered before it is in exactly one period.  The
        # 0500's own record takes its code in the same step: handled again
        # (its answer was lost), it keeps it and closes no period twice.
        if txn_id is not None:
            decided = self._conn.execute(SETTLED_AS, (txn_id,)).fetchone()
            if decided is not None and decided[0] is not None:
                return None, decided[0] == "00"
        cutoff = self._now()
        ours = self._totals(terminal_id, currency, cutoff)
        accepted = msgspec.structs.astuple(ours) == msgspec.structs.astuple(theirs)
        args = (terminal_id, 1 if accepted else 0, ours.credits_count, ours.debits_count,
                ours.credits_amount, ours.debits_amount)
        self._settle(args, currency, cutoff)
        if txn_id is not None:
            self._conn.execute(SETTLED, ("00" if accepted else "95", cutoff, txn_id))
            self._known.pop(txn_id, None)
        return ours, accepted
