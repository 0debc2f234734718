"""The transaction event outbox: final outcomes, written in the journal's own transaction.

Triggers on the ``txn`` table add one row to ``outbox`` when a payment's
answer is journaled (``approved`` or ``declined``), when an approved payment
goes to be reversed (``reversed``: from then on the switch undoes it,
whatever the acquirer says), and when a settlement (0500) is answered
(``settled``).  The row is part of the same SQLite transaction as the
update that caused it: no outcome without its event, no event without its
outcome, and no code path in the engine to forget.

The outbox id is the event's id: the relay (``switch.events``) publishes it
as the NATS message id and the webhook ``id``, so a republished event is
recognised as the same.  Events carry no card data: the masked PAN at most,
the customer token, amounts, codes and times.
"""
from __future__ import annotations

import sqlite3
from typing import NamedTuple

# The event body, as JSON text, from the row the trigger fires on.
_BODY = """json_object(
    'event', {event},
    'txn', NEW.id,
    'rrn', printf('%012d', NEW.id),
    'merchant', NEW.merchant_id,
    'terminal', NEW.terminal_id,
    'mti', NEW.mti,
    'processing_code', NEW.processing_code,
    'kind', NEW.kind,
    'amount', NEW.amount,
    'currency', NEW.currency,
    'code', NEW.response_code,
    'auth_code', NEW.auth_code,
    'pan_masked', NEW.pan_masked,
    'customer_token', NEW.customer_token,
    'at', NEW.updated_at{extra}
)"""

_INSERT = "INSERT INTO outbox (txn_id, merchant_id, event, body, created_at) VALUES (NEW.id, NEW.merchant_id, {event}, {body}, NEW.updated_at)"

_OUTCOME_EVENT = "CASE NEW.response_code WHEN '00' THEN 'approved' ELSE 'declined' END"
_SETTLED_EXTRA = """,
    'totals', (SELECT json_object('credits', credits_count, 'debits', debits_count,
                                  'credits_amount', credits_amount, 'debits_amount', debits_amount)
               FROM settlement WHERE terminal_id = NEW.terminal_id ORDER BY id DESC LIMIT 1)"""

MIGRATION: tuple[str, ...] = (
    "ALTER TABLE txn ADD COLUMN customer_token TEXT",
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        txn_id INTEGER NOT NULL,
        merchant_id TEXT NOT NULL,
        event TEXT NOT NULL,  -- approved | declined | reversed | settled
        body TEXT NOT NULL,   -- the event as JSON (docs/value-added-services.md)
        created_at REAL NOT NULL
    ) STRICT
    """,
    # A payment's answer, journaled once (a record's response_code goes from
    # NULL to its code in the update that stores the response).
    f"""
    CREATE TRIGGER outbox_outcome AFTER UPDATE OF response_code ON txn
    WHEN OLD.response_code IS NULL AND NEW.response_code IS NOT NULL AND NEW.mti IN ('0100', '0200', '0220')
    BEGIN
        {_INSERT.format(event=_OUTCOME_EVENT, body=_BODY.format(event=_OUTCOME_EVENT, extra=''))};
    END
    """,
    # An approved payment that starts to be reversed (terminal 0400, or a
    # late 0400 for one that was answered 00).
    f"""
    CREATE TRIGGER outbox_reversed AFTER UPDATE OF state ON txn
    WHEN NEW.state = 'reversal_pending' AND OLD.state NOT IN ('reversal_pending', 'reversed', 'unmatched')
         AND NEW.response_code = '00' AND NEW.mti IN ('0100', '0200', '0220')
    BEGIN
        {_INSERT.format(event="'reversed'", body=_BODY.format(event="'reversed'", extra=''))};
    END
    """,
    f"""
    CREATE TRIGGER outbox_settled AFTER UPDATE OF response_code ON txn
    WHEN OLD.response_code IS NULL AND NEW.response_code IS NOT NULL AND NEW.mti = '0500'
    BEGIN
        {_INSERT.format(event="'settled'", body=_BODY.format(event="'settled'", extra=_SETTLED_EXTRA))};
    END
    """,
)


# Schema version 6: the same triggers and bodies, their conditions written as
# comparisons.  SQLite evaluates ``x IN ('a', 'b', 'c')`` by filling a
# temporary table of the list, once per run of a program, and a trigger body
# is a program run on every row it fires for: the IN lists of version 4 cost
# an approved payment's update about 10 µs, as much as the rest of the
# trigger.  (benchmarks/journal_batch.py; the condition tests in
# tests/test_events.py hold the semantics.)
_PAYMENT = "(NEW.mti = '0100' OR NEW.mti = '0200' OR NEW.mti = '0220')"
_NOT_UNDONE = "OLD.state <> 'reversal_pending' AND OLD.state <> 'reversed' AND OLD.state <> 'unmatched'"


def outcome_trigger(event: str, insert: str | None = None) -> str:
    """The ``outbox_outcome`` trigger (schema 6 on) with ``event``, an SQL expression
    naming the event of a payment's answer; its row written by ``insert`` (schema 14)
    or, by default, with its JSON body."""
    if insert is None:
        insert = _INSERT.format(event=event, body=_BODY.format(event=event, extra=''))
    return f"""
    CREATE TRIGGER outbox_outcome AFTER UPDATE OF response_code ON txn
    WHEN OLD.response_code IS NULL AND NEW.response_code IS NOT NULL AND {_PAYMENT}
    BEGIN
        {insert};
    END
    """


def reversed_trigger(insert: str) -> str:
    """The ``outbox_reversed`` trigger (schema 6 on), its row written by ``insert``."""
    return f"""
    CREATE TRIGGER outbox_reversed AFTER UPDATE OF state ON txn
    WHEN NEW.state = 'reversal_pending' AND {_NOT_UNDONE}
         AND NEW.response_code = '00' AND {_PAYMENT}
    BEGIN
        {insert};
    END
    """


CHEAPER_CONDITIONS: tuple[str, ...] = (
    "DROP TRIGGER outbox_outcome",
    outcome_trigger(_OUTCOME_EVENT),
    "DROP TRIGGER outbox_reversed",
    reversed_trigger(_INSERT.format(event="'reversed'", body=_BODY.format(event="'reversed'", extra=''))),
)

# Schema 14 (issue 9): a payment's event row is narrow.  The trigger keeps
# what the event says that can still change after it (code, authorization
# code, amount, customer token: a late answer fills in a declined one's
# field 38) and ``created_at`` (the body's ``at``); the body is written when
# the event is read (:func:`read_after`), from those and from the
# transaction's fields that never change once it is journaled.  Building the
# JSON in the trigger cost about 23,000 of the 267,000 instructions that
# SQLite and its binding spent on a purchase (insert, answer, event; counted
# under callgrind); the journal writer process spends 7% less a purchase
# (``benchmarks.loop_cpu --instructions --writer process``).
# Rows written before keep their body; ``settled`` events keep theirs (the
# totals are the settlement's at that moment, and 0500s are rare).
_NARROW_INSERT = (
    "INSERT INTO outbox (txn_id, merchant_id, event, body, created_at, code, auth_code, amount, customer_token) "
    "VALUES (NEW.id, NEW.merchant_id, {event}, '', NEW.updated_at, NEW.response_code, NEW.auth_code, NEW.amount, "
    "NEW.customer_token)"
)
# The same members, in the same order, as the body the triggers of schema 4 to 13 wrote.
_READ_BODY = """json_object(
    'event', o.event,
    'txn', o.txn_id,
    'rrn', printf('%012d', o.txn_id),
    'merchant', o.merchant_id,
    'terminal', t.terminal_id,
    'mti', t.mti,
    'processing_code', t.processing_code,
    'kind', t.kind,
    'amount', o.amount,
    'currency', t.currency,
    'code', o.code,
    'auth_code', o.auth_code,
    'pan_masked', t.pan_masked,
    'customer_token', o.customer_token,
    'at', o.created_at
)"""


def narrow_migration(outcome_event: str) -> tuple[str, ...]:
    """Schema 14: ``outbox_outcome`` (its event named by ``outcome_event``) and
    ``outbox_reversed`` write narrow rows.

    SQLite fires the triggers of one statement newest first: ``outbox_outcome``
    is created last, as before, so an answer that is reversed at once (an
    approval that came after its 0400) still gives ``approved`` before ``reversed``.
    """
    return (
        "ALTER TABLE outbox ADD COLUMN code TEXT",
        "ALTER TABLE outbox ADD COLUMN auth_code TEXT",
        "ALTER TABLE outbox ADD COLUMN amount INTEGER",
        "ALTER TABLE outbox ADD COLUMN customer_token TEXT",
        "DROP TRIGGER outbox_reversed",
        reversed_trigger(_NARROW_INSERT.format(event="'reversed'")),
        "DROP TRIGGER outbox_outcome",
        outcome_trigger(outcome_event, _NARROW_INSERT.format(event=outcome_event)),
    )


# A row with a body (settled, or written before schema 14) is read as it is.
READ_AFTER = f"""
    SELECT o.id, o.merchant_id, o.event, CASE WHEN o.body <> '' THEN o.body ELSE {_READ_BODY} END
    FROM outbox o LEFT JOIN txn t ON t.id = o.txn_id
    WHERE o.id > ? ORDER BY o.id LIMIT ?
"""


class Event(NamedTuple):
    id: int  # the outbox id: NATS message id, webhook id
    merchant_id: str
    event: str
    body: str  # JSON text


def read_after(conn: sqlite3.Connection, after: int, limit: int = 500) -> list[Event]:
    """Events with an id above ``after``, oldest first (any connection to the journal)."""
    rows = conn.execute(READ_AFTER, (after, limit)).fetchall()
    return [Event(*row) for row in rows]
