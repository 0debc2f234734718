"""The simulation's journal (tests/simulation.py): the real SQLite journal in memory, made
for thousands of worlds a run without migrating each one's schema anew."""
from __future__ import annotations

import functools
import sqlite3
import threading

from switch.journal import files, schema
from switch.journal.sqlite import SqliteJournal


@functools.cache
def _empty_journal() -> sqlite3.Connection:
    """An empty journal in memory at the current schema version, migrated once per process."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    schema.migrate(conn, ":memory:")
    return conn


class MemoryJournal(SqliteJournal):
    """The real SQLite journal in memory, its database a copy of :func:`_empty_journal` made
    as it opens (85 schema statements anew were a fifth of a world's time): its own
    ``_open`` then finds it at the current version and migrates nothing."""

    def _open(self) -> None:
        real, here = files.open_database, threading.get_ident()

        def open_database(path: str, busy_timeout: float):
            conn, claimed = real(path, busy_timeout)
            if path == ":memory:" and threading.get_ident() == here:
                _empty_journal().backup(conn)
            return conn, claimed

        files.open_database = open_database
        try:
            super()._open()
        finally:
            files.open_database = real
