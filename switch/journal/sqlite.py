"""The embedded journal: SQLite in WAL mode, group-committed.

``synchronous=FULL`` in WAL mode makes every commit durable (the WAL is
fsynced at commit); group commit (``switch.journal.groupcommit``) spreads
that fsync over every transaction of a batch.  The writer thread is the only
user of its connection.  Tables are STRICT, so a value of the wrong type is
an error instead of being stored as whatever it was.

The RRN is a generated column, ``printf('%012d', id)``, with ids from
AUTOINCREMENT: never reused, even after old rows are archived away.

The hot writes (a new transaction, the update that stores its answer, the
state updates) are bound and stepped in C by :mod:`native.sqlbatch`, a run
of them in one call without the GIL, on the very connection of the
``sqlite3`` module, which does everything else (reads, settlement,
migrations) in the same transaction: a read sees the writes queued before
it.  A batch's first run also opens its transaction and its last run
commits it (:mod:`switch.journal.compiled`), so a batch of writes hands the
GIL over once, not three times per statement.
"""
from __future__ import annotations

import operator
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable

from msgspec.structs import astuple, replace

from native.panguard import luhn_run
from native.sqlbatch import BatchExecutor
from switch.journal import (
    LONG_NUMBER_FIELDS,
    JournalError,
    StaleState,
    TxnRecord,
    check_luhn_values,
    check_own_pan,
    check_pan_forms,
)
from switch.journal import files, terminal_keys
from switch.journal import reversal_card as cards
from switch.journal.reversal_card import check_sealed_form
from switch.journal.compiled import CompiledRuns
from switch.journal.refunds import RefundLimit
from switch.journal.settlement import Settlement
from switch.journal.uploads import Uploads
from switch.journal.groupcommit import GroupCommitter
from switch.journal import schema
from switch.journal.schema import MIGRATIONS, OPEN_STATES, SCHEMA_VERSION
from switch.journal.statements import (
    BACKLOG,
    BY_ID,
    BY_KEY,
    BY_ORDER,
    COLUMN_TYPES,
    COLUMNS,
    COMPLETION,
    COMPLETION_REVERSING,
    FIELDS,
    INSERT,
    INSERTED,
    INSERTED_INDEX,
    INSERTED_TYPES,
    PENDING_REVERSALS,
    UPDATABLE,
    as_stored,
    placeholders,
    record,
    update_plan,
)

_inserted = operator.itemgetter(*INSERTED_INDEX)  # the inserted columns of a record's values
# Where insert_args finds what it checks in a record's values (no attribute look-ups).
_TERMINAL_ID, _STAN, _TRANSMISSION_TIME, _PAN_MASKED, _PAN_HASH, _CARD_SEALED, _ACQUIRER_REF, _ORDER_REF = (
    FIELDS.index(f) for f in (
        "terminal_id", "stan", "transmission_time", "pan_masked", "pan_hash", "card_sealed", "acquirer_ref",
        "order_ref",
    )
)
# The fields the Luhn guard looks at (it passes over LONG_NUMBER_FIELDS), picked out in C.
_GUARDED_NAMES = tuple(f for f in FIELDS if f not in LONG_NUMBER_FIELDS)
_guarded = operator.itemgetter(*(FIELDS.index(f) for f in _GUARDED_NAMES))

__all__ = ["SqliteJournal", "MIGRATIONS", "SCHEMA_VERSION", "COLUMN_TYPES", "INSERTED", "FIELDS"]

# SQLite 3.37 for STRICT tables (3.35 for RETURNING, 3.31 for generated columns).
MIN_SQLITE = (3, 37, 0)


def _update_op(
    journal: SqliteJournal, txn_id: int, expect: str | None, changes: dict[str, Any], call: Callable[..., Any] | None
) -> Future[TxnRecord]:
    """The update of :meth:`SqliteJournal.update`, ``update_if`` (``expect``) and ``end_reversal`` (``call``).

    A function of the module, not a method: compiled, it takes ``changes`` as
    a dict (sqlite.pxd), and every look-up in it is the dict's own.
    """
    if "card_sealed" in changes:
        if changes["card_sealed"] is not None:
            try:
                check_sealed_form("card_sealed", changes["card_sealed"])
            except ValueError as exc:
                return journal._failed(exc)
    elif (state := changes.get("state", "sent")) != "sent" and not (
        state == "answered" and changes.get("response_code") == "00"
    ):
        # A payment keeps its sealed card while it is at the acquirer, and
        # approved (for card_retention: forget_cards clears it then, and
        # card_retention = 0 clears it with the answer, card_sealed=None);
        # anything else that moves it on clears it, in the same statement.
        changes = {**changes, "card_sealed": None}
    # The columns and their values in one walk of the dict (tuple() of a dict
    # or of its values makes an iterator and asks it for its length).
    names, given = [], []
    for name, value in changes.items():
        names.append(name)
        given.append(value)
    columns, values = tuple(names), tuple(given)
    guarded = expect is not None
    plans = journal._update_sql[guarded]
    plan = plans.get(columns)
    if plan is None:
        unknown = changes.keys() - UPDATABLE
        if unknown:
            return journal._failed(
                ValueError(
                    f"cannot update journal column(s) {', '.join(sorted(unknown))}: "
                    f"unknown or set by the journal (id, rrn, created_at, updated_at)"
                )
            )
        plan = plans[columns] = update_plan(columns, guarded)
    statements, luhn_names, pick, forms, free_refs = plan
    try:
        # check_no_pan(changes), with what depends only on the columns worked out once.
        if luhn_names:
            if luhn_run(values) is not None:  # as in insert_args: all values first
                check_luhn_values(luhn_names, values if pick is None else pick(values))
        if forms:
            check_pan_forms(changes.get("pan_masked"), changes.get("pan_hash"))
    except ValueError as exc:
        return journal._failed(exc)
    own_pan_check = free_refs and journal._hmac_key is not None
    if call is None:
        call = journal._update_call
    return journal._submit(call, (statements, changes, txn_id, own_pan_check, expect), True)


def states_query(states: tuple[str, ...], limit: int) -> tuple[str, tuple]:
    """The statement and parameters of :meth:`SqliteJournal.in_states`.

    The states transactions wait in are written out (``state = 'sent'``) so
    that SQLite takes the partial index txn_state (``schema.OPEN_STATES``),
    which it does not for a bound parameter; any other state is bound, and
    found by a scan.
    """
    terms = [f"state = '{s}'" if s in OPEN_STATES else "state = ?" for s in states]
    sql = f"SELECT {COLUMNS} FROM txn WHERE {' OR '.join(terms)} ORDER BY updated_at, id LIMIT ?"
    return sql, (*(s for s in states if s not in OPEN_STATES), limit)


def insert_args(rec: TxnRecord, hmac_key: bytes | None) -> tuple[TxnRecord, tuple, tuple]:
    """An insert's operation arguments: (a copy of the record, all its values, its key), checked for cardholder data.

    Run for every insert on the caller's (event loop's) thread, so the values
    are read from the record's tuple, not by attribute.
    """
    if type(rec) is not TxnRecord:
        raise TypeError(f"insert takes a TxnRecord, got {type(rec).__name__}")
    # A copy: the caller may change its record before the writer gets to it.
    rec = replace(rec)
    values = astuple(rec)
    # One scan of every value first: none holding a card number, none of the
    # guarded ones does (the usual case, without picking them out).
    if luhn_run(values) is not None:
        check_luhn_values(_GUARDED_NAMES, _guarded(values))
    pan_hash = values[_PAN_HASH]
    check_pan_forms(values[_PAN_MASKED], pan_hash)
    sealed = values[_CARD_SEALED]
    if sealed is not None:
        check_sealed_form("card_sealed", sealed)
    acquirer_ref, order_ref = values[_ACQUIRER_REF], values[_ORDER_REF]
    if acquirer_ref is not None or order_ref is not None:
        check_own_pan({"acquirer_ref": acquirer_ref, "order_ref": order_ref}, pan_hash, hmac_key)
    # statements.INSERT takes the values as they are, those it does not store included.
    return rec, values, (values[_TERMINAL_ID], values[_STAN], values[_TRANSMISSION_TIME])


class SqliteJournal(RefundLimit, Settlement, Uploads, CompiledRuns, GroupCommitter):
    """The journal in one SQLite file (or ``":memory:"``), written by one thread."""

    def __init__(
        self,
        path: str,
        *,
        hmac_key: bytes | None = None,
        max_batch: int = 512,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        known_records: int = 8192,
        future: Callable[[], Any] | None = None,
        deliver: Callable[..., Any] | None = None,
        inline: bool = False,
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise JournalError(
                f"the SQLite journal needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer, "
                f"this Python has {sqlite3.sqlite_version}"
            )
        self.path = path
        self._hmac_key = hmac_key or None
        self._clock = clock
        self._last_now = 0.0
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._claimed: int | None = None  # the journal file's lock (files.claim) while open
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        # Per set of updated columns, by whether the state is expected: its statements.update_plan.
        self._update_sql: tuple[dict[tuple[str, ...], tuple], dict[tuple[str, ...], tuple]] = ({}, {})
        # Writer thread only: the records as this connection last wrote or read
        # them, newest last, so that an update can return its record without
        # reading it back.  Entries made in the open transaction are dropped if
        # it rolls back; all are dropped when another connection has written.
        self._known: OrderedDict[int, TxnRecord] = OrderedDict()
        self._known_max = known_records
        self._unsure: list[int] = []  # ids remembered in the open transaction
        self._data_version: int | None = None
        self._cards_swept = 0  # forget_cards: every id up to this one is done,
        self._cards_waiting: set[int] = set()  # but for these, at their acquirer when it passed
        # The compiled path (writer thread): its prepared statements by SQL,
        # and the two operations it runs, bound once so that a batch can
        # recognise them by identity.
        self._executor: BatchExecutor | None = None
        self._ran_commit = False  # the batch's last compiled run also committed it
        self._begin_pending: bool | None = None  # the batch's BEGIN (IMMEDIATE: True), not run yet
        self._statement_numbers: dict[str, int] = {}
        self._insert_call = self._insert
        self._update_call = self._update
        super().__init__(
            name=f"journal-writer:{path}", max_batch=max_batch, future=future, deliver=deliver, inline=inline
        )

    # -- the Journal interface (caller's side) -------------------------------

    def insert(self, rec: TxnRecord) -> Future[tuple[TxnRecord, bool]]:
        try:
            args = insert_args(rec, self._hmac_key)
        except (TypeError, ValueError) as exc:
            return self._failed(exc)
        return self._submit(self._insert_call, args, True)

    def _insert_args(self, rec: TxnRecord) -> tuple[TxnRecord, tuple, tuple]:
        return insert_args(rec, self._hmac_key)

    def update(self, txn_id: int, **changes: Any) -> Future[TxnRecord]:
        return _update_op(self, txn_id, None, changes, None)

    def update_if(self, txn_id: int, expect: str, /, **changes: Any) -> Future[TxnRecord]:
        return _update_op(self, txn_id, expect, changes, None)

    def store(self, txn_id: int, expect: str | None = None, /, **changes: Any) -> Future[TxnRecord]:
        return _update_op(self, txn_id, expect, changes, None)

    def end_reversal(self, txn_id: int, expect: str, /, **changes: Any) -> Future[TxnRecord]:
        return _update_op(self, txn_id, expect, changes, self._end_reversal)

    def get(self, txn_id: int) -> Future[TxnRecord | None]:
        return self._submit(self._one, (BY_ID, (txn_id,)), False)

    def find(self, terminal_id: str, stan: str, transmission_time: str) -> Future[TxnRecord | None]:
        return self._submit(self._one, (BY_KEY, (terminal_id, stan, transmission_time)), False)

    def find_original(
        self, terminal_id: str, mtis: tuple[str, ...], stan: str, transmission_time: str
    ) -> Future[TxnRecord | None]:
        mtis = tuple(mtis)
        if not mtis:
            return self._failed(ValueError("find_original needs at least one original MTI"))
        sql = (
            f"SELECT {COLUMNS} FROM txn WHERE terminal_id = ? AND mti IN ({placeholders(len(mtis))}) "
            "AND stan = ? AND transmission_time = ? ORDER BY id DESC LIMIT 1"
        )
        return self._submit(self._one, (sql, (terminal_id, *mtis, stan, transmission_time)), False)

    def find_by_order(self, order_ref: str) -> Future[TxnRecord | None]:
        return self._submit(self._one, (BY_ORDER, (order_ref,)), False)

    def in_states(self, states: tuple[str, ...], limit: int = 100) -> Future[list[TxnRecord]]:
        states = tuple(states)
        if not states:
            return self._failed(ValueError("in_states needs at least one state"))
        if type(limit) is not int or limit < 1:
            return self._failed(ValueError(f"in_states limit must be a positive int, got {limit!r}"))
        return self._submit(self._many, states_query(states, limit), False)

    def find_completion(self, original_id: int) -> Future[TxnRecord | None]:
        return self._submit(self._one, (COMPLETION, (original_id,)), False)

    def reversing_completion(self, original_id: int, other_than: int) -> Future[TxnRecord | None]:
        return self._submit(self._one, (COMPLETION_REVERSING, (original_id, other_than)), False)

    def pending_reversals(self, limit: int = 1000) -> Future[list[TxnRecord]]:
        return self._submit(self._many, (PENDING_REVERSALS, (limit,)), False)

    def reversal_backlog(self) -> Future[tuple[int, float | None, int]]:
        return self._submit(self._row, (BACKLOG, ()), False)

    def retire(self, txn_id: int) -> Future[None]:
        return self._submit(self._retire, (txn_id,), True)

    def reserve_stans(self, acquirer: str, count: int) -> Future[int]:
        if type(count) is not int or not 1 <= count <= 999_999:
            return self._failed(ValueError(f"reserve_stans count must be 1..999999, got {count!r}"))
        return self._submit(self._reserve_stans, (acquirer, count), True)

    def stan_position(self, acquirer: str) -> Future[int]:
        return self._submit(self._stan_position, (acquirer,), False)

    # Spec 8 key state (switch.journal.terminal_keys); the records' cache
    # (_known) is not involved, so another process's commits are seen at once.

    def store_terminal_keys(self, terminal_id: str, slot: str, keys) -> Future[None]:
        return self._submit(self._keys_op, (terminal_keys.store, terminal_id, slot, keys), True)

    def terminal_keys(self, terminal_id: str) -> Future[dict]:
        return self._submit(self._keys_read, (terminal_keys.load, terminal_id), False)

    def all_terminal_keys(self) -> Future[dict]:
        return self._submit(self._keys_read, (terminal_keys.load_all,), False)

    def promote_terminal_keys(self, terminal_id: str, tak_kcv: str) -> Future[bool]:
        return self._submit(self._keys_read, (terminal_keys.promote, terminal_id, tak_kcv), True)

    def advance_ksn(self, device: str, counter: int) -> Future[bool]:
        return self._submit(self._keys_op, (terminal_keys.advance, device, counter), True)

    # A queued reversal's card number, sealed by the switch before it gets here
    # (switch.journal.reversal_card): the journal checks the form, never opens it.

    def keep_reversal_card(self, txn_id: int, sealed: bytes) -> Future[None]:
        try:
            cards.check_sealed(txn_id, sealed)
        except ValueError as exc:
            return self._failed(exc)
        return self._submit(self._keys_op, (cards.keep, txn_id, sealed), True)

    def reversal_card(self, txn_id: int) -> Future[bytes | None]:
        return self._submit(self._keys_read, (cards.load, txn_id), False)

    def purge_reversal_cards(self) -> Future[int]:
        return self._submit(self._keys_read, (cards.purge,), True)

    def forget_cards(self, before: float) -> Future[int]:
        return self._submit(self._forget_cards, (float(before),), True)

    def _forget_cards(self, before: float) -> int:
        gone, self._cards_swept = cards.forget_before(
            self._conn, self._cards_swept, before, self._known, self._cards_waiting)
        return gone + cards.forget_unmatched(self._conn, before)

    # -- operations (writer thread) ------------------------------------------

    def _end_reversal(self, *update_args: Any) -> TxnRecord:
        # One operation: the card goes with the update that ends the reversal, or neither (rolled back together).
        # An unmatched one keeps it for a late approval's reopened reversal (reversal_card.PURGE).
        rec = self._update(*update_args)
        if rec.state != cards.KEPT_WHEN_ENDED:
            cards.drop(self._conn, rec.id)
        return rec

    def _keys_op(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self._conn, self._now(), *args)

    def _keys_read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self._conn, *args)

    def _now(self) -> float:
        # Strictly increasing within this journal, so updated_at orders the
        # updates as they were made even when the clock ticks coarsely.
        now = float(self._clock())  # stored in a REAL column
        last = self._last_now
        if now <= last:
            now = last + 1e-6
        self._last_now = now
        return now

    def _remember(self, rec: TxnRecord) -> TxnRecord:
        known = self._known
        txn_id = rec.id
        known[txn_id] = rec
        known.move_to_end(txn_id)
        if len(known) > self._known_max:
            known.popitem(last=False)
        self._unsure.append(txn_id)
        return rec

    def _forget_unsure(self) -> None:
        known = self._known
        for txn_id in self._unsure:
            known.pop(txn_id, None)
        self._unsure.clear()

    # Without RETURNING, an insert or update costs SQLite (and the sqlite3
    # module) less than half as much: the new record is built from the values
    # written, or from the one remembered, when they are stored as they are.

    def _insert(self, rec: TxnRecord, row: tuple, key: tuple) -> tuple[TxnRecord, bool]:
        conn = self._conn
        now = self._now()
        cur = conn.execute(INSERT, row + (now, now))
        if cur.rowcount == 1:
            txn_id = cur.lastrowid
            if as_stored(INSERTED_TYPES, _inserted(row)):
                rec = replace(
                    rec, id=txn_id, rrn="%012d" % txn_id, created_at=now, updated_at=now
                )
            else:
                rec = record(conn.execute(BY_ID, (txn_id,)).fetchone())
            return self._remember(rec), True
        return self._remember(record(conn.execute(BY_KEY, key).fetchone())), False

    def _update(
        self, statements: tuple[str, str, tuple[frozenset, ...], bool], changes: dict[str, Any], txn_id: int,
        own_pan_check: bool, expect: str | None = None,
    ) -> TxnRecord:
        sql, returning, types, answers, _kinds = statements
        values = tuple(changes.values())
        now = self._now()
        stamps = (now, now, txn_id) if answers else (now, txn_id)
        if expect is not None:
            stamps += (expect,)
        known = self._known.get(txn_id)
        if known is not None and as_stored(types, values):
            if self._conn.execute(sql, values + stamps).rowcount != 1:
                self._missed(txn_id, expect)
            if answers:
                rec = replace(known, **changes, updated_at=now, answered_at=now)
            else:
                rec = replace(known, **changes, updated_at=now)
        else:
            rows = self._conn.execute(returning, values + stamps).fetchall()
            if not rows:
                self._missed(txn_id, expect)
            rec = record(rows[0])
        if own_pan_check:
            # Raising rolls the update back (the caller fails this operation alone).
            check_own_pan(
                {"acquirer_ref": rec.acquirer_ref, "order_ref": rec.order_ref}, rec.pan_hash, self._hmac_key
            )
        return self._remember(rec)

    def _missed(self, txn_id: int, expect: str | None) -> None:
        row = self._conn.execute("SELECT state FROM txn WHERE id = ?", (txn_id,)).fetchone()
        if row is None:
            raise KeyError(txn_id)
        raise StaleState(f"txn {txn_id} is {row[0]}, not {expect}")

    def _one(self, sql: str, args: tuple) -> TxnRecord | None:
        row = self._conn.execute(sql, args).fetchone()
        return None if row is None else self._remember(record(row))

    def _many(self, sql: str, args: tuple) -> list[TxnRecord]:
        return [self._remember(record(row)) for row in self._conn.execute(sql, args).fetchall()]

    def _row(self, sql: str, args: tuple) -> tuple:
        return tuple(self._conn.execute(sql, args).fetchone())

    def _retire(self, txn_id: int) -> None:
        if self._conn.execute("UPDATE txn SET key_epoch = id WHERE id = ?", (txn_id,)).rowcount != 1:
            raise KeyError(txn_id)
        self._known.pop(txn_id, None)

    def _reserve_stans(self, acquirer: str, count: int) -> int:
        conn = self._conn
        conn.execute("INSERT OR IGNORE INTO stan_block (acquirer, next) VALUES (?, 1)", (acquirer,))
        start = conn.execute("SELECT next FROM stan_block WHERE acquirer = ?", (acquirer,)).fetchone()[0]
        conn.execute(
            "UPDATE stan_block SET next = ? WHERE acquirer = ?", ((start - 1 + count) % 999_999 + 1, acquirer)
        )
        return start

    def _stan_position(self, acquirer: str) -> int:
        row = self._conn.execute("SELECT next FROM stan_block WHERE acquirer = ?", (acquirer,)).fetchone()
        return 1 if row is None else row[0]

    # -- GroupCommitter hooks (writer thread) --------------------------------

    def _open(self) -> None:
        conn, claimed = files.open_database(self.path, self._busy_timeout)
        try:
            schema.migrate(conn, self.path)
            # Never a time before the last settlement cut-off (a clock set back
            # while the switch was down): what is answered now belongs to the
            # next period, not to one already closed (switch.journal.settlement).
            (cutoff,) = conn.execute("SELECT coalesce(max(cutoff), 0) FROM settlement").fetchone()
            self._last_now = max(self._last_now, float(cutoff))
            self._executor = BatchExecutor(conn)
        except BaseException:
            conn.close()
            files.release(claimed)
            raise
        self._conn, self._claimed, self._identity = conn, claimed, files.identity(self.path)
        self._statement_numbers.clear()

    def _close_db(self) -> None:
        if self._executor is not None:
            self._executor.close()  # its statements go before the connection
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        files.release(self._claimed)
        self._claimed = None

    def _begin(self, writes: bool) -> None:
        # The transaction opens with the batch's first statement (in the same
        # call as its first compiled run, see _run_ops): one hand-over of the
        # GIL fewer.  IMMEDIATE takes the write lock up front: no SQLITE_BUSY
        # half-way.
        self._ran_commit = False
        self._begin_pending = writes

    def _run_op(self, op, outcomes: list, guarded: bool) -> bool:
        self._open_transaction()  # an operation the sqlite3 way: the batch's transaction first
        return super()._run_op(op, outcomes, guarded)

    def _open_transaction(self) -> None:
        """BEGIN now, if the batch's transaction is not open yet (before a statement run the sqlite3 way)."""
        writes = self._begin_pending
        if writes is not None:
            self._begin_pending = None
            self._seen_version(self._executor.begin(writes))

    def _seen_version(self, version: int) -> int:
        # data_version changes when another connection (another process, a
        # repair tool) has committed since we last looked: then the records
        # we remember may be stale.
        if version != self._data_version:
            self._known.clear()
            self._data_version = version
        return version

    def _savepoint(self) -> None:
        self._conn.execute("SAVEPOINT op")

    def _release(self) -> None:
        self._conn.execute("RELEASE op")

    def _rollback_to_savepoint(self) -> None:
        self._conn.execute("ROLLBACK TO op")
        self._conn.execute("RELEASE op")

    def _in_transaction(self) -> bool:
        return self._conn.in_transaction

    def _commit(self) -> None:
        if self._ran_commit:
            self._ran_commit = False  # the batch's last run committed it (native.sqlbatch run(commit=True))
        else:
            self._open_transaction()  # no statement opened it: COMMIT needs a transaction to end
            self._executor.commit()  # the fsync without the GIL, and one hand-over of it
        self._unsure.clear()

    def _rollback(self) -> None:
        self._begin_pending = None
        self._forget_unsure()
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def ping(self) -> Future[bool]:
        """A round trip through the writer: a write transaction resolves True; a closed
        journal, a dead writer, a database that cannot take the write lock, a journal file
        deleted or replaced while open, or, once a batch of writes failed, a probe write
        that still fails (files.writable) fail it like any write."""
        return self._submit(files.writable, (self, self.path, self._identity), True)
