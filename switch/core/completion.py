"""Completions: an 0220 naming a pre-authorization in field 90 (spec sections 3 and 6.1).

A pre-authorization is completed at most once (94), never above its amount
(13), only with its own card and while it stands (25).  A completion whose
outcome was uncertain (68, 91, 96) does not count: the switch reverses it at
the host like any uncertain outcome, and the terminal's next completion is
forwarded.  A host completes a pre-authorization once, so that next one must
reach it after the reversal of the uncertain one, never before it (else the
host answers 94 and then undoes the only completion it had): while an
earlier completion of the same pre-authorization waits for its reversal, the
next one waits too, within its terminal's budget; if the reversal is still
not acknowledged then, it is answered 91 without being sent, and the
terminal delivers it again.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Generator

from switch.core import messages
from switch.core import pipeline
from switch.core.commands import Op, Pause
from switch.journal import REVERSED_STATES, TxnRecord, same_pan

if TYPE_CHECKING:
    from switch.core.commands import Flight
    from switch.core.engine import Engine

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

POLL = 0.05  # seconds between two looks at the reversal queue


def complete(engine: "Engine", msg, rec: TxnRecord, kind: str, pan: str | None, pan_hash: str | None, tlv: dict,
             flight: "Flight", codec) -> Gen:
    """The completion ``rec`` of the pre-authorization its field 90 names: checked, then sent
    to the pre-authorization's acquirer."""
    o_mti, o_stan, o_time = messages.original_key(msg[90])
    orig = None
    if o_mti == "0100":
        orig = yield Op("find", msg[41], o_stan, o_time)
    found = orig is not None and orig.mti == "0100" and bool(orig.acquirer)
    completed = claimed = False
    if found and orig.response_code == "00" and orig.state not in REVERSED_STATES:
        # Claimed before the journal is asked, so two completions at once
        # cannot both find the pre-authorization open.
        if orig.id in engine.completing:
            completed = True
        else:
            engine.completing.add(orig.id)
            claimed = True
            try:
                completed = (yield Op("find_completion", orig.id)) is not None
            except BaseException:
                engine.completing.discard(orig.id)
                raise
    code = pipeline.completion_code(
        found=found,
        approved=found and orig.response_code == "00",
        standing=found and orig.state not in REVERSED_STATES,
        same_card=not found or pan_hash is None or same_card(pan, pan_hash, orig.pan_hash, engine.key),
        completed=completed,
        amount=int(msg[4]),
        authorized=orig.amount or 0 if found else 0,
        same_currency=not found or msg.get(49) == orig.currency,
    )
    try:
        if code is None:
            # Waited for no longer than leaves the acquirer its whole timeout.
            until = engine._budget_end(rec, flight) - engine.acquirer_cfg[orig.acquirer].timeout
            if not (yield from _after_reversals(engine, orig.id, rec.id, until)):
                code = "91"
        if code is not None:
            reason = {"25": "no standing pre-authorization of this card to complete",
                      "94": "the pre-authorization is already completed",
                      "13": "completion of nothing, above the pre-authorized amount or in another currency",
                      "91": "an earlier completion of this pre-authorization is still being reversed"}[code]
            return (yield from engine._answer_self(msg, rec, messages.Rejection(code, reason), codec,
                                                   orig.kind if found else kind))
        original = engine.reversals.original_of(orig, pan)
        request = messages.build_request(msg, txn_id=rec.id, kind=orig.kind, rrn=rec.rrn, pan=pan, tlv=tlv,
                                  original=original, mti="0220")
        return (yield from engine._authorize(msg, rec, [orig.acquirer], request, flight, codec, orig.kind,
                                             original_id=orig.id, kind=orig.kind))
    finally:
        if claimed:
            engine.completing.discard(orig.id)


def classify(engine: "Engine", msg, tlv: dict) -> tuple[str, Any, str | None]:
    """(kind, route, card number) of a request carrying field 90 and a card number.

    A completion goes to its pre-authorization's acquirer, not to a route,
    and must carry the pre-authorization's card (section 6.1): a card number
    no route takes, or one that fails the Luhn check, is not that card, and
    is answered 25 by :func:`complete` (the first code of 25, 94, 13), not 14.
    Any other request is classified as :meth:`Engine._classify` does.
    """
    try:
        return engine._classify(msg, tlv)
    except messages.Rejection as r:
        pan = messages.pan_of(msg)
        if msg.mti[:3] != "022" or r.code != "14" or pan is None or not 8 <= len(pan) <= 19:
            raise  # not a card number at all: 14
        return "card", None, pan


def _after_reversals(engine: "Engine", preauth_id: int, own_id: int, until: float) -> Gen:
    """Wait until no other completion of ``preauth_id`` waits for its reversal at the host.

    True when none does (at once, or before ``until``); False when one still
    does at ``until``.
    """
    while True:
        # One indexed look-up (txn_original), however long the reversal queue is.
        pending = yield Op("reversing_completion", preauth_id, own_id)
        if pending is None:
            return True
        left = until - engine.clock()
        if left <= 0:
            log.info("completion txn %d: txn %d, an earlier completion of pre-authorization txn %d, is still "
                     "being reversed; answered 91 unsent", own_id, pending.id, preauth_id)
            return False
        yield Pause(min(POLL, left))


def same_card(pan: str, pan_hash: str, stored: str | None, key: bytes) -> bool:
    """Whether a journaled pan_hash, of this key version or an older one, is this card's."""
    return stored is not None and (pan_hash == stored or same_pan(pan, stored, key))
