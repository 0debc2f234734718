"""What the reversal queue says in its log about one reversal (switch.core.reversal):
the lines an operator acts on, each naming the RRN and the runbook's section."""
from __future__ import annotations

import logging
from typing import Any

from switch.core import states
from switch.journal import TxnRecord, reversal_card

log = logging.getLogger("payswitch")


def refused(rec: TxnRecord, acquirer: str, outcome: Any) -> None:
    """The acquirer refused ``rec``'s reversal for good: say so, loudly, once."""
    code = getattr(outcome, "code", None) or "?"
    log.error("rrn %s (txn %d): %s refused its reversal with %s; not retried (state %s): the money may still be "
              "held at the acquirer: settle it with them by this RRN and their code (ops/runbook.md, "
              "\"A reversal is refused\")", rec.rrn, rec.id, acquirer, getattr(outcome, "reason", None) or code,
              states.REVERSAL_REFUSED, extra={**about(rec)["extra"], "acquirer": acquirer})


def acquirer_gone(rec: TxnRecord) -> None:
    """``rec``'s reversal waits for an acquirer the configuration no longer names: said once."""
    log.error("rrn %s (txn %d): its reversal is pending for acquirer %r, which is no longer configured: kept "
              "pending and not sent until it is configured again (payswitch_reversals_unconfigured; "
              "ops/runbook.md, \"A reversal waits for an acquirer no longer configured\")", rec.rrn, rec.id,
              rec.acquirer, extra={**about(rec)["extra"], "acquirer": rec.acquirer})


def _no_card(rec: TxnRecord, exc: Exception) -> None:
    """Log that ``rec``'s reversal goes without field 2: SealError says which
    transaction and why, never the number; anything else is named by its type."""
    log.error("txn %d: no card number for its reversal: %s", rec.id,
              exc if isinstance(exc, reversal_card.SealError) else type(exc).__name__, **about(rec))


def about(rec: TxnRecord) -> dict:
    """``extra=`` for a log line about one payment: JSON logs carry its RRN and terminal."""
    return {"extra": {"rrn": rec.rrn, "terminal": rec.terminal_id, "stan": rec.stan, "txn": rec.id}}
