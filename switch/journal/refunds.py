"""A merchant's daily refund limit (spec section 6.1), decided by the journal.

Refunds (0200, processing code 20xxxx) without an original may be limited
per merchant, currency and UTC day (:mod:`switch.core.refunds`): only the
refunds in the new one's currency count, a refund journaled without field 49
counting as one in the merchant's currency.  With ``serve --workers`` two refunds of one
merchant can arrive on two worker processes at once, so no process can
count another's refunds in flight: the journal is the arbiter.
:meth:`RefundLimit.insert_refund` counts the merchant's refunds of the day
and inserts the new one only if it fits, in one operation on the writer
(its batch's transaction), so every writer (thread, process, the shared one
of several workers) runs the check and the insert of one refund with no
other operation in between.

What counts: refunds approved and not reversed (``REVERSED_STATES``), and
refunds still at their acquirer (state ``sent``).  A refund that may go to
an acquirer is journaled ``sent`` by the very insert that passes this check
(``switch.core.pipeline.goes_direct``); one ``received`` is one the switch
answers itself (a rejection), which moves no money, and a declined or
rejected one moves none either.  Purchases never run any of this: the
statement is reached only through ``insert_refund`` and uses the partial
index ``txn_refund``.
"""
from __future__ import annotations

from concurrent.futures import Future

from switch.journal import TxnRecord
from switch.journal.statements import BY_KEY, REVERSED, record

SENT = "sent"  # switch.core.states.SENT (the journal does not import the core)
RECEIVED = "received"  # switch.core.states.RECEIVED

# The refunds that count against the limit (see the module documentation).
# The literal substr() term lets SQLite take the partial index txn_refund.
REFUNDS_HELD = f"""
    SELECT coalesce(sum(amount), 0) FROM txn
    WHERE merchant_id = ? AND created_at >= ? AND substr(processing_code, 1, 2) = '20' AND mti = '0200'
      AND coalesce(currency, ?) = ?
      AND (state = '{SENT}' OR (response_code = '00' AND state NOT IN ({REVERSED})))
"""


class RefundLimit:
    """Mixed into :class:`switch.journal.sqlite.SqliteJournal` (its caller's side and writer's side)."""

    def insert_refund(
        self, rec: TxnRecord, limit: int, since: float, currency: str, home: str
    ) -> Future[tuple[TxnRecord | None, bool]]:
        """:meth:`insert` of a refund, only if it fits the merchant's limit in its currency.

        Sums the refunds of ``rec.merchant_id`` in ``currency`` (field 49; a
        refund without one is in ``home``, the merchant's currency) created
        since ``since`` (unix time) that count (approved and standing, or at
        their acquirer), and
        inserts ``rec`` only if that sum plus ``rec.amount`` is at most
        ``limit``.  Result as :meth:`insert`'s: (stored record, True) for a
        new key; (the record holding the key, False) for a key already used,
        whether it fits or not (a retransmission is answered as its
        original); and (None, False) when it does not fit: nothing written.
        A key held by a record still ``received`` (journaled, never sent:
        the switch stopped before it answered) is checked as a new refund.
        """
        try:
            if type(rec.amount) is not int or rec.amount < 0:
                raise ValueError(f"insert_refund needs the refund's amount in minor units, got {rec.amount!r}")
            if type(limit) is not int or limit < 0:
                raise ValueError(f"insert_refund needs the limit in minor units, got {limit!r}")
            if (rec.currency or home) != currency:
                # Amounts in two currencies never add up: the limit is the refund's currency's.
                raise ValueError(f"insert_refund of a refund in {rec.currency or home!r} under a limit in {currency!r}")
            args = self._insert_args(rec)
        except (TypeError, ValueError) as exc:
            return self._failed(exc)
        return self._submit(self._insert_refund, (*args, limit, float(since), currency, home), True)

    def _insert_refund(
        self, rec: TxnRecord, row: tuple, key: tuple, limit: int, since: float, currency: str, home: str
    ) -> tuple[TxnRecord | None, bool]:
        conn = self._conn
        held = conn.execute(REFUNDS_HELD, (rec.merchant_id, since, home, currency)).fetchone()[0]
        if held + rec.amount <= limit:
            return self._insert(rec, row, key)  # a key already used: its record, False
        row = conn.execute(BY_KEY, key).fetchone()
        if row is not None:
            found = record(row)
            if found.state != RECEIVED:
                return self._remember(found), False
        return None, False
