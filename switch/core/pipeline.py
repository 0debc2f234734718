"""Decisions of the request pipeline that need no I/O (spec sections 3 and 6).

``switch.io.service`` drives a request through the journal and the acquirers;
whenever it has to decide something, it asks here, so each rule is a plain
function with a unit test.
"""
from __future__ import annotations

from switch.core.acquirer import Request

SAME, CONFLICT, UNANSWERED, REDO = "same", "conflict", "unanswered", "redo"

# Requests the switch may simply handle again: reversals are idempotent
# (section 6) and a settlement only compares totals.
_IDEMPOTENT = ("0400", "0500")


def retransmission(stored_mti: str, stored_digest: str, answered: bool, mti: str, digest: str) -> str:
    """What a request whose key (41, 11, 7) is already journaled gets (section 6).

    ``same``: the journaled answer again, no second authorization;
    ``conflict``: other content (or another MTI) under the same key, answered 94;
    ``unanswered``: journaled but never answered (the process died in flight and
    recovery queued it for reversal) — an authorization must not happen twice;
    ``redo``: an unanswered reversal or settlement, safe to handle again.
    """
    if stored_digest != digest or stored_mti != mti:
        return CONFLICT
    if answered:
        return SAME
    return REDO if mti in _IDEMPOTENT else UNANSWERED


def goes_direct(mti: str, kind: str, has_original: bool, routed: bool) -> bool:
    """Whether a request goes straight to its route's acquirer.

    Such a request is journaled as ``sent`` in its very insert: one durable write
    before it leaves instead of two.  Reversals, settlements, completions (which
    follow their pre-authorization's acquirer) and rejections take the long way.
    """
    if not routed:
        return False
    if mti in ("0100", "0200"):
        return True
    return mti == "0220" and not has_original and kind == "citycard"


def is_offline_advice(request: Request) -> bool:
    """A city-card 0220 upload: the card already paid offline.

    Reversing one we could not confirm would hand the money back to a card that
    spent it; the terminal uploads it again instead, and the clearing centre
    de-duplicates on (card, counter).
    """
    return request.mti == "0220" and request.kind == "citycard"


def settlement_code(theirs: tuple[int, int, int, int], ours: tuple[int, int, int, int]) -> str:
    """0510 field 39 (section 3): 00 when the terminal's totals — credits count,
    debits count, credits amount, debits amount — match the journal's, else 95."""
    return "00" if theirs == ours else "95"
