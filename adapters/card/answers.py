"""An acquirer's answer on the card host link: whether it answers the message
sent, and what it means (sans-I/O, like :mod:`adapters.card.hostlink`, which
re-exports these names).

What it means for the terminal is :mod:`adapters.card.response_codes`; here
it becomes the :class:`~switch.core.acquirer.Result` of a request or the
outcome of a reversal.
"""
from __future__ import annotations

from typing import Any

import cython

from adapters.card.inflight import Pending
from adapters.card.messages import acquirer_ref, answers, isdigit
from adapters.card.response_codes import AMOUNT_REFUSALS, amount_held, reversal_answer, terminal_answer, well_formed
from native.iso8583_message import Message  # a type read by Cython too: answers.pxd
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Refused, Result

RC_MALFUNCTION = "96"  # the acquirer answered without field 39
DUPLICATE = "94"  # duplicate transmission


def reversal_outcome(response_code: str | None, held_known: bool = True, mti: str = "0420") -> str:
    """What an 0430 means for the switch: 00 reversed, 25 original not found
    (the switch decides how long to keep trying), a transient or unknown code:
    try again, a refusal no repeat can change (12, 30, 64...): :class:`Refused`
    (:func:`adapters.card.response_codes.reversal_answer`).  A refusal of the
    amount (13, 64) when the switch never had the original's answer
    (``held_known`` False) is ``held_unknown``: a late answer may yet say what
    the acquirer holds.  A 94 (duplicate transmission) to a first try
    (``mti`` 0420) says the host holds an 0420 under these keys it has not
    answered for: it is repeated as an 0421, which a host takes as a repeat."""
    if response_code == DUPLICATE and mti == "0420":
        return RETRY
    outcome, why = reversal_answer(response_code)
    if outcome == "refused":
        return Refused(response_code, why, held_unknown=not held_known and response_code in AMOUNT_REFUSALS)
    return {"reversed": REVERSED, "not_found": NOT_FOUND}.get(outcome, RETRY)


@cython.ccall
@cython.locals(f=cython.int)
def field_of(msg: Any, f: int) -> Any:
    """``msg.get(f)``.  Compiled, a decoded :class:`native.iso8583_message.Message`
    (what the link receives) is read in C, as its ``get`` reads it
    (native/iso8583_message.pxd): no bound method and no call through Python
    for each of the dozen fields an answer is read for."""
    if cython.compiled and type(msg) is Message:
        return field_value(msg, f)  # noqa: F821  (cimported: answers.pxd, inline in native/fields.pxd)
    return msg.get(f)


@cython.ccall
@cython.locals(pending=Pending)
def mismatch(pending: Pending, msg: Any, mti: str) -> str | None:
    """Why ``msg`` is not the answer to ``pending`` (None: it is).

    Its MTI must fit; fields 7, 41 and 42, when it repeats them, must be the
    ones sent (an answer without field 7 is matched by the one sent); and its
    processing code may change the account types, never the transaction type
    (the first two digits: a refund's answer is no purchase's)."""
    if mti not in answers(pending.mti):
        return f"answer MTI does not fit the request {pending.mti}"
    f7 = field_of(msg, 7)
    if f7 is not None and f7 != pending.f7:
        return "field 7 does not match the request"
    # Most answers repeat fields 41 and 42 exactly: equal, _differs is not asked.
    got, sent = field_of(msg, 41), pending.terminal_id
    if got != sent and _differs(got, sent):
        return "field 41 does not match the request"
    got, sent = field_of(msg, 42), pending.merchant_id
    if got != sent and _differs(got, sent):
        return "field 42 does not match the request"
    code = field_of(msg, 3)
    sent = pending.processing_code
    # (Most answers repeat field 3 as sent: equal, no slicing.)
    if code is not None and sent is not None and code != sent and str(code)[:2] != sent[:2]:
        return "field 3 names another transaction type than the request's"
    return None


def _differs(got: Any, sent: str | None) -> bool:
    """A repeated field 41 or 42 that is not the one sent (trailing spaces aside)."""
    return got is not None and sent is not None and got != sent and str(got).rstrip() != str(sent).rstrip()


@cython.ccall
@cython.locals(pending=Pending)
def result_from_answer(msg: Any, pending: Pending) -> Result:
    """0110/0210/0230 -> Result: 39 as section 5 has it (:mod:`adapters.card.response_codes`),
    38, 55; acquirer_ref = stan|f7|rrn, and |the host's code when the terminal gets another."""
    rrn = field_of(msg, 37) or pending.rrn
    rc = field_of(msg, 39)
    if rc is None:
        # An answer without a response code tells us nothing: treat as unknown.
        return Result(response_code=RC_MALFUNCTION, acquirer_ref=acquirer_ref(pending.stan, pending.f7, rrn),
                      uncertain=True)
    approved, host_currency = field_of(msg, 4), field_of(msg, 49)
    if (rc == "00" and (approved is None or (approved == pending.amount and isdigit(approved)))
            and (host_currency is None or host_currency == pending.currency)):
        # The common answer, a plain approval of the amount and currency sent: terminal_answer
        # would say 00 too (it is pure Python and builds its reason, for nothing here).
        ref = acquirer_ref(pending.stan, pending.f7, rrn)
        return Result(response_code=rc, auth_code=field_of(msg, 38), acquirer_ref=ref, icc=field_of(msg, 55))
    answer = terminal_answer(rc, requested=pending.amount, approved=approved,
                             processing_code=pending.processing_code, currency=pending.currency,
                             host_currency=host_currency)
    if answer.code == rc:
        ref = acquirer_ref(pending.stan, pending.f7, rrn)
        return Result(response_code=rc, auth_code=field_of(msg, 38), acquirer_ref=ref, icc=field_of(msg, 55))
    host_code = rc if well_formed(rc) else "??"
    held = amount_held(rc, requested=pending.amount, approved=approved, currency=pending.currency,
                       host_currency=host_currency) if answer.reverse else None
    ref = acquirer_ref(pending.stan, pending.f7, rrn, host_code, *(held or ()))
    if answer.reverse:
        # Money may stay authorized at the host and the terminal is told otherwise: reversed,
        # as an answer the switch cannot trust is.  The host's field 38 is kept (journaled):
        # a strict host matches the reversal by it.
        return Result(response_code=answer.code, auth_code=field_of(msg, 38), acquirer_ref=ref, uncertain=True,
                      acquirer_code=host_code, acquirer_reason=answer.why)
    return Result(response_code=answer.code, auth_code=field_of(msg, 38), acquirer_ref=ref, icc=field_of(msg, 55),
                  acquirer_code=host_code, acquirer_reason=answer.why)
