"""The SQLite journal's compiled path: runs of inserts and updates stepped by native.sqlbatch."""
from __future__ import annotations

import sqlite3
from concurrent.futures import Future

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.journal import StaleState, TxnRecord
from switch.journal.groupcommit import GroupCommitter
from switch.journal.sqlite import FIELDS, SqliteJournal
from tests.test_journal import KEY, Gate, hold_writer, ok, txn


class CountingExecutor:
    """Wraps the journal's executor and records the size of every run."""

    def __init__(self, executor) -> None:
        self.executor = executor
        self.runs: list[tuple[int, bool]] = []
        self.commit_runs = 0  # runs asked to commit too (the last of a batch)
        self.commits = 0  # separate COMMIT calls
        self.begin_runs = 0  # runs asked to open the transaction too (the first of a batch)
        self.begins = 0  # separate BEGIN calls

    def run(self, steps, guarded=False, commit=False, begin=0, version=-1):
        self.runs.append((len(steps), guarded))
        if commit:
            self.commit_runs += 1
        if begin:
            self.begin_runs += 1
        return self.executor.run(steps, guarded, commit, begin, version)

    def commit(self):
        self.commits += 1
        return self.executor.commit()

    def begin(self, immediate):
        self.begins += 1
        return self.executor.begin(immediate)

    def __getattr__(self, name):
        return getattr(self.executor, name)


@pytest.fixture
def held():
    gate = Gate()
    j = SqliteJournal(":memory:", hmac_key=KEY, clock=gate)
    yield j, gate
    gate.open()
    j.close()


def count_runs(j: SqliteJournal) -> CountingExecutor:
    counting = CountingExecutor(j._executor)
    j._executor = counting  # the writer is held: it reads this on its next batch
    return counting


def test_inserts_and_updates_run_as_one_call_each_around_a_read(held):
    j, gate = held
    ids = [ok(j.insert(txn(i)))[0].id for i in range(1, 4)]
    hold_writer(j, gate)
    counting = count_runs(j)
    inserts = [j.insert(txn(i)) for i in range(10, 15)]
    read = j.find("DEMO0001", "000012", "1124065401")  # sees the insert queued before it
    updates = [j.update(i, state="sent", acquirer="bank-a") for i in ids]
    answers = j.update(ids[0], state="answered", response_code="00", response=b"\x02\x10")
    gate.open()
    records = [ok(f)[0] for f in inserts]
    assert ok(read) == records[2]
    assert [ok(f).state for f in updates] == ["sent"] * 3
    answered = ok(answers)
    assert answered.state == "answered" and answered.acquirer == "bank-a" and answered.answered_at == answered.updated_at
    # The five inserts; three updates; the second update of ids[0] in its own
    # run, planned from the first one's record.  (The gate's own insert ran
    # on the executor read before the count began.)
    assert counting.runs == [(5, False), (3, False), (1, False)]
    # The batch's first run opened its transaction and its last run committed
    # it: no BEGIN or COMMIT call of their own.
    assert (counting.begin_runs, counting.begins) == (1, 0)
    assert (counting.commit_runs, counting.commits) == (1, 0)
    for rec in records + [answered]:
        assert ok(j.get(rec.id)) == rec


def test_a_taken_key_in_a_run_returns_the_record_that_holds_it(held):
    j, gate = held
    first, _ = ok(j.insert(txn(1, content_digest="aa")))
    hold_writer(j, gate)
    counting = count_runs(j)
    before = j.insert(txn(2))
    again = j.insert(txn(1, content_digest="bb"))
    moved = j.update(first.id, state="sent")  # after the taken key: sees nothing of it
    after = j.insert(txn(3))
    gate.open()
    assert ok(before)[1] and ok(after)[1]
    assert ok(again) == (first, False)
    assert ok(moved).state == "sent" and ok(moved).content_digest == "aa"
    # Four planned, stopped after the taken key; the last two planned again.
    assert counting.runs == [(4, False), (2, False)]


def test_a_stale_update_in_a_run_fails_alone_without_a_rollback(held):
    j, gate = held
    a, _ = ok(j.insert(txn(1, state="sent")))
    b, _ = ok(j.insert(txn(2, state="sent")))
    hold_writer(j, gate)
    counting = count_runs(j)
    stale = j.update_if(a.id, "answered", state="reversal_pending")
    fine = j.update_if(b.id, "sent", state="answered", response_code="05")
    gate.open()
    with pytest.raises(StaleState, match=f"txn {a.id} is sent, not answered"):
        ok(stale)
    assert ok(fine).state == "answered"
    # Planned as one run, stopped at the stale one (no row changed, nothing to undo).
    assert counting.runs == [(2, False), (1, False)]
    assert ok(j.get(a.id)) == a


def test_a_failing_write_in_a_run_fails_alone(held):
    j, gate = held
    ok(j.insert(txn(1, kind="wallet", order_ref="ORDER-1")))
    hold_writer(j, gate)
    counting = count_runs(j)
    before = j.insert(txn(2))
    dup = j.insert(txn(3, kind="wallet", order_ref="ORDER-1"))
    after = j.insert(txn(4))
    gate.open()
    with pytest.raises(sqlite3.IntegrityError, match="order_ref"):
        ok(dup)
    assert ok(before)[1] and ok(after)[1]
    assert ok(j.find("DEMO0001", "000003", "1124065401")) is None
    # Unguarded until the failure, then the batch again with a savepoint per step.
    assert (3, False) in counting.runs and (3, True) in counting.runs


def test_values_not_stored_as_given_take_the_sqlite3_path(held):
    j, gate = held
    rec, _ = ok(j.insert(txn(1)))
    upd = ok(j.update(rec.id, amount=1234.0, reversal_attempts=True))
    assert type(upd.amount) is int and upd.reversal_attempts == 1 and upd == ok(j.get(rec.id))
    hold_writer(j, gate)
    counting = count_runs(j)
    before = j.insert(txn(2))
    odd = j.insert(txn(3, response=bytearray(b"x"), amount=500.0))
    after = j.insert(txn(4))
    gate.open()
    odd_rec, _ = ok(odd)
    assert type(odd_rec.response) is bytes and type(odd_rec.amount) is int and odd_rec == ok(j.get(odd_rec.id))
    assert ok(before)[1] and ok(after)[1] and ok(after)[0] == ok(j.get(ok(after)[0].id))
    # Three planned; the executor hands the odd one back unrun; the last runs on its own.
    assert counting.runs == [(3, False), (1, False)]


def test_an_unremembered_record_is_read_back(tmp_path):
    path = str(tmp_path / "j.sqlite")
    j = SqliteJournal(path, hmac_key=KEY)
    rec, _ = ok(j.insert(txn(1)))
    j.close()
    j = SqliteJournal(path, hmac_key=KEY)
    try:
        counting = count_runs(j)
        upd = ok(j.update(rec.id, state="sent"))  # with RETURNING: nothing remembered
        assert upd.amount == 1000 and upd.state == "sent"
        again = ok(j.update(rec.id, state="answered"))  # remembered now
        assert again == ok(j.get(rec.id))
        assert counting.runs == [(1, False)]
    finally:
        j.close()


# -- the compiled path against the sqlite3-module path, on random batches -----------


class Collecting(SqliteJournal):
    """Queues operations until flush(), which runs them as one batch (no writer thread)."""

    def __init__(self) -> None:
        self.pending: list = []
        ticks = iter(range(1, 10**9))
        super().__init__(":memory:", hmac_key=KEY, inline=True, clock=lambda: float(next(ticks)))

    def _submit(self, fn, args, writes):
        fut = Future()
        self.pending.append((fut, fn, args, writes))
        return fut

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        for op in batch:
            op[0].set_running_or_notify_cancel()
        self._run_batch(batch)


class CollectingSqlitePath(Collecting):
    _run_ops = GroupCommitter._run_ops  # every operation through the sqlite3 module


STAMPS = ("created_at", "updated_at", "answered_at")


def comparable(value):
    """A result without the journal's clock stamps (the two paths read the clock a different number of times)."""
    if isinstance(value, TxnRecord):
        return msgspec.structs.replace(value, **{s: None for s in STAMPS})
    if isinstance(value, tuple):
        return tuple(comparable(v) for v in value)
    return value


def outcome(fut):
    try:
        return "ok", comparable(fut.result(timeout=0))
    except Exception as exc:  # noqa: BLE001 - the error's type is the outcome
        return "error", type(exc).__name__


inserts = st.tuples(
    st.just("insert"), st.integers(1, 6), st.sampled_from([None, "O1", "O2"]),
    st.sampled_from([1000, 1500.0, None]), st.sampled_from([None, b"x", bytearray(b"y")]),
)
updates = st.tuples(
    st.just("update"), st.integers(1, 9),
    st.sampled_from([
        {"state": "sent"}, {"state": "answered", "response_code": "00", "response": b"r"},
        {"state": "answered", "response_code": "05"}, {"reversal_attempts": True}, {"amount": "ten"},
        {"order_ref": "O1"}, {"acquirer_ref": "ref-1", "auth_code": "A1"},
    ]),
)
conditional = st.tuples(
    st.just("update_if"), st.integers(1, 9), st.sampled_from(["received", "sent", "answered"]),
    st.sampled_from(["sent", "reversal_pending"]),
)
reads = st.tuples(st.sampled_from(["get", "find"]), st.integers(1, 9))
batches = st.lists(st.lists(st.one_of(inserts, updates, conditional, reads), min_size=1, max_size=12),
                   min_size=1, max_size=6)


def submit(j: SqliteJournal, op: tuple):
    kind = op[0]
    if kind == "insert":
        _, stan, order_ref, amount, response = op
        return j.insert(txn(stan, order_ref=order_ref, amount=amount, response=response,
                            kind="wallet" if order_ref else "card"))
    if kind == "update":
        return j.update(op[1], **op[2])
    if kind == "update_if":
        return j.update_if(op[1], op[2], state=op[3])
    if kind == "get":
        return j.get(op[1])
    return j.find("DEMO0001", "%06d" % op[1], "1124065401")


@settings(max_examples=150, deadline=None)
@given(batches)
def test_the_compiled_path_does_what_the_sqlite3_path_does(plan):
    compiled, reference = Collecting(), CollectingSqlitePath()
    try:
        for batch in plan:
            futures = [(submit(compiled, op), submit(reference, op)) for op in batch]
            compiled.flush()
            reference.flush()
            for op, (a, b) in zip(batch, futures):
                assert outcome(a) == outcome(b), op
        columns = ", ".join(f for f in FIELDS if f not in STAMPS)
        for table, sql in (("txn", f"SELECT {columns} FROM txn ORDER BY id"),
                           ("outbox", "SELECT id, txn_id, event FROM outbox ORDER BY id")):
            assert compiled._conn.execute(sql).fetchall() == reference._conn.execute(sql).fetchall(), table
    finally:
        compiled.close()
        reference.close()


def test_only_waiting_transactions_are_in_the_state_index_and_its_readers_use_it(tmp_path):
    """txn_state is partial (schema.OPEN_STATES): an answered payment leaves it in its own update."""
    from switch.journal import reversal_card, statements
    from switch.journal.schema import OPEN_STATES, OPEN_STATES_WHERE

    path = str(tmp_path / "j.sqlite")
    j = SqliteJournal(path, hmac_key=KEY)
    try:
        ids = [ok(j.insert(txn(i, state="sent")))[0].id for i in range(1, 6)]
        ok(j.update(ids[0], state="answered", response_code="00"))
        ok(j.update(ids[1], state="reversal_pending"))
        ok(j.update(ids[4], state="reversal_refused"))
        count, _oldest, refused = ok(j.reversal_backlog())
        assert (count, refused) == (1, 1)
        wallet = ok(j.insert(txn(9, state="wallet_pending", kind="wallet")))[0]
        assert [r.id for r in ok(j.in_states(("sent",)))] == ids[2:4]
        assert [r.id for r in ok(j.in_states(("sent", "reversal_pending")))] == [ids[2], ids[3], ids[1]]
        assert [r.id for r in ok(j.in_states(("wallet_pending", "sent")))] == [ids[2], ids[3], wallet.id]
    finally:
        j.close()
    db = sqlite3.connect(path)
    try:
        # What the index holds: the waiting transactions only.
        indexed = db.execute(f"SELECT id FROM txn INDEXED BY txn_state WHERE {OPEN_STATES_WHERE}").fetchall()
        assert sorted(i for (i,) in indexed) == ids[1:]
        assert set(OPEN_STATES) == {"received", "sent", "reversal_pending", "reversal_refused"}

        def plan(sql, *args):
            return " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))

        from switch.journal.sqlite import states_query
        for sql, args in [
            states_query(("sent",), 10),  # start-up recovery
            states_query(("sent", "reversal_pending"), 10),
            (statements.PENDING_REVERSALS, (10,)),
            (statements.BACKLOG, ()),
        ]:
            assert "INDEX txn_state" in plan(sql, *args), sql
        # The start-up purge walks the few kept cards, each transaction by its id: never all of txn
        # (an unmatched one keeps its card, and unmatched is not a waiting state).
        for sql, args in [(reversal_card.PURGE, ()), (reversal_card.FORGET_UNMATCHED, (0,))]:
            steps = plan(sql, *args)
            assert "SEARCH txn USING INTEGER PRIMARY KEY" in steps and "SCAN txn" not in steps, steps
        sql, args = states_query(("wallet_pending",), 10)
        assert "INDEX txn_state" not in plan(sql, *args)
    finally:
        db.close()
