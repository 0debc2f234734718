"""Refunds without an original (spec section 6.1): the merchant's limits, without I/O.

Each limit is in one currency's minor units: a number is in the merchant's
``currency``, a table names its currencies (``{"978" = 100000, "392" =
50000}``).  Amounts in two currencies never add up (1,000 JPY is not 10.00
EUR), so a refund is held against the limits of its own field 49 (absent:
the merchant's currency), and a refund in a currency that a limit the
merchant sets does not name is refused (12, as a wallet answers another
currency): it never passes unlimited.

A refund above the single-refund limit is refused here (58).  The daily
limit is the journal's to decide (:mod:`switch.journal.refunds`): it inserts
the refund only if the day's refunds in its currency leave room, in one
operation, because worker processes share the journal, not their refunds
in flight.
"""
from __future__ import annotations

from typing import Any, Generator

import msgspec

from switch.core import messages, states
from switch.core.commands import Op
from switch.journal import TxnRecord

Gen = Generator[Any, Any, Any]


def limit_in(limit: int | dict[str, int] | None, currency: str, home: str) -> int | None:
    """``limit`` (a merchant's refund_max or refund_daily_max) for refunds in ``currency``;
    None when there is none.  Raises :class:`Rejection` 12 when ``limit`` is set but not
    in ``currency`` (``home``: the merchant's currency, which a plain number is in)."""
    if limit is None:
        return None
    found = limit.get(currency) if isinstance(limit, dict) else limit if currency == home else None
    if found is None:
        named = ", ".join(sorted(limit)) if isinstance(limit, dict) else home
        raise messages.Rejection("12", f"refund in currency {currency}: the merchant's refund limits are in {named}")
    return found


def daily_max(engine: Any, msg, merchant: str) -> int | None:
    """Section 6.1: refunds without an original, per merchant and currency; beyond a limit, 58.

    The single-refund limit is checked here; the daily one (returned, None
    if there is none) by the journal, which inserts the refund only if it
    fits (:func:`insert`).
    """
    limits = engine.merchants[merchant]
    currency = msg.get(49) or limits.currency
    most = limit_in(limits.refund_max, currency, limits.currency)
    daily = limit_in(limits.refund_daily_max, currency, limits.currency)
    if most is not None and int(msg[4]) > most:
        raise messages.Rejection("58", f"refund above the merchant's single-refund limit {most} ({currency})")
    return daily


def insert(engine: Any, fresh: TxnRecord, limit: int) -> Gen:
    """The journal's insert of a refund under a daily limit: (record, created, rejection).

    Over the limit, nothing was written: the refund is journaled as the
    switch's own answer, 58 (or finds the record holding its key)."""
    now = engine.clock()
    home = engine.merchants[fresh.merchant_id].currency  # what a refund without field 49 is in
    currency = fresh.currency or home
    rec, created = yield Op("insert_refund", fresh, limit, now - now % 86400, currency, home)  # the UTC day
    if rec is not None:
        return rec, created, None
    # Never sent: journaled as the switch's own answer, without its host STAN or card.
    refused = msgspec.structs.replace(fresh, state=states.RECEIVED, host_stan=None, host_time=None,
                                      card_sealed=None)
    rec, created = yield Op("insert", refused)
    return rec, created, messages.Rejection(
        "58", f"refunds today in {currency} would exceed the merchant's limit {limit}")
