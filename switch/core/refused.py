"""Closing a refused reversal once an operator has settled it with the acquirer.

A reversal the acquirer refused for good waits in state ``reversal_refused``
(:mod:`switch.core.reversal`): the switch never sends it again, and
``payswitch_reversals_refused`` counts it until someone acts.  The operator
takes it to the acquirer by its RRN (ops/runbook.md, "A reversal is
refused"), then closes it (``POST /admin/reversals/<rrn>/close``): the
record moves to ``reversal_closed`` through the state table, in an update
made only while it is still refused, so a concurrent change is never
overwritten.  A closed reversal counts in no settlement totals, is in no
queue, and a terminal's late 0400 of it is answered 00 and changes nothing.

No I/O here: :func:`close` yields journal operations, as the engine does.
"""
from __future__ import annotations

import logging
from typing import Any, Generator, NamedTuple

from switch.core import states
from switch.core.commands import Op
from switch.core.reversal import about
from switch.journal import StaleState

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

RRN_LENGTH = 12  # field 37, an12; the switch's own RRNs are the journal id, zero-padded

# What became of a request to close (Closing.result).
CLOSED = "closed"
NO_SUCH = "no_such"  # no transaction has that RRN
NOT_REFUSED = "not_refused"  # the transaction is in another state (Closing.state)


class Closing(NamedTuple):
    result: str  # CLOSED, NO_SUCH or NOT_REFUSED
    state: str | None = None  # the transaction's state after the request (None: no such transaction)
    acquirer: str | None = None


def is_rrn(text: str) -> bool:
    """Whether ``text`` can be an RRN the switch gave: 12 ASCII digits."""
    return len(text) == RRN_LENGTH and text.isascii() and text.isdigit()


def close(rrn: str, metrics: Any = None) -> Gen:
    """Move the transaction with RRN ``rrn`` from ``reversal_refused`` to ``reversal_closed``.

    Returns a :class:`Closing`.  ``metrics``, given in the process that sends
    reversals (the one that sets ``payswitch_reversals_refused``), has the
    gauge counted again from the journal at once, not at the next sweep.
    """
    if not is_rrn(rrn):
        raise ValueError(f"an RRN is {RRN_LENGTH} digits, got {len(rrn)} characters")
    rec = yield Op("get", int(rrn))
    if rec is None or rec.rrn != rrn:
        return Closing(NO_SUCH)
    if rec.state != states.REVERSAL_REFUSED:
        return Closing(NOT_REFUSED, rec.state, rec.acquirer)
    try:
        rec = yield Op("update_if", rec.id, rec.state, state=states.advance(rec.state, "close"))
    except StaleState:
        now = yield Op("get", rec.id)
        return Closing(NOT_REFUSED, now.state if now is not None else None, rec.acquirer)
    log.info("rrn %s (txn %d): an operator closed its refused reversal at %s (code %s), settled with the "
             "acquirer by hand (state %s)", rec.rrn, rec.id, rec.acquirer, rec.reversal_code or "?", rec.state,
             extra={**about(rec)["extra"], "acquirer": rec.acquirer})
    if metrics is not None:
        _count, _oldest, refused_count = yield Op("reversal_backlog")
        metrics.reversals_refused(refused_count)
    return Closing(CLOSED, rec.state, rec.acquirer)
