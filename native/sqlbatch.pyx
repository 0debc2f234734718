"""A batch of SQLite writes stepped in C, the GIL released once for the lot.

The journal's writer runs most of a batch as a handful of statements with
different parameters (insert a transaction, store its answer, move its
state).  Through the ``sqlite3`` module every one of them costs a cursor, a
statement-cache look-up, a bind per parameter and two GIL hand-overs; here
the parameters are first copied into C storage (with the GIL: that reads
Python objects), then every statement is bound and stepped without it.

:class:`BatchExecutor` works on the connection of a :class:`sqlite3.Connection`
(same thread, same transaction), so that reads made through the ``sqlite3``
module see the writes of the batch.  CPython keeps the ``sqlite3 *`` as the
first field of its connection object; the executor checks that the pointer
it finds is really that connection (a function registered on the Python side
must be callable from it) and that the ``sqlite3`` module uses the SQLite
library this module was linked against, and refuses to start otherwise.

This module imports nothing of the project.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t
from libc.string cimport strncpy

import os
import sqlite3 as _sqlite3

cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    ctypedef long long sqlite3_int64
    ctypedef void (*sqlite3_destructor_type)(void *)
    int SQLITE_OK, SQLITE_DONE, SQLITE_ROW
    int SQLITE_CONSTRAINT, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL
    int SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_READONLY, SQLITE_INTERRUPT, SQLITE_ABORT
    int SQLITE_NOMEM, SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE, SQLITE_CORRUPT
    int SQLITE_NOTADB, SQLITE_MISUSE, SQLITE_INTERNAL, SQLITE_NOTFOUND, SQLITE_SCHEMA
    int SQLITE_PERM, SQLITE_ERROR
    const char *sqlite3_libversion()
    int sqlite3_prepare_v3(sqlite3 *db, const char *sql, int n, unsigned int flags,
                           sqlite3_stmt **stmt, const char **tail)
    int SQLITE_PREPARE_PERSISTENT
    int sqlite3_finalize(sqlite3_stmt *stmt)
    int sqlite3_reset(sqlite3_stmt *stmt)
    int sqlite3_clear_bindings(sqlite3_stmt *stmt)
    int sqlite3_step(sqlite3_stmt *stmt)
    int sqlite3_bind_parameter_count(sqlite3_stmt *stmt)
    int sqlite3_bind_null(sqlite3_stmt *stmt, int i)
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, sqlite3_int64 v)
    int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double v)
    int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *p, int n, sqlite3_destructor_type d)
    int sqlite3_bind_blob(sqlite3_stmt *stmt, int i, const void *p, int n, sqlite3_destructor_type d)
    sqlite3_destructor_type SQLITE_STATIC
    int sqlite3_column_count(sqlite3_stmt *stmt)
    sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *stmt, int i)
    int sqlite3_changes(sqlite3 *db)
    sqlite3_int64 sqlite3_last_insert_rowid(sqlite3 *db)
    int sqlite3_get_autocommit(sqlite3 *db)
    const char *sqlite3_errmsg(sqlite3 *db)
    int sqlite3_extended_errcode(sqlite3 *db)
    const char *sqlite3_errstr(int rc)

ctypedef struct Value:
    int kind  # 0 NULL, 1 integer, 2 real, 3 text, 4 blob
    int64_t i
    double d
    const char *p
    Py_ssize_t n

ctypedef struct Step:
    sqlite3_stmt *stmt
    Py_ssize_t first  # index of its first value
    int count
    int rc  # SQLITE_DONE, or the error
    int changes
    int64_t rowid

cdef enum:
    ERRMSG_MAX = 512

# The sqlite3 module's exception for a primary result code (as the module maps them).
cdef object _error_class(int code):
    cdef int primary = code & 0xff
    if primary == SQLITE_CONSTRAINT:
        return _sqlite3.IntegrityError
    if primary in (SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE):
        return _sqlite3.DataError
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return _sqlite3.DatabaseError
    if primary in (SQLITE_INTERNAL, SQLITE_NOTFOUND):
        return _sqlite3.InternalError
    if primary == SQLITE_MISUSE:
        return _sqlite3.ProgrammingError
    if primary == SQLITE_NOMEM:
        return MemoryError
    return _sqlite3.OperationalError


cdef object _error(int code, const char *message):
    cls = _error_class(code)
    if cls is MemoryError:
        return MemoryError()
    exc = cls(message.decode("utf-8", "replace"))
    exc.sqlite_errorcode = code
    return exc


cdef class BatchExecutor:
    """Prepared statements kept for one connection, run as batches of (statement, parameters).

    ``prepare(sql)`` returns a statement number; ``run(steps, guarded)`` runs
    ``(number, parameters)`` pairs in order inside the connection's open
    transaction (the caller begins and commits it).  Every statement must
    change exactly one row: ``run`` stops after the first that fails or
    changes another number of rows, so that the caller can deal with it
    before anything later runs.  It returns ``(done, changes, error,
    rowids)``: how many steps ran (the last one included), the row count of
    the last, its exception (``None`` when it did not fail) and the
    last-insert rowid after each step.  A step with a value of a type other than None,
    int, float, str and bytes, or one its statement's ``kinds`` do not take
    as given, is not run: ``changes`` is then ``-1``.

    Guarded, every step runs inside a savepoint, and a failing step is rolled
    back alone.  Unguarded, a failing step leaves the transaction to the
    caller (who rolls it back).
    """

    cdef sqlite3 *db
    cdef object connection  # keeps the sqlite3.Connection (and its sqlite3 *) alive
    cdef list statements  # SQL text of each statement, by number
    cdef list kinds  # the types its parameters take as they are (bytes), or None: any
    cdef sqlite3_stmt **stmts
    cdef Py_ssize_t n_stmts
    cdef sqlite3_stmt *savepoint
    cdef sqlite3_stmt *release
    cdef sqlite3_stmt *rollback_to
    cdef sqlite3_stmt *begin_deferred
    cdef sqlite3_stmt *begin_immediate
    cdef sqlite3_stmt *data_version
    cdef sqlite3_stmt *commit_
    cdef Value *values
    cdef Py_ssize_t values_cap
    cdef Step *steps
    cdef Py_ssize_t steps_cap
    cdef char errmsg[ERRMSG_MAX]
    cdef bint busy  # a call is stepping without the GIL: no other may start
    cdef int commit_rc  # run(commit=True): 0 not tried, else COMMIT's result code
    cdef int begin_rc  # run(begin=...): 0 not tried, else BEGIN's (SQLITE_DONE once the version is read)
    cdef int64_t begin_version  # run(begin=...): the data version read after BEGIN

    def __cinit__(self):
        self.db = NULL
        self.stmts = NULL
        self.n_stmts = 0
        self.savepoint = self.release = self.rollback_to = NULL
        self.begin_deferred = self.begin_immediate = self.data_version = self.commit_ = NULL
        self.values = NULL
        self.values_cap = 0
        self.busy = False
        self.steps = NULL
        self.steps_cap = 0

    def __init__(self, connection):
        if type(connection) is not _sqlite3.Connection:
            raise TypeError(f"BatchExecutor needs a sqlite3.Connection, got {type(connection).__name__}")
        linked = sqlite3_libversion().decode("ascii")
        if linked != _sqlite3.sqlite_version:
            raise RuntimeError(
                f"the sqlite3 module uses SQLite {_sqlite3.sqlite_version}, native.sqlbatch was built "
                f"against {linked}: they must be the same library"
            )
        if _sqlite3.Connection.__basicsize__ < <Py_ssize_t>(sizeof(PyObject) + sizeof(void *)):
            raise RuntimeError("sqlite3.Connection has no room for a database handle: unknown layout")
        cdef sqlite3 *db = (<sqlite3 **>(<char *><PyObject *>connection + sizeof(PyObject)))[0]
        if db == NULL:
            raise _sqlite3.ProgrammingError("Cannot operate on a closed database.")
        # The pointer must be this very connection: a function registered
        # through the sqlite3 module exists on it and on no other.
        probe = "payswitch_probe_%x" % id(self)
        token = os.urandom(8).hex()
        connection.create_function(probe, 0, lambda: token, deterministic=True)
        cdef sqlite3_stmt *stmt = NULL
        sql = f"SELECT {probe}()".encode()
        cdef int rc = sqlite3_prepare_v3(db, sql, -1, 0, &stmt, NULL)
        try:
            if rc != SQLITE_OK or sqlite3_step(stmt) != SQLITE_ROW:
                raise RuntimeError("sqlite3.Connection layout not as expected: the database handle does not answer")
            seen = connection.execute(f"SELECT {probe}()").fetchone()[0]
            if seen != token:
                raise RuntimeError("sqlite3.Connection layout not as expected")
        finally:
            sqlite3_finalize(stmt)
            connection.create_function(probe, 0, None)
        self.db = db
        self.connection = connection
        self.statements = []
        self.kinds = []
        self.savepoint = self._prepare_raw(b"SAVEPOINT batch_op")
        self.release = self._prepare_raw(b"RELEASE batch_op")
        self.rollback_to = self._prepare_raw(b"ROLLBACK TO batch_op")
        self.begin_deferred = self._prepare_raw(b"BEGIN")
        self.begin_immediate = self._prepare_raw(b"BEGIN IMMEDIATE")
        self.data_version = self._prepare_raw(b"PRAGMA data_version", rows=True)
        self.commit_ = self._prepare_raw(b"COMMIT")

    cdef sqlite3_stmt *_prepare_raw(self, bytes sql, bint rows=False) except NULL:
        cdef sqlite3_stmt *stmt = NULL
        cdef const char *tail = NULL
        cdef int rc = sqlite3_prepare_v3(self.db, sql, len(sql), SQLITE_PREPARE_PERSISTENT, &stmt, &tail)
        if rc != SQLITE_OK:
            raise _error(sqlite3_extended_errcode(self.db), sqlite3_errmsg(self.db))
        if stmt == NULL:
            raise _sqlite3.ProgrammingError(f"no statement in {sql.decode()!r}")
        while tail != NULL and (tail[0] == b' ' or tail[0] == b'\n' or tail[0] == b'\t' or tail[0] == b';'):
            tail += 1
        if tail != NULL and tail[0] != 0:
            sqlite3_finalize(stmt)
            raise _sqlite3.ProgrammingError(f"one statement at a time: {sql.decode()!r}")
        if sqlite3_column_count(stmt) != 0 and not rows:
            sqlite3_finalize(stmt)
            raise _sqlite3.ProgrammingError(f"a batch statement returns no rows: {sql.decode()!r}")
        return stmt

    def prepare(self, str sql, str kinds=None) -> int:
        """Prepare ``sql`` (one statement that returns no rows) once; its number for :meth:`run`.

        ``kinds``, one letter per parameter, names the values each parameter
        stores and gives back unchanged besides NULL: ``t`` str, ``i`` int,
        ``r`` float, ``b`` bytes, ``*`` any.  A value of another type (an int
        for a text column, which SQLite would store as text) is not bound:
        :meth:`run` stops before that step and reports it (changes ``-1``),
        so that the caller can write it another way and read back what was
        stored.
        """
        self._check_open()
        cdef bytes kind_codes = None
        if kinds is not None:
            if kinds.strip("tirb*"):
                raise ValueError(f"parameter kinds are t, i, r, b or *, got {kinds!r}")
            kind_codes = kinds.encode("ascii")
        cdef sqlite3_stmt *stmt = self._prepare_raw(sql.encode())
        if kind_codes is not None and len(kind_codes) != sqlite3_bind_parameter_count(stmt):
            count = sqlite3_bind_parameter_count(stmt)
            sqlite3_finalize(stmt)
            raise ValueError(f"{len(kind_codes)} parameter kinds for a statement of {count} parameters")
        cdef sqlite3_stmt **grown = <sqlite3_stmt **>PyMem_Realloc(self.stmts, (self.n_stmts + 1) * sizeof(sqlite3_stmt *))
        if grown == NULL:
            sqlite3_finalize(stmt)
            raise MemoryError()
        self.stmts = grown
        self.stmts[self.n_stmts] = stmt
        self.n_stmts += 1
        self.statements.append(sql)
        self.kinds.append(kind_codes)
        return self.n_stmts - 1

    cdef int _check_open(self) except -1:
        if self.db == NULL:
            raise _sqlite3.ProgrammingError("the batch executor is closed")
        if self.busy:
            raise _sqlite3.ProgrammingError("the batch executor is in use by another thread: it has one owner")
        return 0

    cdef int _reserve(self, Py_ssize_t n_steps, Py_ssize_t n_values) except -1:
        if n_steps > self.steps_cap:
            grown = PyMem_Realloc(self.steps, n_steps * sizeof(Step))
            if grown == NULL:
                raise MemoryError()
            self.steps = <Step *>grown
            self.steps_cap = n_steps
        if n_values > self.values_cap:
            grown = PyMem_Realloc(self.values, n_values * sizeof(Value))
            if grown == NULL:
                raise MemoryError()
            self.values = <Value *>grown
            self.values_cap = n_values
        return 0

    cdef bint _as_given(self, Value *v, char kind) noexcept:
        """Whether the parameter of ``kind`` stores this value, and gives it back, as it is."""
        if v.kind == 0 or kind == b'*':
            return True
        if v.kind == 1:
            return kind == b'i'
        if v.kind == 2:
            return kind == b'r'
        if v.kind == 3:
            return kind == b't'
        return kind == b'b'

    cdef int _convert(self, object value, Value *v) except -1:
        """1 if the value is bound (exact types only, as the sqlite3 module binds them), 0 if not."""
        cdef type t = type(value)
        if value is None:
            v.kind = 0
        elif t is int:
            v.kind = 1
            v.i = value  # OverflowError beyond 64 bits, as in the sqlite3 module
        elif t is float:
            v.kind = 2
            v.d = value
        elif t is str:
            v.kind = 3
            v.p = PyUnicode_AsUTF8AndSize(value, &v.n)  # kept in the str, alive while the step list is
        elif t is bytes:
            v.kind = 4
            v.p = PyBytes_AS_STRING(value)
            v.n = PyBytes_GET_SIZE(value)
        else:
            return 0  # bool, bytearray, a subclass, an adapted type: the sqlite3 module's business
        if (v.kind == 3 or v.kind == 4) and v.n > 0x7fffffff:
            raise _sqlite3.DataError("string or blob too big")
        return 1

    def begin(self, bint immediate):
        """BEGIN (IMMEDIATE: with the write lock) and the connection's data version after it, the GIL released once.

        ``PRAGMA data_version`` changes when another connection has committed
        since this one last looked.  BEGIN IMMEDIATE may wait for another
        process's lock (the busy timeout): without the GIL.
        """
        self._check_open()
        cdef int rc
        cdef sqlite3_stmt *begin = self.begin_immediate if immediate else self.begin_deferred
        self.busy = True
        with nogil:
            rc = self._begin_and_version(begin)
        self.busy = False
        if rc != SQLITE_DONE:
            raise _error(rc, self.errmsg)
        return self.begin_version

    cdef int _begin_and_version(self, sqlite3_stmt *begin) noexcept nogil:
        """BEGIN, then ``PRAGMA data_version`` into ``begin_version``: SQLITE_DONE, or the error's code."""
        cdef int rc = self._exec(begin)
        if rc == SQLITE_DONE:
            rc = sqlite3_step(self.data_version)
            if rc == SQLITE_ROW:
                self.begin_version = sqlite3_column_int64(self.data_version, 0)
                rc = SQLITE_DONE
            else:
                rc = sqlite3_extended_errcode(self.db)
                self._keep_errmsg()
            sqlite3_reset(self.data_version)
        return rc

    def began(self):
        """After ``run(..., begin=...)``: the data version read after BEGIN; a failed BEGIN raises its error.

        When it differs from the ``version`` given to ``run``, no step ran
        (``run`` answered ``(0, 1, None, [])``): plan again and run without
        ``begin``, the transaction is open.
        """
        cdef int rc = self.begin_rc
        self.begin_rc = 0
        if rc == 0:
            raise RuntimeError("began(): the last run() was not asked to begin")
        if rc != SQLITE_DONE:
            raise _error(rc, self.errmsg)
        return self.begin_version

    def commit(self):
        """COMMIT, the GIL released while SQLite syncs the log."""
        self._check_open()
        cdef int rc
        self.busy = True
        with nogil:
            rc = self._exec(self.commit_)
        self.busy = False
        if rc != SQLITE_DONE:
            raise _error(rc, self.errmsg)

    def run(self, list steps, bint guarded=False, bint commit=False, int begin=0, int64_t version=-1):
        """Bind and step ``steps``; see :meth:`committed` for ``commit``, :meth:`began` for ``begin``.

        ``commit``: when every step ran and changed one row, COMMIT in the
        same call (the caller's batch ends with these steps): one hand-over
        of the GIL for the run and the fsync instead of two.

        ``begin`` (1: BEGIN, 2: BEGIN IMMEDIATE): open the transaction first,
        in the same call, and read the data version after it; the steps run
        only if it is ``version`` (the caller planned them from records it
        remembers, which another connection's commit would have made stale).
        """
        self._check_open()
        self.commit_rc = 0
        self.begin_rc = 0
        cdef Py_ssize_t n = len(steps), total = 0, i, j, k, first
        cdef Py_ssize_t converted = 0
        cdef Step *step
        cdef tuple params
        cdef Py_ssize_t number
        cdef bytes kinds
        cdef bint converted_on = False  # a value the column would store converted
        error = None
        for i in range(n):
            total += len((<tuple>steps[i])[1])
        self._reserve(n if n > 0 else 1, total if total > 0 else 1)
        # With the GIL: copy every parameter into C storage.  A value that
        # cannot be stored ends the batch there, before anything of it runs.
        first = 0
        for i in range(n):
            item = <tuple>steps[i]
            number = item[0]
            params = <tuple>item[1]
            step = &self.steps[i]
            if number < 0 or number >= self.n_stmts:
                raise IndexError(f"no prepared statement {number}")
            step.stmt = self.stmts[number]
            if len(params) != sqlite3_bind_parameter_count(step.stmt):
                raise _sqlite3.ProgrammingError(
                    f"statement {number} takes {sqlite3_bind_parameter_count(step.stmt)} parameters, "
                    f"{len(params)} given"
                )
            step.first = first
            step.count = len(params)
            kinds = <bytes>self.kinds[number]
            try:
                for k in range(step.count):
                    if not self._convert(params[k], &self.values[first + k]) or (
                        kinds is not None and not self._as_given(&self.values[first + k], kinds[k])
                    ):
                        converted_on = True
                        break
            except Exception as exc:
                error = exc
                break
            if converted_on:
                break
            first += step.count
            converted += 1
        cdef Py_ssize_t ran
        self.busy = True
        cdef sqlite3_stmt *opening = (self.begin_immediate if begin == 2 else self.begin_deferred) if begin else NULL
        with nogil:
            if opening != NULL:
                self.begin_rc = self._begin_and_version(opening)
            if opening == NULL or (self.begin_rc == SQLITE_DONE and self.begin_version == version):
                ran = self._step_all(converted, guarded)
            else:
                ran = 0
                converted = -1  # nothing stepped: no commit either
            if commit and ran == n and converted == n and (
                n == 0 or (self.steps[n - 1].rc == SQLITE_DONE and self.steps[n - 1].changes == 1)
            ):
                self.commit_rc = self._exec(self.commit_)
        self.busy = False
        if converted == -1:
            return 0, 1, None, []  # see began()
        rowids = [self.steps[i].rowid for i in range(ran)]
        if ran > 0:
            step = &self.steps[ran - 1]
            if step.rc != SQLITE_DONE:
                return ran, 0, _error(step.rc, self.errmsg), rowids
            if step.changes != 1:
                return ran, step.changes, None, rowids
        if error is not None:
            # The step whose value could not be stored counts as run and failed.
            rowids.append(0)
            return converted + 1, 0, error, rowids
        if converted_on:
            rowids.append(0)
            return converted + 1, -1, None, rowids
        return ran, 1, None, rowids

    def committed(self):
        """After ``run(..., commit=True)``: True if it committed, False if it did not try.

        A COMMIT that it tried and that failed raises its error here (the
        transaction's writes are then not durable, as with :meth:`commit`).
        """
        cdef int rc = self.commit_rc
        self.commit_rc = 0
        if rc == 0:
            return False
        if rc != SQLITE_DONE:
            raise _error(rc, self.errmsg)
        return True

    cdef Py_ssize_t _step_all(self, Py_ssize_t n, bint guarded) noexcept nogil:
        """Bind and step steps[0:n]; stop after the first that fails or changes other than one row."""
        cdef Py_ssize_t i
        cdef int k, rc
        cdef Step *step
        cdef Value *v
        cdef sqlite3_stmt *stmt
        for i in range(n):
            step = &self.steps[i]
            stmt = step.stmt
            if guarded:
                rc = self._exec(self.savepoint)
                if rc != SQLITE_DONE:
                    step.rc = rc
                    step.changes = 0
                    step.rowid = 0
                    return i + 1
            rc = SQLITE_OK
            for k in range(step.count):
                v = &self.values[step.first + k]
                if v.kind == 0:
                    rc = sqlite3_bind_null(stmt, k + 1)
                elif v.kind == 1:
                    rc = sqlite3_bind_int64(stmt, k + 1, v.i)
                elif v.kind == 2:
                    rc = sqlite3_bind_double(stmt, k + 1, v.d)
                elif v.kind == 3:
                    rc = sqlite3_bind_text(stmt, k + 1, v.p, <int>v.n, SQLITE_STATIC)
                else:
                    rc = sqlite3_bind_blob(stmt, k + 1, v.p, <int>v.n, SQLITE_STATIC)
                if rc != SQLITE_OK:
                    break
            if rc == SQLITE_OK:
                rc = sqlite3_step(stmt)
            if rc != SQLITE_DONE:
                rc = sqlite3_extended_errcode(self.db)
                self._keep_errmsg()
            step.rc = rc
            step.changes = sqlite3_changes(self.db) if rc == SQLITE_DONE else 0
            step.rowid = sqlite3_last_insert_rowid(self.db)
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)  # no pointer into Python objects outlives the call
            if guarded:
                if rc == SQLITE_DONE:
                    rc = self._exec(self.release)
                    if rc != SQLITE_DONE:
                        step.rc = rc
                        return i + 1
                elif sqlite3_get_autocommit(self.db) == 0:
                    # Undo this step alone; the transaction goes on.
                    self._exec(self.rollback_to)
                    self._exec(self.release)
            if rc != SQLITE_DONE or step.changes != 1:
                return i + 1
        return n

    cdef int _exec(self, sqlite3_stmt *stmt) noexcept nogil:
        """Step a statement of no rows; its error code and message kept on failure."""
        cdef int rc = sqlite3_step(stmt)
        if rc != SQLITE_DONE:
            rc = sqlite3_extended_errcode(self.db)
            self._keep_errmsg()
        sqlite3_reset(stmt)
        return rc

    cdef void _keep_errmsg(self) noexcept nogil:
        strncpy(self.errmsg, sqlite3_errmsg(self.db), ERRMSG_MAX - 1)
        self.errmsg[ERRMSG_MAX - 1] = 0

    cdef void _finalize_own(self) noexcept:
        sqlite3_finalize(self.savepoint)
        sqlite3_finalize(self.release)
        sqlite3_finalize(self.rollback_to)
        sqlite3_finalize(self.begin_deferred)
        sqlite3_finalize(self.begin_immediate)
        sqlite3_finalize(self.data_version)
        sqlite3_finalize(self.commit_)
        self.savepoint = self.release = self.rollback_to = NULL
        self.begin_deferred = self.begin_immediate = self.data_version = self.commit_ = NULL

    def close(self):
        """Finalize every statement (before the connection closes); the executor is unusable after."""
        cdef Py_ssize_t i
        if self.busy:
            raise _sqlite3.ProgrammingError("the batch executor is in use by another thread: it has one owner")
        for i in range(self.n_stmts):
            sqlite3_finalize(self.stmts[i])
        self.n_stmts = 0
        self._finalize_own()
        self.db = NULL
        self.connection = None

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n_stmts):
            sqlite3_finalize(self.stmts[i])
        self._finalize_own()
        PyMem_Free(self.stmts)
        PyMem_Free(self.values)
        PyMem_Free(self.steps)
