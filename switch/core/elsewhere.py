"""A request whose original is being answered by another worker process.

With ``serve --workers N`` the kernel spreads terminal connections over N
processes; a terminal that reconnects may send its retransmission (or its
repeat, 0201) to another worker than the one still authorizing the original.
That worker has no flight for the key: only the journal knows.  Spec sections
6 and 6.1 say the retransmission gets the original's answer (\"answered exactly
as that request was, or is being, answered\") and is never authorized twice,
so the worker waits for the journal to show the original's outcome instead of
answering 96 (\"died in flight\") or handling it again.

The wait ends when the record is answered, leaves ``received``/``sent`` (a
reversal queued by recovery after its worker died: 96), or the original's own
deadline (its arrival plus ``response_timeout``) passes.

The other way round: the terminal's 0400 for a request in flight lands on
another worker, which queues the reversal in the journal (``sent`` →
``reversal_pending``) and answers 00.  The worker holding the original then
finds, when it journals the acquirer's answer, that the record moved on
(its update is conditional on ``sent``): it answers 68, never 00, and leaves
the reversal queued (section 6.1: "an original still in flight when its
reversal arrives is never answered 00").
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Generator

from switch.core import messages
from switch.core import pipeline, states
from switch.core.commands import Op, Pause
from switch.journal import TxnRecord

log = logging.getLogger("payswitch")

POLL = 0.05  # seconds between two looks at the journal
_IN_FLIGHT = (states.RECEIVED, states.SENT)


def maybe_elsewhere(rec: TxnRecord, verdict: str, mti: str) -> bool:
    """Whether an unanswered record may be in flight in another worker (and worth waiting for)."""
    if verdict not in (pipeline.UNANSWERED, pipeline.REDO) or rec.response is not None:
        return False
    return rec.state in _IN_FLIGHT and mti not in ("0400", "0500")  # those are simply handled again


def await_original(rec: TxnRecord, deadline: float, clock: Callable[[], float]) -> Generator[Any, Any, TxnRecord]:
    """Look at the journal until ``rec`` is answered or leaves flight, or ``deadline`` passes."""
    while rec.response is None and rec.state in _IN_FLIGHT:
        left = deadline - clock()
        if left <= 0:
            break
        yield Pause(min(POLL, left))
        fresh = yield Op("get", rec.id)
        if fresh is None:
            break
        rec = fresh
    return rec


def verdict_of(engine: Any, rec: TxnRecord, mti: str, digest: str) -> Generator[Any, Any, tuple[TxnRecord, str]]:
    """(the record, pipeline's verdict on the request under its key), after waiting for
    an original that may be in flight in another worker (section 6.1)."""
    verdict = _judge(engine, rec, mti, digest)
    if engine.shared_journal and maybe_elsewhere(rec, verdict, mti):
        # Its original may be in flight in another worker: its answer is ours.
        rec = yield from await_original(rec, rec.created_at + engine.cfg.response_timeout, engine.clock)
        verdict = _judge(engine, rec, mti, digest)
    return rec, verdict


def _judge(engine: Any, rec: TxnRecord, mti: str, digest: str) -> str:
    return pipeline.retransmission(
        stored_mti=rec.mti, stored_digest=rec.content_digest, stored_state=rec.state,
        stored_code=rec.response_code, answered=rec.response is not None,
        age=engine.clock() - rec.created_at, window=engine.cfg.retransmission_window, mti=mti, digest=digest,
    )


def reversed_meanwhile(engine: Any, msg: Any, rec: TxnRecord, result: Any, codec: Any,
                       pan: str | None = None) -> Generator[Any, Any, bytes]:
    """The original's answer when its reversal was queued by another worker meanwhile: 68.

    Its state stays as the reversal left it; the answer and the acquirer's
    references are journaled (a retransmission gets the 68, the reversal names
    the authorization), and so is its card number, sealed, which the worker
    that queued the reversal never saw (for hosts that want field 2 repeated).
    """
    log.info("rrn %s: reversed by the terminal (on another worker) while at the acquirer; answered 68", rec.rrn)
    if pan:
        yield from engine.reversals.keep_card(rec.id, pan)
    resp = messages.build_response(msg, "68", rec.rrn)
    body = engine.term.encode(resp)
    yield Op("update", rec.id, response=body, response_code="68", auth_code=result.auth_code,
             acquirer_ref=result.acquirer_ref)
    return body if codec is engine.term else codec.encode(resp)
