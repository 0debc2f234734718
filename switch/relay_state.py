"""The relay's state file (SQLite, default ``<journal>.relay``): each sink's position, the audit log of
every delivery and failed try, and the events parked as undeliverable (:mod:`switch.events`); and its
lock, held by the relay that runs on it (or by ``payswitch relay redeliver`` while it moves a position).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time

from switch import config as config_mod
from switch.journal.outbox import Event

_STATE = (
    "CREATE TABLE IF NOT EXISTS cursor (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL) STRICT",
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,          -- nats, or webhook:<partner>
        event_id INTEGER NOT NULL,
        merchant_id TEXT NOT NULL,
        event TEXT NOT NULL,
        outcome TEXT NOT NULL,       -- sent, or the failure of this try
        at REAL NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",  # pruning by age (events.audit_days)
    # Events a partner refused for good (a 4xx about the event: switch.relay_webhook): not tried again by the relay.
    """CREATE TABLE IF NOT EXISTS parked (
        sink TEXT NOT NULL,          -- webhook:<partner>
        event_id INTEGER NOT NULL,
        merchant_id TEXT NOT NULL,
        event TEXT NOT NULL,
        status TEXT NOT NULL,        -- the partner's answer, e.g. HTTP 404
        at REAL NOT NULL,
        redelivered REAL,            -- when payswitch relay redeliver had it sent again; NULL: still parked
        PRIMARY KEY (sink, event_id)
    ) STRICT""",
)


class InUse(Exception):
    """The state file's lock is held by another process: a relay running on it, or a redeliver under way."""

    def __init__(self, path: str, lock_path: str, holder: str) -> None:
        super().__init__(f"relay state file {path} is in use by process {holder} (a running payswitch relay, or "
                         f"a redeliver; lock {lock_path})")


def lock(cfg: config_mod.Config, path: str):
    """Hold the lock of the state file at ``path``: ``flock`` on ``<path>.lock``, which holds our pid.  The
    kernel releases it when the process ends, killed or crashed too, so a lock file left behind holds
    nothing.  The open lock file (close it to release the lock), or :class:`InUse`."""
    lock_path = f"{path}.lock"
    try:
        f = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as e:
        raise config_mod.ConfigError(f"{cfg.source}: relay state file lock {lock_path} cannot be opened: "
                                     f"{e.strerror or e} - at `$.events.state_file`") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = f.read().strip() or "(unknown)"
        f.close()
        raise InUse(path, lock_path, holder) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class State:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        for statement in _STATE:
            self.conn.execute(statement)

    @classmethod
    def open(cls, cfg: config_mod.Config, path: str) -> State:
        """The state file at ``path``, or a :class:`ConfigError` naming it and the key that sets it."""
        try:
            return cls(path)
        except sqlite3.DatabaseError as e:
            unset = "" if cfg.events.state_file else " (not set: the default, beside the journal)"
            raise config_mod.ConfigError(
                f"{cfg.source}: relay state file {path} is not usable: {e} (moved aside, the relay starts again "
                f"from the first event: see the runbook) - at `$.events.state_file`{unset}") from None

    def cursor(self, sink: str) -> int:
        row = self.conn.execute("SELECT last_id FROM cursor WHERE sink = ?", (sink,)).fetchone()
        return row[0] if row else 0

    def advance(self, sink: str, last_id: int, audit: list[tuple]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES (?, ?, ?, ?, ?, ?)", audit)
            self.conn.execute("INSERT INTO cursor (sink, last_id) VALUES (?, ?) "
                              "ON CONFLICT (sink) DO UPDATE SET last_id = excluded.last_id", (sink, last_id))

    def note(self, sink: str, event: Event, outcome: str) -> None:
        self.conn.execute("INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES (?, ?, ?, ?, ?, ?)",
                          (sink, event.id, event.merchant_id, event.event, outcome, time.time()))

    def prune(self, before: float, chunk: int) -> int:
        """Delete up to ``chunk`` audit rows older than ``before`` (unix time); how many.  Positions and
        parked events are kept: only the history of tries goes."""
        return self.conn.execute("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? LIMIT ?)",
                                 (before, chunk)).rowcount

    def park(self, sink: str, event: Event, status: str) -> None:
        """Record ``event`` as undeliverable to ``sink`` (its audit row says so too), at once: durable before the
        relay moves past it."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO parked (sink, event_id, merchant_id, event, status, at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sink, event_id) DO UPDATE SET status = excluded.status, at = excluded.at, "
                "redelivered = NULL", (sink, event.id, event.merchant_id, event.event, status, now))
            self.conn.execute(
                "INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES (?, ?, ?, ?, ?, ?)",
                (sink, event.id, event.merchant_id, event.event, f"parked: {status}", now))
