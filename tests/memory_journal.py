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


class Answer:
    """What a journal operation returns in the simulation: resolved by ``deliver`` before
    the call returns (the journal runs inline), as the switch's loop futures are resolved
    by theirs (switch.io.service), without a concurrent.futures.Future's lock and
    condition (a tenth of a world's time)."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self) -> None:
        self._done = False
        self._value = self._error = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, value) -> None:
        self._done, self._value = True, value

    def set_exception(self, error: BaseException) -> None:
        self._done, self._error = True, error

    def result(self):
        if not self._done:
            raise RuntimeError("a journal operation that was not answered")
        if self._error is not None:
            raise self._error
        return self._value


def deliver(resolve, outcomes) -> None:
    """The journal's hand-over: at once, on the caller's thread (the only one)."""
    resolve(outcomes)
