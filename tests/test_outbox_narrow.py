"""Schema 14: payment events are narrow rows whose body is written when read; partners see what they saw before."""
from __future__ import annotations

import itertools
import json
import sqlite3

from switch.journal.outbox import read_after
from switch.journal.schema import MIGRATIONS, SCHEMA_VERSION
from switch.journal.uploads import NARROW_EVENTS
from tests.test_outbox import CODES, migrated

NARROW = MIGRATIONS.index(NARROW_EVENTS) + 1  # the schema version that made the rows narrow

MTIS = ("0100", "0200", "0220", "0400", "0500")
STATES = ("sent", "answered", "reversal_pending", "reversed", "unmatched")


def drive(conn: sqlite3.Connection, first: int = 1) -> None:
    """Every payment MTI from every state and code to every other, then what changes after an answer."""
    conn.execute(
        "INSERT INTO settlement (terminal_id, accepted, credits_count, debits_count, credits_amount, "
        "debits_amount, last_txn_id, created_at) VALUES ('T1', 1, 1, 2, 300, 400, 0, 1.0)"
    )
    stan = itertools.count(first)
    for mti, old_state, old_code, new_state, new_code in itertools.product(MTIS, STATES, CODES, STATES, CODES):
        n = next(stan)
        cur = conn.execute(
            "INSERT INTO txn (terminal_id, merchant_id, mti, stan, transmission_time, processing_code, amount, "
            "currency, kind, pan_masked, content_digest, state, response_code, reversal_attempts, created_at, "
            "updated_at, customer_token, upload_key) VALUES ('T1', 'M1', ?, ?, '1124065401', '000000', 1000, '978', "
            "'card', '411111******1111', 'd', ?, ?, 0, 1.0, 1.0, ?, ?)",
            (mti, "%06d" % n, old_state, old_code, None if n % 3 else "t1abc", "u1k" if mti == "0220" else None),
        )
        txn = cur.lastrowid
        if mti == "0220" and n % 2:
            conn.execute("UPDATE txn SET upload_of = ? WHERE id = ?", (txn if n % 4 == 1 else 1, txn))
        conn.execute(
            "UPDATE txn SET state = ?, response_code = ?, auth_code = ?, updated_at = ? WHERE id = ?",
            (new_state, new_code, "A%05d" % n if new_code == "00" else None, 2.0 + n / 1000, txn),
        )
        # After its event: a late answer's field 38, a token, a discount, a reversal going on.
        conn.execute("UPDATE txn SET auth_code = 'LATE01', amount = 1, customer_token = 't1zzz', "
                     "updated_at = 9.0 WHERE id = ?", (txn,))


def events(conn: sqlite3.Connection) -> list[tuple]:
    return [(e.id, e.merchant_id, e.event, json.loads(e.body)) for e in read_after(conn, 0, 1_000_000)]


def test_partners_get_the_events_the_wide_rows_gave():
    wide = migrated(NARROW - 1)
    drive(wide)
    before = [(i, m, e, json.loads(b)) for i, m, e, b in
              wide.execute("SELECT id, merchant_id, event, body FROM outbox ORDER BY id")]
    narrow = migrated(SCHEMA_VERSION)
    drive(narrow)
    after = events(narrow)
    assert after == before
    assert {e for _, _, e, _ in after} == {"approved", "declined", "duplicate", "reversed", "settled"}
    # Taken when the event happened, not when it is read.
    assert not any(body.get("auth_code") == "LATE01" or body.get("amount") == 1 for *_, body in after)
    assert any(body.get("customer_token") == "t1abc" for *_, body in after)


def test_payment_event_rows_carry_no_body_and_settled_ones_do():
    conn = migrated(SCHEMA_VERSION)
    drive(conn)
    kinds = dict(conn.execute("SELECT event, max(length(body)) FROM outbox GROUP BY event").fetchall())
    assert kinds["settled"] > 0
    assert all(size == 0 for event, size in kinds.items() if event != "settled")


def test_rows_written_before_the_migration_keep_their_body():
    conn = migrated(NARROW - 1)
    drive(conn)
    before = [(i, m, e, json.loads(b)) for i, m, e, b in
              conn.execute("SELECT id, merchant_id, event, body FROM outbox ORDER BY id")]
    for statement in MIGRATIONS[NARROW - 1]:
        conn.execute(statement)
    conn.execute("UPDATE txn SET auth_code = 'AFTER1' WHERE id = 1")  # no event read changes
    assert events(conn) == before
    drive(conn, 100_000)  # and new events come narrow, after the old ones
    later = events(conn)
    assert later[: len(before)] == before and len(later) == 2 * len(before)
