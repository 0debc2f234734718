"""A terminal's 0500 (sections 3 and 6.1): its totals in one currency against the journal's.

Run by the engine (:mod:`switch.core.engine`) once the 0500 is journaled, as a
generator of its commands like the engine's own work; not on a payment's path.
"""
from __future__ import annotations

import logging
from typing import Any, Generator

from switch.core.commands import Op
from switch.core.messages import build_response
from switch.core.states import advance
from switch.journal import Totals, TxnRecord

log = logging.getLogger("payswitch")


def settlement(engine, msg, rec: TxnRecord, merchant: str, codec) -> Generator[Any, Any, tuple[str, str, bytes]]:
    """Compare, answer 00 (accepted) or 95, and journal the answer with the outcome."""
    currency = msg.get(49) or engine.merchants[merchant].currency
    theirs = Totals(int(msg[74]), int(msg[76]), int(msg[86]), int(msg[88]))
    ours, accepted = yield Op("settle_totals", msg[41], currency, theirs, rec.id)
    code = "00" if accepted else "95"
    if ours is None:
        log.info("rrn %s: 0500 handled again; answered %s as its totals were decided", rec.rrn, code)
    elif not accepted:
        log.warning("terminal %s totals %s differ from the journal's %s", msg[41], theirs, ours)
    resp = build_response(msg, code, rec.rrn)
    op, out = engine._finish(rec, resp, codec, None, {"state": advance(rec.state, "handle")})
    yield op
    return "settlement", code, out
