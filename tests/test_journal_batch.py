"""The SQLite journal's compiled path: runs of inserts and updates stepped by native.sqlbatch."""
from __future__ import annotations

import sqlite3

import pytest

from switch.journal import StaleState
from switch.journal.sqlite import SqliteJournal
from tests.test_journal import KEY, Gate, hold_writer, ok, txn


class CountingExecutor:
    """Wraps the journal's executor and records the size of every run."""

    def __init__(self, executor) -> None:
        self.executor = executor
        self.runs: list[tuple[int, bool]] = []

    def run(self, steps, guarded=False):
        self.runs.append((len(steps), guarded))
        return self.executor.run(steps, guarded)

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
