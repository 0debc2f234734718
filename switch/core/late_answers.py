"""Late answers: what an acquirer's answer after the switch gave up tells its reversal (no I/O).

The switch gave up on a request (68) and queues its reversal; the acquirer's
answer may still come.  Its field 38 (a strict host matches the reversal by
it) and, when it approved another amount than requested, the amount it
holds (in the adapter's ``acquirer_ref``: a strict host reverses that amount
only) go with the reversal's tries from then on.

The answer can come while the switch is still journaling the outcome it
gave up with, before the reversal is pending: it is kept here first
(:meth:`LateAnswers.tell`), then put on the pending reversal; the engine
looks again once the reversal is queued (:meth:`LateAnswers.queued`).
Whichever of the two comes second finds the other, so the news is never
lost between them.

A late *approval* may come after the reversal already ended ``unmatched``
(the acquirer answered 25 for the whole ``reversal_not_found_window``): the
acquirer has the original after all, so the reversal is reopened
(``reversal_pending`` again, its repeats as before) and sent.  The journal
is where it is found, so this holds after a restart too.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Generator

from switch.core import states
from switch.core.commands import Op
from switch.journal import StaleState

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

KEPT = 1000  # late answers remembered until a reversal takes them
UNMATCHED_LOOKED_AT = 100_000  # unmatched reversals a late approval is looked for among (oldest first)


def fits_field_38(code: Any) -> bool:
    """Whether ``code`` fits a field 38 (an6)."""
    return isinstance(code, str) and 0 < len(code) <= 6 and code.isascii() and code.isprintable()


class LateAnswers:
    """Late answers by (acquirer, host STAN, host field 7), until their reversal takes them.

    ``on_reopened(rec)``: a late approval put an ``unmatched`` reversal back
    in the queue (the reversal sender is woken up, the metric counted);
    ``clock``: the engine's, from which the reopened reversal's window runs."""

    def __init__(self, on_reopened: Any = None, clock: Any = None) -> None:
        self._news: OrderedDict[tuple[str, str, str], tuple[str | None, str | None, bool]] = OrderedDict()
        self.on_reopened = on_reopened
        self.clock = clock

    def tell(self, acquirer: str, host_stan: str, host_time: str, auth_code: str | None,
             acquirer_ref: str | None = None, approved: bool = False) -> Gen:
        """A late answer's field 38 and ``acquirer_ref``, and whether it approved: kept,
        and put on its pending reversal if there is one yet (a late approval reopens
        one that ended ``unmatched``).  True if the reversal took any of it."""
        code = auth_code if fits_field_38(auth_code) else None  # only a field 38 a reversal can carry
        if code is None and acquirer_ref is None and not approved:
            return False
        key = (acquirer, host_stan, host_time)
        self._news[key] = (code, acquirer_ref, approved)
        self._news.move_to_end(key)
        while len(self._news) > KEPT:
            self._news.popitem(last=False)
        took = yield from self._apply(key)
        if took is None and approved:  # no reversal pending: one recorded unmatched is reopened
            return (yield from self._reopen(key, code, acquirer_ref))
        return bool(took)

    def queued(self, acquirer: str, host_stan: str | None, host_time: str | None) -> Gen:
        """A reversal was just queued for what went out under this host STAN and field 7:
        the late answer that came meanwhile, if any, goes on it."""
        key = (acquirer, host_stan, host_time)
        if key not in self._news:
            return False
        return bool((yield from self._apply(key)))

    def _apply(self, key: tuple[str, str, str]) -> Gen:
        """The news under ``key`` onto its pending reversal: True if it took some, False
        if it needed none, None when no reversal under ``key`` is pending."""
        code, acquirer_ref, _ = self._news[key]
        for rec in (yield Op("pending_reversals", 10_000)):
            if (rec.acquirer, rec.host_stan, rec.host_time) != key:
                continue
            self._news.pop(key, None)
            changes = _changes(rec, code, acquirer_ref)
            if not changes:
                return False
            try:
                yield Op("update_if", rec.id, states.REVERSAL_PENDING, **changes)
            except StaleState:
                return False  # its reversal ended meanwhile
            log.info("rrn %s: %s answered it late; its reversal carries its %s", rec.rrn, key[0],
                     " and ".join(changes), extra=_about(rec))
            return True
        return None

    def _reopen(self, key: tuple[str, str, str], code: str | None, acquirer_ref: str | None) -> Gen:
        """A late approval of what the acquirer had answered 25 to, for the whole window:
        its reversal, ``unmatched``, goes back to the queue with what the answer says."""
        for rec in (yield Op("in_states", (states.UNMATCHED,), limit=UNMATCHED_LOOKED_AT)):
            if (rec.acquirer, rec.host_stan, rec.host_time) != key or rec.reversal_stan is None:
                continue
            self._news.pop(key, None)
            changes = _changes(rec, code, acquirer_ref)
            try:
                yield Op("update_if", rec.id, states.UNMATCHED, state=states.advance(rec.state, "late_approval"),
                         reversal_started=float(rec.updated_at if self.clock is None else self.clock()),
                         **changes)
            except StaleState:
                return False
            log.warning("rrn %s: %s approved it late, after its reversal was recorded unmatched (25); "
                        "the reversal is sent again", rec.rrn, key[0], extra=_about(rec))
            if self.on_reopened is not None:
                self.on_reopened(rec)
            return True
        return False


def _changes(rec: Any, code: str | None, acquirer_ref: str | None) -> dict:
    changes = {}
    if code is not None and rec.auth_code is None:
        changes["auth_code"] = code
    if acquirer_ref is not None and rec.acquirer_ref != acquirer_ref:
        changes["acquirer_ref"] = acquirer_ref
    return changes


def _about(rec: Any) -> dict:
    return {"rrn": rec.rrn, "terminal": rec.terminal_id, "stan": rec.stan, "txn": rec.id}
