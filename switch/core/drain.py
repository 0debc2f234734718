"""Requests that arrive while the switch drains (SIGTERM): answered from the journal, or refused.

From SIGTERM on, terminals already connected may still send.  A new request
is not started: it is answered 91 at once ("issuer or acquirer inoperative":
try again), journaled nowhere and sent to no acquirer, so that its terminal
sends it to another instance, where it is new (its connection is closed
once it has nothing in flight: :mod:`switch.io.server`).  The promises of
spec section 6 still hold:

- a retransmission or repeat (0101, 0201, 0221) of a request already
  journaled gets its original answer (or 94 for other content), as always;
  one of a request in flight here shares its answer (the engine waits for
  it before asking here);
- a reversal (0400, 0401) is never refused: it is recorded and answered as
  always (section 6.1, "reversal answers are fast"); refused, the terminal
  would repeat it, and a switch whose journal no other instance reads
  would never record it;
- an 0800 is answered by the switch itself, as always.

What the journal does not answer (a key never seen, an advice never
confirmed, a key used longer ago than the retransmission window, a request
journaled but never sent) would be new work: 91.
"""
from __future__ import annotations

import logging
from typing import Any, Generator

from switch.core import elsewhere, pipeline
from switch.core.commands import Op

log = logging.getLogger("payswitch")

REFUSED = "91"  # spec section 5: issuer or acquirer inoperative; the terminal tries again
ADMITTED = ("0400",)  # base MTIs handled as usual while draining (0800 never gets here)


def refuses(mti: str) -> bool:
    """Whether a request of this base MTI, not in flight, is looked at here while draining."""
    return mti not in ADMITTED


def answer(engine: Any, msg: Any, mti: str, digest: str, key: tuple[str, str, str], codec: Any
           ) -> Generator[Any, Any, tuple[str, str, bytes]]:
    """The answer, while draining, to a request whose key is in no flight here:
    the journal's (sections 6, 6.1), or 91 without starting anything."""
    rec = yield Op("find", *key)
    if rec is not None:
        rec, verdict = yield from elsewhere.verdict_of(engine, rec, mti, digest)
        if verdict not in (pipeline.RENEW, pipeline.REDO):
            return engine._retransmission(msg, rec, verdict, codec)
    engine.metrics.drain_refused()
    log.info("%s from terminal %s answered %s: draining, not started", msg.mti, msg.get(41), REFUSED)
    return engine._reply(msg, REFUSED, codec)

