"""The outbox triggers of schema version 6 fire exactly as those of version 4 did."""
from __future__ import annotations

import itertools
import sqlite3

from switch.journal import TxnRecord
from switch.journal.schema import MIGRATIONS, SCHEMA_VERSION
from switch.journal.sqlite import SqliteJournal

MTIS = ("0100", "0200", "0220", "0400", "0500", "0800")
STATES = ("received", "sent", "answered", "reversal_pending", "reversed", "unmatched", "void")
CODES = (None, "00", "05")


def migrated(upto: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for migration in MIGRATIONS[:upto]:
        for statement in migration:
            conn.execute(statement)
    return conn


def drive(conn: sqlite3.Connection) -> list[tuple]:
    """Every MTI, from every state and response code, to every state and code; the outbox it leaves."""
    conn.execute(
        "INSERT INTO settlement (terminal_id, accepted, credits_count, debits_count, credits_amount, "
        "debits_amount, last_txn_id, created_at) VALUES ('T1', 1, 1, 2, 300, 400, 0, 1.0)"
    )
    stan = itertools.count(1)
    for mti, old_state, old_code, new_state, new_code in itertools.product(MTIS, STATES, CODES, STATES, CODES):
        cur = conn.execute(
            "INSERT INTO txn (terminal_id, merchant_id, mti, stan, transmission_time, processing_code, amount, "
            "currency, kind, pan_masked, content_digest, state, response_code, reversal_attempts, created_at, "
            "updated_at) VALUES ('T1', 'M1', ?, ?, '1124065401', '000000', 1000, '978', 'card', "
            "'411111******1111', 'd', ?, ?, 0, 1.0, 1.0)",
            (mti, "%06d" % next(stan), old_state, old_code),
        )
        conn.execute(
            "UPDATE txn SET state = ?, response_code = ?, updated_at = 2.0 WHERE id = ?",
            (new_state, new_code, cur.lastrowid),
        )
    return conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()


def test_the_version_5_triggers_fire_as_version_4_did():
    before = drive(migrated(4))
    after = drive(migrated(6))
    assert after == before
    events = {row[3] for row in after}
    assert events == {"approved", "declined", "reversed", "settled"}


def test_no_trigger_condition_holds_an_in_list():
    # SQLite fills a temporary table for an IN list on every run of a
    # trigger: the hot path's triggers compare instead (switch.journal.outbox).
    conn = migrated(SCHEMA_VERSION)
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"):
        condition = sql.split("BEGIN")[0]
        assert " IN (" not in condition.upper(), name


def test_a_version_4_journal_migrates_and_keeps_its_events(tmp_path):
    path = tmp_path / "journal.sqlite"
    conn = migrated(4)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT")
    conn.executemany("INSERT INTO schema_version VALUES (?)", [(v,) for v in range(1, 5)])
    conn.execute(
        "INSERT INTO txn (terminal_id, merchant_id, mti, stan, transmission_time, kind, content_digest, state, "
        "reversal_attempts, created_at, updated_at) VALUES ('T1', 'M1', '0200', '000001', '1124065401', 'card', "
        "'d', 'sent', 0, 1.0, 1.0)"
    )
    conn.execute("VACUUM INTO ?", (str(path),))
    conn.close()
    j = SqliteJournal(str(path))
    try:
        answered = j.update(1, state="answered", response_code="00").result(timeout=10)
        assert answered.response_code == "00"
        second, _ = j.insert(TxnRecord(terminal_id="T1", merchant_id="M1", mti="0200", stan="000002",
                                       transmission_time="1124065401")).result(timeout=10)
        j.update(second.id, state="answered", response_code="05").result(timeout=10)
    finally:
        j.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("SELECT event FROM outbox ORDER BY id").fetchall() == [("approved",), ("declined",)]
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "txn_terminal" not in indexes and "txn_key" in indexes
    plan = " ".join(row[3] for row in db.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM txn WHERE terminal_id = 'T1' AND answered_at > 0"
    ))
    assert "USING INDEX txn_key (terminal_id=?)" in plan
