"""The transaction journal: records, settlement totals, group commit, PAN guard."""
from __future__ import annotations

import hashlib
import hmac
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native.routing import luhn_ok
from switch.journal import (
    pan_key,
    JournalClosed,
    JournalError,
    StaleState,
    Totals,
    TxnRecord,
    check_no_pan,
    open_journal,
    pan_protect,
)
from switch.journal import files
from switch.journal.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteJournal

KEY = b"journal-test-hmac-key"
PAN = "4111111111111111"
TIMEOUT = 10


def txn(stan: int, *, terminal: str = "DEMO0001", mti: str = "0200", **kw) -> TxnRecord:
    fields = dict(
        terminal_id=terminal,
        merchant_id="DEMO00000000001",
        mti=mti,
        stan="%06d" % stan,
        transmission_time="1124065401",
        processing_code="000000",
        amount=1000,
        currency="978",
    )
    fields.update(kw)
    return TxnRecord(**fields)


def ok(fut):
    return fut.result(timeout=TIMEOUT)


class Gate:
    """A clock that holds the writer thread on its next operation until opened.

    Everything submitted meanwhile queues up and runs as one batch.
    """

    def __init__(self) -> None:
        self.closed = False
        self.entered = threading.Event()
        self.opened = threading.Event()

    def shut(self) -> None:
        self.closed = True
        self.entered.clear()
        self.opened.clear()

    def open(self) -> None:
        self.closed = False
        self.opened.set()

    def __call__(self) -> float:
        if self.closed:
            self.entered.set()
            assert self.opened.wait(TIMEOUT)
        return time.time()


class Hold:
    """The writer process's gate: this side keeps operations and sends them as one frame on open()."""

    def __init__(self) -> None:
        self.journal = None

    def open(self) -> None:
        if self.journal is not None:
            self.journal.release()


# Every test that takes `writer` runs against both: the database on a writer
# thread of this process, and in a writer process of its own.
WRITERS = ["thread", "process"]


@pytest.fixture(params=WRITERS)
def writer(request):
    return request.param


def gate_for(writer: str):
    return Gate() if writer == "thread" else Hold()


def gate_options(gate) -> dict:
    return {"clock": gate} if isinstance(gate, Gate) else {}


@pytest.fixture
def journal(writer):
    j = open_journal("sqlite://:memory:", hmac_key=KEY, writer=writer)
    yield j
    j.close()


@pytest.fixture
def gated(writer):
    gate = gate_for(writer)
    j = open_journal("sqlite://:memory:", hmac_key=KEY, writer=writer, **gate_options(gate))
    yield j, gate
    gate.open()
    j.close()


def hold_writer(j, gate: Gate | Hold) -> None:
    """Stop the writer inside an insert of its own (STAN 999999) until gate.open()."""
    if isinstance(gate, Hold):
        # The gate's insert commits on its own, then everything waits here.
        ok(j.insert(txn(999999, terminal="GATE0001")))
        gate.journal = j
        j.hold()
        return
    gate.shut()
    j.insert(txn(999999, terminal="GATE0001"))
    assert gate.entered.wait(TIMEOUT)


# -- records ------------------------------------------------------------------


def test_insert_assigns_id_rrn_and_times(journal):
    before = time.time()
    rec, new = ok(journal.insert(txn(1)))
    assert new
    assert rec.id == 1 and rec.rrn == "000000000001"
    assert before <= rec.created_at == rec.updated_at <= time.time()
    assert rec.state == "received" and rec.amount == 1000 and rec.kind == "card"
    rec2, new2 = ok(journal.insert(txn(2)))
    assert new2 and rec2.id == 2 and rec2.rrn == "000000000002"


def test_duplicate_key_returns_existing_and_writes_nothing(journal):
    first, _ = ok(journal.insert(txn(1, content_digest="aa")))
    ok(journal.update(first.id, state="answered", response_code="00", response=b"\x02\x10..."))
    again, new = ok(journal.insert(txn(1, amount=999, content_digest="bb")))
    assert not new
    assert again.id == first.id and again.amount == 1000 and again.content_digest == "aa"
    assert again.response == b"\x02\x10..." and again.state == "answered"
    # Another MTI under the same key is the same key (spec 6: 41 + 11 + 7) ...
    same, new = ok(journal.insert(txn(1, mti="0400")))
    assert not new and same.id == first.id and same.mti == "0200"
    # ... another terminal or time is another transaction.
    assert ok(journal.insert(txn(1, terminal="DEMO0002")))[1]
    assert ok(journal.insert(txn(1, transmission_time="1124065402")))[1]


def test_update_and_get(journal):
    rec, _ = ok(journal.insert(txn(1)))
    updated = ok(
        journal.update(rec.id, state="sent", acquirer="bank-a", acquirer_ref="000123|432100000123")
    )
    assert updated.state == "sent" and updated.acquirer == "bank-a"
    assert updated.updated_at > rec.updated_at and updated.created_at == rec.created_at
    assert ok(journal.get(rec.id)) == updated
    answered = ok(journal.update(rec.id, state="answered", response_code="00", auth_code="A1B2C3"))
    assert answered.acquirer == "bank-a" and answered.auth_code == "A1B2C3"
    assert ok(journal.get(12345)) is None


def test_update_errors(journal):
    rec, _ = ok(journal.insert(txn(1)))
    with pytest.raises(KeyError):
        ok(journal.update(rec.id + 100, state="sent"))
    with pytest.raises(ValueError, match="colour"):
        ok(journal.update(rec.id, colour="red"))
    for assigned in ("id", "rrn", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=assigned):
            ok(journal.update(rec.id, **{assigned: 7}))
    # STRICT tables: a value of the wrong type is refused, not stored.
    with pytest.raises(sqlite3.IntegrityError):
        ok(journal.update(rec.id, amount="ten"))
    assert ok(journal.get(rec.id)) == rec


def test_returned_records_are_what_was_stored(journal):
    # The writer builds the records it returns from the values it wrote; they
    # must be exactly what reading the row back gives, types included.
    given = txn(1, pan_masked="411111******1111", acquirer_ref="r-1")
    rec, _ = ok(journal.insert(given))
    assert given.id == 0 and given.rrn == ""  # the caller's record is left alone
    assert ok(journal.get(rec.id)) == rec
    for changes in (
        {"state": "sent", "acquirer": "bank"},
        {"response": b"\x00\x01", "response_code": "00", "auth_code": None},
        {"amount": 1234.0},  # stored as an INTEGER
        {"reversal_attempts": True},  # stored as 1
        {"response": bytearray(b"\x02")},  # stored as bytes
        {"original_id": 7, "order_state": "paid"},
    ):
        upd = ok(journal.update(rec.id, **changes))
        stored = ok(journal.get(rec.id))
        assert upd == stored, changes
        assert [type(v) for v in msgspec.structs.astuple(upd)] == [
            type(v) for v in msgspec.structs.astuple(stored)
        ], changes
    assert type(ok(journal.get(rec.id)).amount) is int
    odd, _ = ok(journal.insert(txn(2, amount=500.0, response=bytearray(b"x"))))
    assert odd == ok(journal.get(odd.id)) and type(odd.amount) is int and type(odd.response) is bytes


def test_insert_stores_the_record_as_it_was_when_submitted(gated):
    j, gate = gated
    hold_writer(j, gate)
    rec = txn(1)
    fut = j.insert(rec)
    rec.state = "changed-after-insert"
    gate.open()
    stored, _ = ok(fut)
    assert stored.state == "received" and ok(j.get(stored.id)) == stored


def test_column_types_match_the_schema(journal):
    from switch.journal.sqlite import COLUMN_TYPES, INSERTED

    db = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        for statement in migration:
            db.execute(statement)
    declared = {name: kind for _, name, kind, *_ in db.execute("PRAGMA table_xinfo(txn)")}
    db.close()
    python = {"TEXT": str, "INTEGER": int, "BLOB": bytes, "REAL": float}
    assert set(COLUMN_TYPES) == set(INSERTED)
    for name, types in COLUMN_TYPES.items():
        assert types == {python[declared[name]], type(None)}, name


def test_a_write_by_another_connection_is_seen(tmp_path, writer):
    path = tmp_path / "journal.sqlite"
    j = open_journal(f"sqlite://{path}", writer=writer)
    try:
        rec, _ = ok(j.insert(txn(1)))
        ok(j.update(rec.id, state="sent"))
        # A repair tool writes the same row from outside.
        db = sqlite3.connect(path)
        db.execute("UPDATE txn SET auth_code = 'FIXED1' WHERE id = ?", (rec.id,))
        db.commit()
        db.close()
        upd = ok(j.update(rec.id, response_code="00"))
        assert upd.auth_code == "FIXED1" and upd.state == "sent"
        assert upd == ok(j.get(rec.id))
    finally:
        j.close()


def test_insert_takes_a_txn_record(journal):
    with pytest.raises(TypeError, match="TxnRecord"):
        ok(journal.insert({"terminal_id": "DEMO0001"}))


def test_find_and_find_original(journal):
    purchase, _ = ok(journal.insert(txn(7)))
    preauth, _ = ok(journal.insert(txn(8, mti="0100")))
    ok(journal.insert(txn(7, terminal="DEMO0002")))
    assert ok(journal.find("DEMO0001", "000007", "1124065401")) == purchase
    assert ok(journal.find("DEMO0001", "000007", "1124065402")) is None
    # Field 90 of an 0400 names MTI + STAN + field 7 of the original.
    assert ok(journal.find_original("DEMO0001", ("0100", "0200"), "000007", "1124065401")) == purchase
    assert ok(journal.find_original("DEMO0001", ("0100",), "000008", "1124065401")) == preauth
    assert ok(journal.find_original("DEMO0001", ("0100",), "000007", "1124065401")) is None
    assert ok(journal.find_original("DEMO0003", ("0200",), "000007", "1124065401")) is None
    reversal, _ = ok(journal.insert(txn(9, mti="0400", original_id=purchase.id)))
    assert reversal.original_id == purchase.id


def test_reads_see_earlier_writes_without_waiting(journal):
    ins = journal.insert(txn(1))
    upd = journal.update(1, state="sent")
    got = journal.get(1)
    assert ok(got).state == "sent"
    assert ok(ins)[0].state == "received" and ok(upd).state == "sent"


# -- settlement totals ----------------------------------------------------------


def approved(j, stan, **kw):
    rec, _ = ok(j.insert(txn(stan, **kw)))
    return ok(j.update(rec.id, state="answered", response_code="00"))


def test_totals_count_approved_purchases_refunds_and_completions(journal):
    approved(journal, 1, amount=1000)  # purchase: debit
    approved(journal, 2, amount=250, processing_code="001000")  # purchase, account type 10
    approved(journal, 3, amount=300, processing_code="200000")  # refund: credit
    pre = approved(journal, 4, amount=5000, mti="0100")  # pre-auth: neither
    approved(journal, 5, amount=4200, mti="0220", original_id=pre.id)  # completion: debit
    approved(journal, 6, amount=0, processing_code="310000")  # balance inquiry: neither
    approved(journal, 7, amount=700, processing_code="210000")  # top-up: neither
    declined, _ = ok(journal.insert(txn(8, amount=5105)))
    ok(journal.update(declined.id, state="answered", response_code="51"))
    ok(journal.insert(txn(9, amount=77)))  # never answered
    reversed_ = approved(journal, 10, amount=111)
    ok(journal.update(reversed_.id, state="reversed"))
    pending = approved(journal, 11, amount=222, processing_code="200000")
    ok(journal.update(pending.id, state="reversal_pending"))
    approved(journal, 12, mti="0400", amount=111, original_id=reversed_.id)  # 0400: neither
    approved(journal, 13, terminal="DEMO0002", amount=9999)  # another terminal
    assert ok(journal.totals("DEMO0001")) == Totals(
        credits_count=1, debits_count=3, credits_amount=300, debits_amount=1000 + 250 + 4200
    )
    assert ok(journal.totals("DEMO0002")) == Totals(0, 1, 0, 9999)
    assert ok(journal.totals("NOSUCH01")) == Totals(0, 0, 0, 0)


def test_totals_start_after_the_last_accepted_settlement(journal):
    approved(journal, 1, amount=1000)
    approved(journal, 2, amount=300, processing_code="200000")
    approved(journal, 3, terminal="DEMO0002", amount=50)
    assert ok(journal.totals("DEMO0001")) == Totals(1, 1, 300, 1000)

    # A rejected 0500 (95) changes nothing: the terminal keeps its batch open.
    assert ok(journal.settle("DEMO0001", Totals(1, 1, 300, 999), accepted=False)) is None
    approved(journal, 4, amount=20)
    assert ok(journal.totals("DEMO0001")) == Totals(1, 2, 300, 1020)

    ok(journal.settle("DEMO0001", Totals(1, 2, 300, 1020), accepted=True))
    assert ok(journal.totals("DEMO0001")) == Totals(0, 0, 0, 0)
    approved(journal, 5, amount=40)
    approved(journal, 6, amount=60, processing_code="200000")
    assert ok(journal.totals("DEMO0001")) == Totals(1, 1, 60, 40)
    # Other terminals keep their own batches.
    assert ok(journal.totals("DEMO0002")) == Totals(0, 1, 0, 50)

    ok(journal.settle("DEMO0001", Totals(1, 1, 60, 40), accepted=True))
    assert ok(journal.totals("DEMO0001")) == Totals(0, 0, 0, 0)
    ok(journal.settle("DEMO0001", Totals(0, 0, 0, 0), accepted=False))
    assert ok(journal.totals("DEMO0001")) == Totals(0, 0, 0, 0)


# -- sweepers -------------------------------------------------------------------


def test_reversing_completion_finds_another_completion_of_the_preauth_waiting_for_its_reversal(journal):
    pre = ok(journal.insert(txn(1, mti="0100", state="answered", response_code="00")))[0]
    other = ok(journal.insert(txn(9, mti="0100", state="answered", response_code="00")))[0]
    late = ok(journal.insert(txn(2, mti="0220", original_id=pre.id, state="reversal_pending")))[0]
    ok(journal.insert(txn(3, mti="0220", original_id=other.id, state="reversal_pending")))
    ok(journal.insert(txn(4, mti="0400", original_id=pre.id, state="reversal_pending")))
    mine = ok(journal.insert(txn(5, mti="0220", original_id=pre.id, state="received")))[0]
    assert ok(journal.reversing_completion(pre.id, mine.id)).id == late.id
    assert ok(journal.reversing_completion(pre.id, late.id)) is None  # not itself; 0400s and others' are not
    ok(journal.update(late.id, state="reversed"))
    assert ok(journal.reversing_completion(pre.id, mine.id)) is None


def test_in_states_least_recently_updated_first(journal):
    ids = [ok(journal.insert(txn(i, state="reversal_pending")))[0].id for i in range(1, 6)]
    ok(journal.insert(txn(10, state="answered")))
    wallet = ok(journal.insert(txn(11, state="wallet_pending", kind="wallet")))[0]

    assert [r.id for r in ok(journal.in_states(("reversal_pending",)))] == ids
    assert [r.id for r in ok(journal.in_states(("reversal_pending",), limit=2))] == ids[:2]
    # A sweeper that retried the first one moves it behind the others.
    ok(journal.update(ids[0], reversal_attempts=1))
    assert [r.id for r in ok(journal.in_states(("reversal_pending",)))] == ids[1:] + ids[:1]
    ok(journal.update(ids[2], state="reversed"))
    both = ok(journal.in_states(("reversal_pending", "wallet_pending")))
    assert [r.id for r in both] == [ids[1], ids[3], ids[4], wallet.id, ids[0]]
    assert ok(journal.in_states(("nothing",))) == []
    with pytest.raises(ValueError):
        ok(journal.in_states(()))
    with pytest.raises(ValueError):
        ok(journal.in_states(("answered",), limit=0))


def test_updates_in_one_batch_keep_their_order(gated):
    j, gate = gated
    a, b, c = (ok(j.insert(txn(i, state="reversal_pending")))[0].id for i in (1, 2, 3))
    hold_writer(j, gate)
    futs = [j.update(b, reversal_attempts=1), j.update(a, reversal_attempts=1)]
    gate.open()
    for f in futs:
        ok(f)
    assert [r.id for r in ok(j.in_states(("reversal_pending",)))] == [c, b, a]


def test_order_ref_is_unique_when_set(journal):
    a, _ = ok(journal.insert(txn(1, kind="wallet", order_ref="PS20241124000001")))
    ok(journal.insert(txn(2, kind="wallet")))
    ok(journal.insert(txn(3, kind="wallet")))  # many NULLs are fine
    with pytest.raises(sqlite3.IntegrityError, match="order_ref"):
        ok(journal.insert(txn(4, kind="wallet", order_ref="PS20241124000001")))
    assert ok(journal.find("DEMO0001", "000004", "1124065401")) is None
    with pytest.raises(sqlite3.IntegrityError):
        ok(journal.update(2, order_ref="PS20241124000001"))
    assert ok(journal.find_by_order("PS20241124000001")) == a
    assert ok(journal.find_by_order("PS-unknown")) is None


# -- group commit -----------------------------------------------------------------


def test_group_commit_batches_concurrent_inserts(tmp_path, writer):
    j = open_journal(f"sqlite://{tmp_path}/journal.sqlite", writer=writer)
    threads, per_thread = 8, 125
    start = threading.Barrier(threads)
    results: dict[int, list] = {}

    def submit(t: int) -> None:
        start.wait()
        futs = [j.insert(txn(i, terminal="T%07d" % t)) for i in range(per_thread)]
        results[t] = [ok(f) for f in futs]

    workers = [threading.Thread(target=submit, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    try:
        got = [rec for t in range(threads) for rec in results[t]]
        assert len(got) == 1000 and all(new for _, new in got)
        assert len({rec.id for rec, _ in got}) == 1000
        assert {rec.rrn for rec, _ in got} == {"%012d" % rec.id for rec, _ in got}
        stats = j.stats
        assert stats["ops"] == 1000 and stats["failed_commits"] == 0
        assert stats["commits"] <= 100, stats
        assert stats["max_batch"] > 10, stats
    finally:
        j.close()


def test_max_batch_bounds_a_batch(tmp_path, writer):
    gate = gate_for(writer)
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", max_batch=16, writer=writer, **gate_options(gate))
    hold_writer(j, gate)
    futs = [j.insert(txn(i)) for i in range(100)]
    gate.open()
    assert all(ok(f)[1] for f in futs)
    assert j.stats["max_batch"] == 16
    assert j.stats["commits"] >= 1 + 100 // 16
    j.close()


def test_a_failing_operation_fails_alone(gated):
    j, gate = gated
    ok(j.insert(txn(1, kind="wallet", order_ref="ORDER-1")))
    commits = j.stats["commits"]
    hold_writer(j, gate)
    before = j.insert(txn(2))
    dup_order = j.insert(txn(3, kind="wallet", order_ref="ORDER-1"))  # UNIQUE constraint
    missing = j.update(4242, state="sent")  # KeyError
    bad_type = j.update(1, reversal_attempts="many")  # STRICT type check
    after = j.update(1, state="wallet_pending")
    read = j.find("DEMO0001", "000003", "1124065401")
    gate.open()

    assert ok(before)[1]
    with pytest.raises(sqlite3.IntegrityError):
        ok(dup_order)
    with pytest.raises(KeyError):
        ok(missing)
    with pytest.raises(sqlite3.IntegrityError):
        ok(bad_type)
    assert ok(after).state == "wallet_pending" and ok(after).reversal_attempts == 0
    assert ok(read) is None  # the failed insert left nothing behind
    # One commit for the gate's own insert, one for the six operations above.
    assert j.stats["commits"] == commits + 2
    assert j.stats["max_batch"] == 6
    assert ok(j.get(1)) == ok(after)
    assert ok(j.get(ok(before)[0].id)) == ok(before)[0]


def test_a_failing_operation_fails_alone_at_any_place_in_its_batch(gated):
    j, gate = gated
    ok(j.insert(txn(1, kind="wallet", order_ref="ORDER-1")))
    for place in range(4):
        hold_writer(j, gate)
        ops = [
            lambda i: j.insert(txn(100 + 10 * place + i)),
            lambda i: j.update(1, reversal_attempts=10 * place + i),
            lambda i: j.get(1),
        ]
        futs = [ops[i % 3](i) for i in range(3)]
        futs.insert(place, j.insert(txn(90 + place, kind="wallet", order_ref="ORDER-1")))
        later = j.update(1, state="answered-%d" % place)
        gate.open()
        with pytest.raises(sqlite3.IntegrityError):
            ok(futs[place])
        rest = [ok(f) for i, f in enumerate(futs) if i != place]
        assert rest[0][1] and rest[1].reversal_attempts == 10 * place + 1
        assert ok(later) == ok(j.get(1)) and ok(later).state == "answered-%d" % place
        assert ok(j.find("DEMO0001", "%06d" % (90 + place), "1124065401")) is None
        j.stats["max_batch"] = 0


class FlakyCommitJournal(SqliteJournal):
    fail_commit_number = 0  # the n-th commit fails

    def _commit(self) -> None:
        if self.stats["commits"] + 1 == self.fail_commit_number:
            self.fail_commit_number = 0
            raise sqlite3.OperationalError("disk I/O error")
        super()._commit()


def test_a_failed_commit_fails_the_whole_batch():
    gate = Gate()
    j = FlakyCommitJournal(":memory:", clock=gate)
    try:
        ok(j.insert(txn(1, order_ref="ORDER-1")))
        # The gate's own insert commits; the batch after it fails to.
        j.fail_commit_number = j.stats["commits"] + 2
        hold_writer(j, gate)
        fresh = j.insert(txn(2))
        upd = j.update(1, state="sent")
        dup = j.insert(txn(3, order_ref="ORDER-1"))
        read = j.get(1)
        gate.open()
        for fut in (fresh, upd, read):
            with pytest.raises(JournalError, match="not written") as info:
                ok(fut)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(sqlite3.IntegrityError):  # keeps its own error
            ok(dup)
        assert j.stats["failed_commits"] == 1
        # Nothing of the batch is there, and the journal carries on.
        # An update returns the record as stored, not as the failed batch left it.
        assert ok(j.update(1, auth_code="A1")).state == "received"
        assert ok(j.get(1)).state == "received"
        assert ok(j.find("DEMO0001", "000002", "1124065401")) is None
        assert ok(j.insert(txn(2)))[1]
    finally:
        gate.open()
        j.close()


def test_cancelled_before_it_ran_is_not_written(gated):
    j, gate = gated
    hold_writer(j, gate)
    fut = j.insert(txn(1))
    assert fut.cancel()
    gate.open()
    with pytest.raises(CancelledError):
        fut.result()
    assert ok(j.find("DEMO0001", "000001", "1124065401")) is None


# -- durability and lifecycle --------------------------------------------------------


def test_data_survives_close_and_reopen(tmp_path, writer):
    url = f"sqlite://{tmp_path}/journal.sqlite"
    j = open_journal(url, writer=writer)
    rec, _ = ok(j.insert(txn(1)))
    ok(j.update(rec.id, state="answered", response_code="00", response=b"\x00\x01\xff"))
    ok(j.settle("DEMO0001", Totals(0, 1, 0, 1000), accepted=True))
    pending = [j.insert(txn(i)) for i in range(2, 50)]  # queued: close() runs them
    j.close()
    assert all(f.done() for f in pending)

    j = open_journal(url, writer=writer)
    try:
        again = ok(j.get(rec.id))
        assert again.response == b"\x00\x01\xff" and again.state == "answered"
        assert ok(j.find("DEMO0001", "000049", "1124065401")) is not None
        assert ok(j.totals("DEMO0001")) == Totals(0, 0, 0, 0)  # the settlement survived
        assert ok(j.insert(txn(50)))[0].id == 50  # ids (RRNs) carry on
    finally:
        j.close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_refuses_a_newer_schema(tmp_path, writer):
    path = tmp_path / "journal.sqlite"
    open_journal(f"sqlite://{path}", writer=writer).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer"):
        open_journal(f"sqlite://{path}", writer=writer)


def test_after_close_operations_fail(journal):
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalClosed):
        ok(journal.insert(txn(1)))
    with pytest.raises(JournalClosed):
        ok(journal.get(1))


def test_open_errors(tmp_path, writer):
    with pytest.raises(JournalError, match="its directory .* does not exist"):  # named (tests/test_journal_strict.py)
        open_journal(f"sqlite://{tmp_path}/no/such/dir/journal.sqlite", writer=writer)
    with pytest.raises(ValueError, match="'postgresql' is not supported yet"):
        open_journal("postgresql://payswitch:s3cret@db/payswitch", writer=writer)
    with pytest.raises(ValueError, match="'mysql'") as info:
        open_journal("mysql://payswitch:s3cret@db/payswitch", writer=writer)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError):
        open_journal("sqlite://", writer=writer)
    with pytest.raises(ValueError):
        open_journal("journal.sqlite", writer=writer)
    with pytest.raises(ValueError, match="writer"):
        open_journal("sqlite://:memory:", writer="fibre")


# -- cardholder data -------------------------------------------------------------------


def test_pan_protect():
    masked, digest = pan_protect(PAN, KEY)
    assert masked == "411111******1111"
    # versioned, keyed by a key derived from the secret (tests/test_data_at_rest.py)
    assert digest == "v1:" + hmac.new(pan_key(KEY), PAN.encode(), hashlib.sha256).hexdigest()
    assert len(digest) == 3 + 64
    assert pan_protect("4000056655665556", KEY)[1] != digest
    assert pan_protect(PAN, b"another key")[1] != digest
    assert pan_protect("6212345678901234567", KEY)[0] == "621234*********4567"
    assert pan_protect("8800123456789015", KEY)[0] == "880012******9015"  # city card, no Luhn
    assert pan_protect("123456789012", KEY)[0] == "********9012"
    for bad in ("", "4111 1111 1111 1111", "1234567", "4" * 20, "４１１１１１１１１１１１１１１１"):
        with pytest.raises(ValueError):
            pan_protect(bad, KEY)
    with pytest.raises(ValueError):
        pan_protect(PAN, b"")


def test_full_pan_is_refused(journal):
    masked, digest = pan_protect(PAN, KEY)
    for field, value in [
        ("pan_masked", PAN),
        ("pan_masked", "8800123456789015"),  # city card number, not Luhn-valid
        ("pan_hash", PAN),
        ("acquirer", f"bank-a {PAN}"),
        ("auth_code", PAN + "D2512"),
        ("state", f"x={PAN};"),
    ]:
        with pytest.raises(ValueError, match=field):
            ok(journal.insert(txn(1, **{field: value})))
    assert ok(journal.get(1)) is None

    rec, _ = ok(journal.insert(txn(1, pan_masked=masked, pan_hash=digest)))
    with pytest.raises(ValueError, match="state"):
        ok(journal.update(rec.id, state=PAN))
    # The field that legitimately hold long numbers are not checked by Luhn...
    ok(journal.update(rec.id, acquirer_ref="2024112422001400000000000001", order_ref="0001231124065401"))
    ok(journal.insert(txn(2, merchant_id="123456789012347")))  # 15 digits, passes Luhn
    # ...but with the HMAC key the transaction's own PAN is refused there too.
    with pytest.raises(ValueError, match="acquirer_ref"):
        ok(journal.update(rec.id, acquirer_ref=f"ref|{PAN}"))
    assert ok(journal.get(rec.id)).acquirer_ref == "2024112422001400000000000001"
    with pytest.raises(ValueError, match="order_ref"):
        ok(journal.insert(txn(3, pan_hash=digest, order_ref=PAN)))
    # An update's guard is worked out once per set of columns: the second
    # update with the same columns is refused as the first was, and a column
    # holding long numbers among them leaves the others checked.
    for _ in range(2):
        with pytest.raises(ValueError, match="'auth_code'"):
            ok(journal.update(rec.id, host_stan="000001", auth_code=PAN, response_code="00"))
        with pytest.raises(ValueError, match="'acquirer'"):
            ok(journal.update(rec.id, acquirer=f"x{PAN}", order_ref="4111111111111111"))
        with pytest.raises(ValueError, match="pan_masked"):
            ok(journal.update(rec.id, pan_masked=PAN))
    assert ok(journal.update(rec.id, host_stan="000001", auth_code="A00001")).auth_code == "A00001"


def test_pan_guard_leaves_ordinary_values_alone():
    check_no_pan(
        {
            "pan_masked": "411111******1111",
            "state": "answered",
            "acquirer": "bank-a",
            "auth_code": "123456",
            "terminal_id": "12345678",
            "kind": "411111111111111",  # 15 digits, fails Luhn
            "mti": "41111111111111111111",  # 20 digits: not a PAN length
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=12, max_size=18),
    prefix=st.text(max_size=5).filter(lambda s: not s[-1:].isdigit()),
    suffix=st.text(max_size=5).filter(lambda s: not s[:1].isdigit()),
)
def test_any_luhn_valid_run_is_refused(body, prefix, suffix):
    check = next(d for d in "0123456789" if luhn_ok(body + d))
    pan = body + check
    with pytest.raises(ValueError):
        check_no_pan({"acquirer": prefix + pan + suffix})
    masked, _ = pan_protect(pan, KEY)
    check_no_pan({"pan_masked": masked})


# -- the boundary with the event loop -------------------------------------------------


def test_journal_does_not_import_asyncio():
    code = "import sys, switch.journal.sqlite; sys.exit('asyncio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=TIMEOUT).returncode == 0


def test_futures_can_be_awaited_on_an_event_loop(journal):
    import asyncio

    async def transaction() -> TxnRecord:
        rec, new = await asyncio.wrap_future(journal.insert(txn(1)))
        assert new
        await asyncio.wrap_future(journal.update(rec.id, state="sent"))
        return await asyncio.wrap_future(journal.get(rec.id))

    assert asyncio.run(transaction()).state == "sent"


def test_results_delivered_in_bulk_to_an_event_loop(tmp_path):
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deliveries = []

        def deliver(resolve, outcomes):
            deliveries.append(len(outcomes))
            loop.call_soon_threadsafe(resolve, outcomes)

        gate = Gate()
        j = open_journal(f"sqlite://{tmp_path}/j.sqlite", hmac_key=KEY, clock=gate, future=loop.create_future, deliver=deliver)
        try:
            first = j.insert(txn(1, kind="wallet", order_ref="ORDER-1"))
            assert isinstance(first, asyncio.Future) and asyncio.wrap_future(first) is first
            rec, new = await first
            assert new and ok_type(rec)
            # Hold the writer; what queues meanwhile is one batch, one delivery.
            gate.shut()
            held = j.insert(txn(999999, terminal="GATE0001"))
            await loop.run_in_executor(None, gate.entered.wait, TIMEOUT)
            ops = [j.insert(txn(i)) for i in range(2, 12)]
            dup = j.insert(txn(12, kind="wallet", order_ref="ORDER-1"))
            cancelled = j.insert(txn(13))
            cancelled.cancel()
            upd = j.update(rec.id, state="sent")
            bad = j.update(rec.id, colour="red")  # refused before it is queued
            assert bad.done() and isinstance(bad.exception(), ValueError)
            delivered = len(deliveries)
            gate.open()
            assert (await held)[1]
            assert all(new for _, new in await asyncio.gather(*ops))
            with pytest.raises(sqlite3.IntegrityError):
                await dup
            assert (await upd).state == "sent"
            assert cancelled.cancelled()
            # The held insert's own batch, then one for the 10 inserts, the duplicate, the update.
            assert deliveries[delivered:] == [1, 12]
            assert await j.find("DEMO0001", "000013", "1124065401") is None
            pending = j.get(rec.id)
        finally:
            j.close()
        assert (await pending).state == "sent"
        after = j.get(rec.id)
        with pytest.raises(JournalClosed):
            await after

    asyncio.run(main())


def ok_type(rec) -> bool:
    return type(rec) is TxnRecord


def test_a_failed_delivery_does_not_stop_the_writer(caplog):
    calls = []
    failed = threading.Event()

    def deliver(resolve, outcomes):
        calls.append(outcomes)
        if len(calls) == 1:
            failed.set()
            raise RuntimeError("Event loop is closed")
        resolve(outcomes)

    from concurrent.futures import Future

    j = open_journal("sqlite://:memory:", future=Future, deliver=deliver)
    try:
        lost = j.insert(txn(1))
        assert failed.wait(TIMEOUT) and not lost.done()
        assert ok(j.insert(txn(2)))[1]
        assert "could not deliver 1 results" in caplog.text
    finally:
        j.close()
    with pytest.raises(ValueError, match="together"):
        open_journal("sqlite://:memory:", future=Future)


# -- the writer process ------------------------------------------------------------------


def test_writer_process_on_an_event_loop_needs_no_thread_and_sends_a_frame_per_pass(tmp_path):
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threads = threading.active_count()
        j = open_journal(
            f"sqlite://{tmp_path}/j.sqlite", hmac_key=KEY, writer="process",
            future=loop.create_future, deliver=loop.call_soon_threadsafe, loop=loop,
        )
        try:
            assert threading.active_count() == threads  # the loop reads the socket itself
            first, new = await j.insert(txn(1, kind="wallet", order_ref="ORDER-1"))
            assert new and ok_type(first)
            commits = j.stats["commits"]
            # Made in one pass of the loop: one frame, one batch, one commit.
            ops = [j.insert(txn(i)) for i in range(2, 12)]
            dup = j.insert(txn(12, kind="wallet", order_ref="ORDER-1"))
            cancelled = j.insert(txn(13))
            cancelled.cancel()
            upd = j.update_if(first.id, "received", state="sent")
            stale = j.update_if(first.id, "received", state="answered")
            assert all(new for _, new in await asyncio.gather(*ops))
            with pytest.raises(sqlite3.IntegrityError):
                await dup
            assert (await upd).state == "sent"
            with pytest.raises(StaleState):
                await stale
            assert j.stats["commits"] == commits + 1 and j.stats["max_batch"] == 13
            assert await j.find("DEMO0001", "000013", "1124065401") is None
            pending = j.get(first.id)
        finally:
            j.close()
        assert (await pending).state == "sent"
        with pytest.raises(JournalClosed):
            await j.get(first.id)

    asyncio.run(main())


def test_a_dead_writer_process_fails_what_waits_and_what_comes(tmp_path, caplog):
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process")
    try:
        ok(j.insert(txn(1)))
        j.hold()
        waiting = j.insert(txn(2))
        j._proc.kill()
        j._proc.wait()
        # Its reader thread ends once it has seen the death (else close() below may come
        # first, on a busy machine, and the death is taken for our own close).
        j._reader.join(TIMEOUT)
        j.release()
        with pytest.raises(JournalClosed, match="died|gone"):
            ok(waiting)
        with pytest.raises(JournalClosed):
            ok(j.get(1))
    finally:
        j.close()
    # said once, when it died, with what to do: the writer is not started again
    [line] = [r for r in caplog.records if "writer process died" in r.getMessage()]
    assert line.levelname == "ERROR" and line.getMessage().endswith(
        ": nothing can be journaled (every payment is answered 96) until the switch is restarted"
        ' (runbook: "Journal failing")')


def test_a_dead_writer_process_is_told_to_on_died_once_with_its_exit_code(tmp_path, caplog):
    import asyncio

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process",
                         future=loop.create_future, deliver=loop.call_soon_threadsafe, loop=loop)
        told: list[str] = []
        j.on_died = told.append
        try:
            await j.insert(txn(1))
            j._proc.kill()
            # the end of the socket seen as such, or as a reset: either way the code is said
            with pytest.raises(JournalClosed, match=r"^journal writer process died \(exit code -9\)(: |$)"):
                await j.get(1)
            with pytest.raises(JournalClosed):
                await j.get(1)
        finally:
            j.close()
        return told

    [why] = asyncio.run(main())
    assert why.startswith("journal writer process died (exit code -9)")
    # said by whoever set on_died (a single switch: it stops), not twice
    assert not [r for r in caplog.records if "writer process died" in r.getMessage()]


@pytest.mark.parametrize("on_loop", [True, False])
def test_closing_the_journal_is_no_death_of_its_writer_process(tmp_path, caplog, on_loop):
    import asyncio

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        given = dict(future=loop.create_future, deliver=loop.call_soon_threadsafe, loop=loop) if on_loop else {}
        j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process", **given)
        told: list[str] = []
        j.on_died = told.append
        fut = j.insert(txn(1))
        await (fut if on_loop else asyncio.wrap_future(fut))
        proc = j._proc
        j.close()
        assert proc.returncode == 0
        await asyncio.sleep(0)  # anything the loop had yet to run
        return told

    assert asyncio.run(main()) == []
    assert not [r for r in caplog.records if "writer process died" in r.getMessage()]


def test_the_hmac_key_never_reaches_the_writer_process_command_line(tmp_path):
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", hmac_key=KEY, writer="process")
    try:
        with open(f"/proc/{j._proc.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        assert KEY not in cmdline and KEY.hex().encode() not in cmdline
        # ... yet the writer has it: the transaction's own PAN is refused in a reference field.
        masked, digest = pan_protect(PAN, KEY)
        with pytest.raises(ValueError, match="transaction's PAN"):
            ok(j.insert(txn(1, pan_masked=masked, pan_hash=digest, acquirer_ref="REF" + PAN)))
    finally:
        j.close()


def test_a_journal_file_has_one_writer_at_a_time(tmp_path, writer):
    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    first = open_journal(url, hmac_key=KEY, writer=writer)
    try:
        with pytest.raises(files.InUse, match=rf"journal {tmp_path / 'j.sqlite'} is in use by another payswitch "
                                              rf"process \(pid \d+\)"):
            open_journal(url, hmac_key=KEY, writer="thread")
    finally:
        first.close()
    open_journal(url, hmac_key=KEY, writer="thread").close()  # given back on close
    # ... and by a process that dies without closing (kill -9).
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path / "j.sqlite.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.InUse):
            open_journal(url, hmac_key=KEY, writer="thread")
    finally:
        holder.kill()
        holder.wait()
    open_journal(url, hmac_key=KEY, writer="thread").close()


def test_a_journal_file_deleted_or_replaced_while_open_fails_the_ping(tmp_path, writer):
    path = tmp_path / "j.sqlite"
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer=writer)
    try:
        assert ok(j.ping()) is True
        path.rename(tmp_path / "moved.sqlite")
        with pytest.raises(JournalError, match=rf"journal {path} was deleted while open"):
            ok(j.ping())
        (tmp_path / "moved.sqlite").rename(path)  # the very file back: fine again
        assert ok(j.ping()) is True
        copy = tmp_path / "copy.sqlite"
        copy.write_bytes(path.read_bytes())
        copy.replace(path)  # another file under the same name
        with pytest.raises(JournalError, match="was replaced while open"):
            ok(j.ping())
    finally:
        j.close()
