"""Terminal key state that must outlive the process: session keys and DUKPT counters (spec 8).

Both live in the journal rather than in the software module's key store
file: the journal is already the durable store every switch process opens,
and SQLite's write lock (``BEGIN IMMEDIATE``, WAL) keeps them right when two
processes share it (SO_REUSEPORT workers): a promotion or a counter advance
is one statement, decided inside the database, not a read-modify-write of a
file each process holds its own copy of.  The sandbox's key store is a
read-only file shipped with the package, which rules it out too.

``terminal_key``: a terminal's *current* and *pending* session keys, each
TAK and TPK as the security module exported it (:class:`StoredKey`: sealed
under the software module's master key, or the HSM's cryptogram under its
LMK; never a clear key).  One pending set per terminal: a new 0800/101
replaces it.  :func:`promote` makes the pending set current when a request
verified under the pending TAK, in one transaction, only if that set is
still the pending one.

``dukpt_counter``: the highest KSN counter seen per DUKPT device (BDK name
and KSN with the counter bits cleared).  :func:`advance` raises it and says
whether the request's counter was above it.
"""
from __future__ import annotations

import sqlite3

__all__ = ["MIGRATION", "SLOTS", "store", "load", "load_all", "promote", "advance"]

SLOTS = ("current", "pending")

MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE terminal_key (
        terminal_id TEXT NOT NULL,
        slot TEXT NOT NULL CHECK (slot IN ('current', 'pending')),
        kind TEXT NOT NULL CHECK (kind IN ('tak', 'tpk')),
        algorithm TEXT NOT NULL,
        kcv TEXT NOT NULL,
        blob TEXT NOT NULL,  -- sealed under the module's master key, or under the HSM's LMK
        created_at REAL NOT NULL,
        PRIMARY KEY (terminal_id, slot, kind)
    ) STRICT
    """,
    """
    CREATE TABLE dukpt_counter (
        device TEXT PRIMARY KEY,  -- BDK name ':' KSN with the counter bits cleared
        counter INTEGER NOT NULL,
        updated_at REAL NOT NULL
    ) STRICT
    """,
)

# A stored key: (kind, algorithm, kcv, blob), the fields of switch.security.module.StoredKey.
Row = tuple[str, str, str, str]


def _check(terminal_id: str, slot: str, keys) -> list[Row]:
    if slot not in SLOTS:
        raise ValueError(f"terminal key slot must be one of {', '.join(SLOTS)}, got {slot!r}")
    rows = [tuple(k) for k in keys]
    if sorted(r[0] for r in rows) != ["tak", "tpk"]:
        raise ValueError(f"terminal {terminal_id}: a key set is one TAK and one TPK")
    if not all(len(r) == 4 and all(type(v) is str and v for v in r) for r in rows):
        raise ValueError(f"terminal {terminal_id}: a stored key is (kind, algorithm, kcv, blob), all text")
    return rows


def store(conn: sqlite3.Connection, now: float, terminal_id: str, slot: str, keys) -> None:
    """Put ``keys`` (a TAK and a TPK, as StoredKey) in the terminal's slot, replacing what was there."""
    rows = _check(terminal_id, slot, keys)
    conn.execute("DELETE FROM terminal_key WHERE terminal_id = ? AND slot = ?", (terminal_id, slot))
    conn.executemany(
        "INSERT INTO terminal_key (terminal_id, slot, kind, algorithm, kcv, blob, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(terminal_id, slot, *row, now) for row in rows],
    )


def _rows(cursor) -> dict[str, dict[str, dict[str, Row]]]:
    out: dict[str, dict[str, dict[str, Row]]] = {}
    for terminal_id, slot, kind, algorithm, kcv, blob in cursor:
        out.setdefault(terminal_id, {}).setdefault(slot, {})[kind] = (kind, algorithm, kcv, blob)
    return out


_SELECT = "SELECT terminal_id, slot, kind, algorithm, kcv, blob FROM terminal_key"


def load(conn: sqlite3.Connection, terminal_id: str) -> dict[str, dict[str, Row]]:
    """The terminal's key sets: slot -> kind -> row (empty when it has none)."""
    return _rows(conn.execute(_SELECT + " WHERE terminal_id = ?", (terminal_id,))).get(terminal_id, {})


def load_all(conn: sqlite3.Connection) -> dict[str, dict[str, dict[str, Row]]]:
    """Every terminal's key sets: terminal -> slot -> kind -> row (for start-up)."""
    return _rows(conn.execute(_SELECT + " ORDER BY terminal_id"))


def promote(conn: sqlite3.Connection, terminal_id: str, tak_kcv: str) -> bool:
    """The pending set whose TAK has check value ``tak_kcv`` becomes current; the old current set is dropped.

    True also when that set is current already (another process promoted it);
    False when it is neither (a newer 0800/101 replaced it meanwhile).
    """
    pending = conn.execute(
        "SELECT kcv FROM terminal_key WHERE terminal_id = ? AND slot = 'pending' AND kind = 'tak'", (terminal_id,)
    ).fetchone()
    if pending is not None and pending[0] == tak_kcv:
        conn.execute("DELETE FROM terminal_key WHERE terminal_id = ? AND slot = 'current'", (terminal_id,))
        conn.execute("UPDATE terminal_key SET slot = 'current' WHERE terminal_id = ? AND slot = 'pending'",
                     (terminal_id,))
        return True
    current = conn.execute(
        "SELECT kcv FROM terminal_key WHERE terminal_id = ? AND slot = 'current' AND kind = 'tak'", (terminal_id,)
    ).fetchone()
    return current is not None and current[0] == tak_kcv


def advance(conn: sqlite3.Connection, now: float, device: str, counter: int) -> bool:
    """Raise the device's highest counter to ``counter``: True if it was above (a new KSN), False otherwise."""
    if type(counter) is not int or counter < 1:
        raise ValueError(f"a KSN counter is a positive integer, got {counter!r}")
    cur = conn.execute(
        "INSERT INTO dukpt_counter (device, counter, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (device) DO UPDATE SET counter = excluded.counter, updated_at = excluded.updated_at "
        "WHERE excluded.counter > dukpt_counter.counter",
        (device, counter, now),
    )
    return cur.rowcount == 1
