"""Refunds without an original (spec section 6.1): the merchant's limits, without I/O.

A refund above the merchant's single-refund limit is refused here (58).  The
daily limit is the journal's to decide (:mod:`switch.journal.refunds`): it
inserts the refund only if it fits, in one operation, because worker
processes share the journal, not their refunds in flight.
"""
from __future__ import annotations

from typing import Any, Generator

import msgspec

from switch.core import messages, states
from switch.core.commands import Op
from switch.journal import TxnRecord

Gen = Generator[Any, Any, Any]


def daily_max(engine: Any, msg, merchant: str) -> int | None:
    """Section 6.1: refunds without an original, per merchant; beyond a limit, 58.

    The single-refund limit is checked here; the daily one (returned, None
    if there is none) by the journal, which inserts the refund only if it
    fits (:func:`insert`).
    """
    limits = engine.merchants[merchant]
    if limits.refund_max is not None and int(msg[4]) > limits.refund_max:
        raise messages.Rejection("58", f"refund above the merchant's single-refund limit {limits.refund_max}")
    return limits.refund_daily_max


def insert(engine: Any, fresh: TxnRecord, limit: int) -> Gen:
    """The journal's insert of a refund under a daily limit: (record, created, rejection).

    Over the limit, nothing was written: the refund is journaled as the
    switch's own answer, 58 (or finds the record holding its key)."""
    now = engine.clock()
    rec, created = yield Op("insert_refund", fresh, limit, now - now % 86400)  # the UTC day
    if rec is not None:
        return rec, created, None
    # Never sent: journaled as the switch's own answer, without its host STAN or card.
    refused = msgspec.structs.replace(fresh, state=states.RECEIVED, host_stan=None, host_time=None,
                                      card_sealed=None)
    rec, created = yield Op("insert", refused)
    return rec, created, messages.Rejection("58", f"refunds today would exceed the merchant's limit {limit}")
