"""The journal's hot writes as compiled runs (:mod:`native.sqlbatch`), for :class:`SqliteJournal`.

A batch's consecutive inserts and updates are planned here (statement,
parameters, and how to finish each operation once it ran) and stepped in one
call without the GIL; the batch's first run also opens its transaction and
its last one commits it.  Everything else runs the ``sqlite3`` way
(``GroupCommitter._run_op``), in batch order, in the same transaction.
"""
from __future__ import annotations

import time
from typing import Any

from msgspec.structs import replace

from switch.journal import JournalError, TxnRecord, check_own_pan
from switch.journal.statements import BY_KEY, INSERT, INSERT_KINDS, record


# SQLite's primary result codes that mean the database cannot be written, whatever the
# statement: SQLITE_READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
UNWRITABLE = frozenset((8, 10, 11, 13, 14, 15, 26))


class CompiledRuns:
    """Mixed into :class:`switch.journal.sqlite.SqliteJournal` (its writer thread's state and hooks)."""

    def _run_ops(self, batch: list, outcomes: list, *, guarded: bool) -> bool:
        """Runs of inserts and updates are stepped by native.sqlbatch, one call per run.

        Everything else (reads, settlement, ...) runs one by one as before, in
        batch order, so a read still sees every write queued before it.  A run
        ends before an operation that needs Python in the middle: an update
        of a record not remembered (read back with RETURNING), a second update
        of a record in the same run (planned from the first one's outcome), a
        value that would not be stored as given (found by the executor).  It also ends after a
        statement that fails or changes no row (an insert of a key already
        there, an update of a record not in the expected state), which is then
        dealt with before anything later runs.
        """
        executor, run_op = self._executor, self._run_op
        i, n = 0, len(batch)
        while i < n:
            steps, plans = self._plan(batch, i)
            if not plans:
                if not run_op(batch[i], outcomes, guarded):
                    return False
                i += 1
                continue
            # A run that ends the batch commits it too when all of it succeeds;
            # the batch's first run opens its transaction.
            last_run = i + len(plans) == n
            opening = self._begin_pending
            if opening is None:
                done, changes, error, rowids = executor.run(steps, guarded, last_run)
            else:
                self._begin_pending = None
                expected = self._data_version
                done, changes, error, rowids = executor.run(
                    steps, guarded, last_run, 2 if opening else 1, -1 if expected is None else expected
                )
                if self._seen_version(executor.began()) != expected:
                    continue  # nothing ran: records remembered may be stale, plan again
            if last_run:
                self._ran_commit = executor.committed()  # a failed COMMIT raises: the batch fails
            finished = self._finished
            if changes == -1:
                # Its last step was not run (a value not stored as given):
                # what ran before it is done, and it goes the sqlite3 way.
                done -= 1
                for k in range(done):
                    outcomes.append((plans[k][0], True, finished(plans[k], rowids[k])))
                if not run_op(batch[i + done], outcomes, guarded):
                    return False
                i += done + 1
                continue
            for k in range(done - 1):
                outcomes.append((plans[k][0], True, finished(plans[k], rowids[k])))
            last = plans[done - 1]
            if error is not None:
                outcomes.append((last[0], False, self._failed_op(error)))
                self._check_transaction(error)
                if not guarded:
                    return False  # rolled back and run again guarded
            elif changes == 1:
                outcomes.append((last[0], True, finished(last, rowids[done - 1])))
            else:
                try:
                    outcomes.append((last[0], True, self._unchanged(last)))
                except Exception as exc:  # nothing was written: no rollback
                    outcomes.append((last[0], False, exc))
            i += done
        return True

    def _failed_op(self, exc: BaseException) -> BaseException:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in UNWRITABLE:
            return exc
        self.write_failed = (time.monotonic(), exc)
        error = JournalError(f"the journal cannot write: {exc}")
        error.__cause__ = exc
        return error

    def _plan(self, batch: list, start: int) -> tuple[list, list]:
        """The run of compiled steps from ``batch[start]``: (statement, parameters) and how to finish each.

        How to finish: ``(future, True, record, now, key)`` for an insert,
        ``(future, False, record, id, expected state)`` for an update.
        """
        steps: list[tuple[int, tuple]] = []
        plans: list[tuple] = []
        touched: set[int] = set()
        insert_call, update_call = self._insert_call, self._update_call
        insert = None  # INSERT's statement number, looked up once a run
        for k in range(start, len(batch)):
            fut, fn, args, _writes = batch[k]
            if fn is insert_call:
                # Planned here, not in a method of its own: it is half of every batch.
                rec, row, key = args
                if insert is None:
                    insert = self._statement(INSERT, INSERT_KINDS)
                now = self._now()
                steps.append((insert, row + (now, now)))
                plans.append((fut, True, rec, now, key))
                continue
            if fn is not update_call or args[2] in touched:
                break
            planned = self._plan_update(fut, *args)
            if planned is None:
                break
            touched.add(args[2])
            steps.append(planned[0])
            plans.append(planned[1])
        return steps, plans

    def _statement(self, sql: str, kinds: str) -> int:
        number = self._statement_numbers.get(sql)
        if number is None:
            number = self._statement_numbers[sql] = self._executor.prepare(sql, kinds)
        return number

    # A value that its column would store converted (an int for a text
    # column, a bool, a bytearray) is caught by the executor, which then runs
    # nothing of that step: it goes the sqlite3 way, and is read back.

    def _plan_update(
        self, fut: Any, statements: tuple, changes: dict[str, Any], txn_id: int, own_pan_check: bool,
        expect: str | None,
    ) -> tuple | None:
        """(step, how to finish it) of an update of a record remembered, else None."""
        sql, _returning, _types, answers, kinds = statements
        known = self._known.get(txn_id)
        if known is None:
            return None
        values = tuple(changes.values())
        if own_pan_check:
            fields = {"acquirer_ref": changes.get("acquirer_ref", known.acquirer_ref),
                      "order_ref": changes.get("order_ref", known.order_ref)}
            try:
                check_own_pan(fields, changes.get("pan_hash", known.pan_hash), self._hmac_key)
            except ValueError:
                return None  # fails on the Python path, with its error
        now = self._now()
        if answers:
            rec = replace(known, **changes, updated_at=now, answered_at=now)
            params = values + (now, now, txn_id)
        else:
            rec = replace(known, **changes, updated_at=now)
            params = values + (now, txn_id)
        if expect is not None:
            params += (expect,)
        return (self._statement(sql, kinds), params), (fut, False, rec, txn_id, expect)

    def _finished(self, plan: tuple, rowid: int) -> Any:
        if plan[1]:  # an insert: (future, True, record, now, key)
            now = plan[3]
            rec = replace(plan[2], id=rowid, rrn="%012d" % rowid, created_at=now, updated_at=now)
            return self._remember(rec), True
        return self._remember(plan[2])

    def _unchanged(self, plan: tuple) -> Any:
        if plan[1]:  # the key is taken: the record that holds it
            return self._remember(record(self._conn.execute(BY_KEY, plan[4]).fetchone())), False
        self._missed(plan[3], plan[4])  # raises
