import sqlite3

__all__ = ["BatchExecutor"]

class BatchExecutor:
    """Prepared statements of one sqlite3.Connection, run in batches through the SQLite C API (see native/sqlbatch.pyx)."""

    def __init__(self, connection: sqlite3.Connection) -> None: ...
    def prepare(self, sql: str) -> int: ...
    def begin(self, immediate: bool) -> int:
        """BEGIN [IMMEDIATE], then the connection's data version."""
    def commit(self) -> None: ...
    def run(
        self, steps: list[tuple[int, tuple[None | int | float | str | bytes, ...]]], guarded: bool = False
    ) -> tuple[int, int, BaseException | None, list[int]]:
        """(steps run, rows changed by the last, its error, last-insert rowid after each)."""
    def close(self) -> None: ...
