"""A transaction's life, every transition in one table.

Read it against spec sections 3, 6 and 6.1.  The journal stores the state as
text; :func:`advance` is the only way the switch changes it, so an impossible
step (answering a reversed transaction, reversing one never sent) is a bug
that raises instead of a silent inconsistency.

A record is created in one of :data:`INITIAL`: ``received`` (the switch
decides first), ``sent`` (journaled as it leaves for its acquirer: one
durable write instead of two) or ``void`` (a key named by a terminal's 0400
before its original arrived: the late original is answered 94, section 6.1).

    received ──reject──────────────▶ rejected          (the switch answered itself)
    received ──handle──────────────▶ answered          (0400 / 0500 the switch answers from the journal)
    received ──send────────────────▶ sent              (journaled before it left)
    sent ──────answer──────────────▶ answered          (approved or declined)
    sent ──────uncertain───────────▶ reversal_pending  (timeout, lost link, late answer, failure after approval)
    sent ──────crash_recovery──────▶ reversal_pending  (found "sent" at start-up)
    sent ──────reverse─────────────▶ reversal_pending  (terminal 0400 of one whose outcome we never learnt)
    sent ──────unconfirmed─────────▶ answered          (city-card upload not confirmed: never reversed, uploaded again)
    answered ──reverse─────────────▶ reversal_pending  (terminal 0400 of an approval)
    answered ──reverse_declined────▶ answered          (0400 of a decline: nothing to undo)
    reversal_pending ──reverse─────▶ reversal_pending  (reversals are idempotent)
    reversal_pending ──retry───────▶ reversal_pending  (store and forward: 0421 repeats)
    reversal_pending ──reversed────▶ reversed          (acquirer acknowledged)
    reversal_pending ──not_found───▶ unmatched         (acquirer answered 25 past the window: it never had it)
    reversal_pending ──refused─────▶ reversal_refused  (acquirer refused it for good, e.g. 12, 30, 64: an operator's)
    reversed ──────reverse─────────▶ reversed
    unmatched ─────reverse─────────▶ unmatched
    unmatched ─────late_approval───▶ reversal_pending  (the acquirer approved it after all: its answer came late)
    reversal_refused ──reverse─────▶ reversal_refused  (out of the automatic queue: repeating cannot change it)
    reversal_refused ──close───────▶ reversal_closed   (an operator settled it with the acquirer, then closed it)
    reversal_closed ───reverse─────▶ reversal_closed   (a terminal's late 0400: answered 00, nothing changes)
    void ──────────reverse─────────▶ void              (a repeated 0400 of an original never seen)
"""
from __future__ import annotations

RECEIVED = "received"
REJECTED = "rejected"
SENT = "sent"
ANSWERED = "answered"
REVERSAL_PENDING = "reversal_pending"
REVERSED = "reversed"
UNMATCHED = "unmatched"
# The acquirer answered the reversal with a code that repeating it cannot change
# (adapters.card.response_codes.reversal_answer): no more tries; the money may
# still be held there, so an operator settles it with the acquirer (ops/runbook.md).
REVERSAL_REFUSED = "reversal_refused"
# A refused reversal an operator has settled with the acquirer by hand and
# closed through the admin API (switch.core.refused): it no longer counts as
# waiting for anyone, and like any undone payment it counts in no totals.
REVERSAL_CLOSED = "reversal_closed"
VOID = "void"

INITIAL = frozenset({RECEIVED, SENT, VOID})

TRANSITIONS: dict[tuple[str, str], str] = {
    (RECEIVED, "reject"): REJECTED,
    (RECEIVED, "send"): SENT,
    (RECEIVED, "handle"): ANSWERED,
    (SENT, "answer"): ANSWERED,
    (SENT, "uncertain"): REVERSAL_PENDING,
    (SENT, "crash_recovery"): REVERSAL_PENDING,
    (SENT, "reverse"): REVERSAL_PENDING,
    (SENT, "unconfirmed"): ANSWERED,
    (ANSWERED, "reverse"): REVERSAL_PENDING,
    (ANSWERED, "reverse_declined"): ANSWERED,
    (REVERSAL_PENDING, "reverse"): REVERSAL_PENDING,
    (REVERSAL_PENDING, "retry"): REVERSAL_PENDING,
    (REVERSAL_PENDING, "reversed"): REVERSED,
    (REVERSAL_PENDING, "not_found"): UNMATCHED,
    (REVERSAL_PENDING, "refused"): REVERSAL_REFUSED,
    (REVERSED, "reverse"): REVERSED,
    (UNMATCHED, "reverse"): UNMATCHED,
    (UNMATCHED, "late_approval"): REVERSAL_PENDING,
    (REVERSAL_REFUSED, "reverse"): REVERSAL_REFUSED,
    (REVERSAL_REFUSED, "close"): REVERSAL_CLOSED,
    (REVERSAL_CLOSED, "reverse"): REVERSAL_CLOSED,
    (VOID, "reverse"): VOID,
}


class InvalidTransition(RuntimeError):
    """Our own bug: a step the table does not allow."""


def advance(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no transition from {state!r} on {event!r}") from None


def needs_reversal(state: str, response_code: str | None) -> bool:
    """Whether a terminal's 0400 for this transaction has something to undo."""
    if state in (SENT, REVERSAL_PENDING):
        return True  # outcome unknown or already queued: (re)queue, idempotent
    if state == ANSWERED:
        return response_code == "00"
    return False
