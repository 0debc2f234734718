"""native.sqlbatch: SQLite writes bound and stepped in C on a sqlite3.Connection's own handle."""
from __future__ import annotations

import sqlite3
import threading

import pytest

import native.sqlbatch
from native.sqlbatch import BatchExecutor


@pytest.fixture
def db():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, data BLOB, score REAL, n INTEGER) STRICT")
    executor = BatchExecutor(conn)
    insert = executor.prepare("INSERT INTO t (name, data, score, n) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
    rename = executor.prepare("UPDATE t SET name = ? WHERE id = ?")
    yield conn, executor, insert, rename
    executor.close()
    conn.close()


def test_it_is_compiled():
    assert native.sqlbatch.__file__.endswith(".so")


def test_a_run_writes_in_the_connections_transaction(db):
    conn, x, insert, rename = db
    conn.execute("BEGIN")
    done, changes, error, rowids = x.run(
        [(insert, ("a", b"\x00\x01", 1.5, 2**62)), (insert, ("é ☃", None, None, -1)), (rename, ("b", 1))]
    )
    assert (done, changes, error, rowids) == (3, 1, None, [1, 2, 2])
    # The sqlite3 module's reads see them before the commit: one connection.
    assert conn.in_transaction
    assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [
        (1, "b", b"\x00\x01", 1.5, 2**62), (2, "é ☃", None, None, -1)
    ]
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert x.run([]) == (0, 1, None, [])


def test_a_run_stops_after_a_statement_that_changes_no_row(db):
    conn, x, insert, rename = db
    done, changes, error, rowids = x.run(
        [(insert, ("a", None, None, None)), (rename, ("z", 99)), (insert, ("b", None, None, None))]
    )
    assert (done, changes, error) == (2, 0, None) and rowids[0] == 1
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]


@pytest.mark.parametrize("guarded", [False, True])
def test_a_failing_statement_ends_the_run_with_the_sqlite3_modules_error(db, guarded):
    conn, x, insert, rename = db
    conn.execute("BEGIN")
    done, changes, error, _ = x.run(
        [(insert, ("a", None, None, None)), (insert, ("a", None, None, None)), (insert, ("c", None, None, None))],
        guarded,
    )
    assert (done, changes) == (2, 0)
    assert type(error) is sqlite3.IntegrityError and str(error) == "UNIQUE constraint failed: t.name"
    assert error.sqlite_errorcode == 2067  # SQLITE_CONSTRAINT_UNIQUE
    assert conn.in_transaction
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]
    # STRICT: a value of the wrong type is a constraint error too.
    _, _, error, _ = x.run([(rename, (b"bytes", 1))], guarded)
    assert type(error) is sqlite3.IntegrityError and "cannot store BLOB value in TEXT column" in str(error)
    conn.execute("COMMIT")


def test_guarded_steps_roll_back_alone(db):
    conn, x, insert, rename = db
    conn.execute("BEGIN")
    x.run([(insert, ("a", None, None, None))])
    conn.execute("CREATE TRIGGER half AFTER UPDATE ON t WHEN NEW.name = 'boom' BEGIN "
                 "INSERT INTO t (name) VALUES ('side effect'); SELECT RAISE(ABORT, 'no boom'); END")
    done, _, error, _ = x.run([(rename, ("boom", 1))], True)
    assert done == 1 and str(error) == "no boom"
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]
    assert x.run([(rename, ("b", 1))], True)[:3] == (1, 1, None)
    conn.execute("COMMIT")
    assert conn.execute("SELECT name FROM t").fetchall() == [("b",)]


@pytest.mark.parametrize("value, error", [(2**64, OverflowError), ("\ud800", UnicodeEncodeError)])
def test_a_value_that_cannot_be_bound_fails_its_step_before_anything_runs(db, value, error):
    conn, x, insert, rename = db
    done, changes, err, rowids = x.run(
        [(insert, ("a", None, None, None)), (insert, ("b", None, None, value)), (insert, ("c", None, None, None))]
    )
    assert done == 2 and type(err) is error and rowids[1] == 0
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]


@pytest.mark.parametrize("value", [True, bytearray(b"x"), 3 + 1j, type("Text", (str,), {})("x")])
def test_a_value_of_another_type_is_left_to_the_caller(db, value):
    # Not an exact None, int, float, str or bytes: the step is not run, changes -1.
    conn, x, insert, rename = db
    done, changes, err, rowids = x.run(
        [(insert, ("a", None, None, None)), (insert, ("b", None, None, value)), (insert, ("c", None, None, None))]
    )
    assert (done, changes, err) == (2, -1, None) and rowids == [1, 0]
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]


def test_kinds_stop_before_a_value_the_column_would_store_converted(db):
    conn, x, *_ = db
    insert = x.prepare("INSERT INTO t (name, data, score, n) VALUES (?, ?, ?, ?)", "tbri")
    ok = [("a", b"x", 1.0, 1), (None, None, None, None)]
    converted = [(1, None, None, None), (None, "x", None, None), (None, None, 1, None), (None, None, None, 1.0)]
    assert x.run([(insert, row) for row in ok])[:3] == (2, 1, None)
    for i, row in enumerate(converted):
        assert x.run([(insert, (f"fine {i}", None, None, None)), (insert, row)])[:3] == (2, -1, None), row
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2 + len(converted),)
    anything = x.prepare("INSERT INTO t (n) VALUES (?)", "*")
    assert x.run([(anything, ("7",))])[:3] == (1, 1, None)  # stored converted: the caller asked for it
    with pytest.raises(ValueError, match="kinds are t, i, r, b or \\*"):
        x.prepare("DELETE FROM t WHERE id = ?", "x")
    with pytest.raises(ValueError, match="2 parameter kinds for a statement of 1"):
        x.prepare("DELETE FROM t WHERE id = ?", "ii")


def test_bad_statements_and_arguments(db):
    conn, x, insert, rename = db
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        x.prepare("INSERT INTO nowhere VALUES (1)")
    with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
        x.prepare("DELETE FROM t; DELETE FROM t")
    with pytest.raises(sqlite3.ProgrammingError, match="returns no rows"):
        x.prepare("SELECT * FROM t")
    assert x.prepare("DELETE FROM t WHERE id = ?;  \n") >= 0
    with pytest.raises(sqlite3.ProgrammingError, match="takes 2 parameters, 1 given"):
        x.run([(rename, ("a",))])
    with pytest.raises(IndexError, match="no prepared statement 99"):
        x.run([(99, ())])


def test_it_refuses_what_is_not_an_open_sqlite3_connection():
    with pytest.raises(TypeError, match="needs a sqlite3.Connection"):
        BatchExecutor(object())
    conn = sqlite3.connect(":memory:")
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        BatchExecutor(conn)


def test_closed_executor(db):
    conn, x, insert, rename = db
    x.close()
    with pytest.raises(sqlite3.ProgrammingError, match="executor is closed"):
        x.run([(insert, ("a", None, None, None))])
    with pytest.raises(sqlite3.ProgrammingError, match="executor is closed"):
        x.prepare("DELETE FROM t")
    # The connection carries on without it.
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def wal_table(path, name_column: str = "name TEXT"):
    """A WAL database at ``path`` with table t, an executor on it and its prepared insert."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {name_column}) STRICT")
    x = BatchExecutor(conn)
    return conn, x, x.prepare("INSERT INTO t (name) VALUES (?)")


def test_begin_and_commit(tmp_path):
    path = tmp_path / "j.sqlite"
    conn, x, insert = wal_table(path)
    version = x.begin(True)
    assert conn.in_transaction
    x.run([(insert, ("a",))])
    x.commit()
    assert not conn.in_transaction
    assert x.begin(False) == version  # our own commits leave the data version alone
    x.commit()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("INSERT INTO t (name) VALUES ('b')")
    assert x.begin(True) != version  # another connection's do not
    # The write lock is ours until the commit: the other connection waits, then gives up.
    other.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        x.begin(True)
    x.commit()
    with pytest.raises(sqlite3.OperationalError, match="no transaction is active"):
        x.commit()
    assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("a",), ("b",)]
    x.close()
    other.close()
    conn.close()


def test_a_run_that_ends_a_batch_commits_in_the_same_call_only_when_all_of_it_succeeds(tmp_path):
    conn, x, insert = wal_table(tmp_path / "j.sqlite", "name TEXT UNIQUE")
    rename = x.prepare("UPDATE t SET name = ? WHERE id = ?")
    # All steps change one row: committed in the run.
    x.begin(True)
    assert x.run([(insert, ("a",)), (rename, ("b", 1))], False, True)[:3] == (2, 1, None)
    assert x.committed() is True and not conn.in_transaction
    assert x.committed() is False  # told once
    # A step that changes no row, or one that fails: nothing committed, the transaction goes on.
    x.begin(True)
    assert x.run([(insert, ("c",)), (rename, ("z", 99))], False, True)[:2] == (2, 0)
    assert x.committed() is False and conn.in_transaction
    conn.execute("ROLLBACK")
    x.begin(True)
    done, changes, error, _ = x.run([(insert, ("b",))], False, True)
    assert isinstance(error, sqlite3.IntegrityError) and x.committed() is False and conn.in_transaction
    conn.execute("ROLLBACK")
    # Without commit=True a run never commits.
    x.begin(True)
    x.run([(insert, ("d",))])
    assert x.committed() is False and conn.in_transaction
    x.commit()
    assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("b",), ("d",)]
    x.close()
    conn.close()


def test_a_run_may_open_the_transaction_and_steps_only_if_the_data_version_is_the_expected_one(tmp_path):
    path = tmp_path / "j.sqlite"
    conn, x, insert = wal_table(path)
    version = x.begin(False)
    x.commit()
    # The expected version: BEGIN IMMEDIATE, the steps and the COMMIT in one call.
    assert x.run([(insert, ("a",))], False, True, 2, version)[:3] == (1, 1, None)
    assert x.began() == version and x.committed() is True and not conn.in_transaction
    # Another connection committed meanwhile: the transaction is open, nothing ran.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("INSERT INTO t (name) VALUES ('b')")
    other.close()
    assert x.run([(insert, ("c",))], False, True, 2, version) == (0, 1, None, [])
    newer = x.began()
    assert newer != version and conn.in_transaction and x.committed() is False
    assert x.run([(insert, ("c",))], False, True)[:3] == (1, 1, None) and x.committed() is True
    assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("a",), ("b",), ("c",)]
    with pytest.raises(RuntimeError, match="not asked to begin"):
        x.began()
    # A BEGIN that fails (a transaction is open already) is its error, and nothing ran.
    conn.execute("BEGIN")
    assert x.run([(insert, ("d",))], False, False, 1, newer) == (0, 1, None, [])
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        x.began()
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    x.close()
    conn.close()


def test_one_owner_at_a_time(db):
    # While one thread steps without the GIL, another thread's call is refused.
    conn, x, insert, rename = db
    conn.execute("BEGIN")
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return 1

    conn.create_function("slow", 0, slow)
    slow_insert = x.prepare("INSERT INTO t (n) VALUES (slow())")
    result = []
    worker = threading.Thread(target=lambda: result.append(x.run([(slow_insert, ())])))
    worker.start()
    assert started.wait(10)
    try:
        with pytest.raises(sqlite3.ProgrammingError, match="one owner"):
            x.run([(insert, ("a", None, None, None))])
        with pytest.raises(sqlite3.ProgrammingError, match="one owner"):
            x.close()
    finally:
        release.set()
        worker.join(10)
    assert result[0][:3] == (1, 1, None)
    x.close()
    x.close()  # twice is fine
