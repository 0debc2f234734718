"""Decisions of the request pipeline that need no I/O (spec sections 3, 6 and 6.1).

The transaction engine (:mod:`switch.core.engine`) asks here whenever it has
to decide something, so each rule is a plain function with a unit test.
"""
from __future__ import annotations

from switch.core import states
from switch.core.messages import BALANCE
from switch.core.acquirer import Request

SAME, CONFLICT, UNANSWERED, REDO, RENEW, LATE = "same", "conflict", "unanswered", "redo", "renew", "late"

# Requests the switch may simply handle again: reversals are idempotent
# (section 6) and a settlement only compares totals.
_IDEMPOTENT = ("0400", "0500")
# Section 6.1: an advice answered with one of these was not confirmed.
UNCONFIRMED = ("68", "91", "96")


def retransmission(
    *,
    stored_mti: str,
    stored_digest: str,
    stored_state: str,
    stored_code: str | None,
    answered: bool,
    age: float,
    window: float,
    mti: str,
    digest: str,
) -> str:
    """What a request whose key (41, 11, 7) is already journaled gets (sections 6, 6.1).

    ``renew``: the key was last used longer ago than the retransmission window,
    or it names an advice that was never confirmed: the old record gives up
    its key and the request is handled as new (an advice is forwarded again);
    ``late``: the key was named by a reversal before the original came (94);
    ``conflict``: other content (or another MTI) under the same key (94);
    ``same``: the journaled answer again, no second authorization;
    ``redo``: never left the switch, or an unanswered reversal or settlement:
    safe to handle again;
    ``unanswered``: journaled, maybe sent, never answered (the process died in
    flight and recovery queued it for reversal) — never authorized twice.
    """
    if age > window:
        return RENEW
    if stored_state == states.VOID:
        return LATE
    if stored_digest != digest or stored_mti != mti:
        return CONFLICT
    if mti == "0220" and stored_code in UNCONFIRMED:
        return RENEW
    if answered:
        return SAME
    if stored_state == states.RECEIVED or mti in _IDEMPOTENT:
        return REDO
    return UNANSWERED


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


def is_inquiry(processing_code: str | None) -> bool:
    """A balance inquiry (31xxxx): it authorizes no money, so an outcome the switch
    could not confirm has nothing to reverse (and a strict host refuses a 0420 for
    it, which would reach an operator as a refused reversal)."""
    return processing_code is not None and processing_code[:2] == BALANCE


def completion_code(
    *, found: bool, approved: bool, standing: bool, same_card: bool, completed: bool, amount: int, authorized: int,
    same_currency: bool = True,
) -> str | None:
    """Section 6.1: why an 0220 cannot complete its pre-authorization, or None.

    25 (no such approved, standing pre-authorization, or another card), 94
    (already completed), 13 (more than was authorized, nothing, or an amount
    in another currency than the pre-authorization's, which cannot be
    compared with it); the first that applies.
    """
    if not (found and approved and standing and same_card):
        return "25"
    if completed:
        return "94"
    if amount > authorized or amount <= 0 or not same_currency:
        return "13"
    return None


def settlement_code(theirs: tuple[int, int, int, int], ours: tuple[int, int, int, int]) -> str:
    """0510 field 39 (section 3): 00 when the terminal's totals — credits count,
    debits count, credits amount, debits amount — match the journal's, else 95."""
    return "00" if theirs == ours else "95"


def reversal_backoff(attempts: int, first: float, ceiling: float) -> float:
    """Seconds before the next try of a reversal tried ``attempts`` times: doubling, capped."""
    if attempts <= 0:
        return 0.0
    return min(ceiling, first * 2 ** min(attempts - 1, 30))
