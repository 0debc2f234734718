"""One journal writer process for several switch processes (switch.journal.shared)."""
from __future__ import annotations

import os
import stat
import tempfile
import time

import pytest

from switch.journal import JournalClosed, JournalError, TxnRecord
from switch.journal.process import ProcessJournal, start_shared_writer
from switch.journal.shared import Ownership

KEY = b"shared-journal-test-key"
TIMEOUT = 10


def txn(stan: int, state: str = "sent", **kw) -> TxnRecord:
    return TxnRecord(terminal_id="DEMO0001", merchant_id="DEMO00000000001", mti="0200", stan="%06d" % stan,
                     transmission_time="1124065401", state=state, **kw)


@pytest.fixture
def shared(tmp_path):
    directory = tempfile.mkdtemp(dir=tmp_path)
    proc, path = start_shared_writer(directory)
    url = f"sqlite://{tmp_path}/j.sqlite"
    control = ProcessJournal(url, hmac_key=KEY, connect=path, control=True)
    opened = []

    def connect(**kw):
        j = ProcessJournal(url, hmac_key=KEY, connect=path, **kw)
        opened.append(j)
        return j

    yield proc, path, control, connect
    for j in opened:
        j.close()
    control.close()
    proc.wait(TIMEOUT)


def test_the_socket_lives_in_a_directory_only_this_user_enters(shared):
    _, path, _, _ = shared
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_clients_share_one_journal_and_its_keys(shared):
    _, _, _, connect = shared
    a, b = connect(), connect()
    rec, created = a.insert(txn(1)).result(TIMEOUT)
    again, created_again = b.insert(txn(1)).result(TIMEOUT)
    assert created and not created_again and again.id == rec.id  # the journal is the arbiter
    assert b.get(rec.id).result(TIMEOUT).state == "sent"
    first, second = a.reserve_stans("bank-a", 100).result(TIMEOUT), b.reserve_stans("bank-a", 100).result(TIMEOUT)
    assert abs(first - second) >= 100  # disjoint STAN blocks per worker


def test_operations_of_several_clients_commit_together(shared):
    _, _, _, connect = shared
    a, b = connect(), connect()
    a.hold()
    b.hold()
    futs = [a.insert(txn(10 + i)) for i in range(20)] + [b.insert(txn(40 + i)) for i in range(20)]
    a.release()
    b.release()
    assert all(f.result(TIMEOUT)[1] for f in futs)
    commits = a.stats["commits"] + b.stats["commits"]
    assert a.stats["ops"] + b.stats["ops"] == 40  # each batch counted once, by one of its clients
    assert 1 <= commits <= 2 and max(a.stats["max_batch"], b.stats["max_batch"]) >= 20


def test_a_clients_records_left_sent_become_orphans_when_it_goes(shared):
    _, _, _, connect = shared
    a, b = connect(), connect()
    sent, _ = a.insert(txn(1)).result(TIMEOUT)
    answered, _ = a.insert(txn(2)).result(TIMEOUT)
    a.update(answered.id, state="answered", response_code="00").result(TIMEOUT)
    received, _ = a.insert(txn(3, state="received")).result(TIMEOUT)
    a.update(received.id, state="sent").result(TIMEOUT)
    mine, _ = b.insert(txn(4)).result(TIMEOUT)
    assert b.orphans().result(TIMEOUT) == []
    a.close()
    deadline = time.monotonic() + TIMEOUT
    while b.orphans().result(TIMEOUT) != sorted([sent.id, received.id]):
        assert time.monotonic() < deadline, b.orphans().result(TIMEOUT)
        time.sleep(0.02)
    # Once someone moves it on (the reversal sender queues its reversal), it is no orphan.
    b.update_if(sent.id, "sent", state="reversal_pending").result(TIMEOUT)
    assert b.orphans().result(TIMEOUT) == [received.id]
    assert mine.id not in b.orphans().result(TIMEOUT)


def test_a_worker_closing_leaves_the_writer_serving_the_others(shared):
    proc, _, control, connect = shared
    a, b = connect(), connect()
    a.close()
    assert b.ping().result(TIMEOUT)
    assert proc.poll() is None
    with pytest.raises(JournalClosed):
        a.ping().result(TIMEOUT)


def test_the_writer_ends_with_the_supervisors_connection(tmp_path):
    directory = tempfile.mkdtemp(dir=tmp_path)
    proc, path = start_shared_writer(directory)
    url = f"sqlite://{tmp_path}/j.sqlite"
    control = ProcessJournal(url, hmac_key=KEY, connect=path, control=True)
    worker = ProcessJournal(url, hmac_key=KEY, connect=path)
    control.close()
    assert proc.wait(TIMEOUT) == 0
    with pytest.raises(JournalClosed):
        worker.insert(txn(1)).result(TIMEOUT)
    worker.close()


def test_a_client_naming_another_journal_is_refused(shared, tmp_path):
    _, path, _, _ = shared
    with pytest.raises(JournalError, match="serves another journal"):
        ProcessJournal(f"sqlite://{tmp_path}/other.sqlite", hmac_key=KEY, connect=path)


def test_no_writer_at_the_path_is_a_clear_error(tmp_path):
    with pytest.raises(JournalError, match="cannot reach the shared journal writer"):
        ProcessJournal(f"sqlite://{tmp_path}/j.sqlite", connect=str(tmp_path / "nothing.sock"))


def test_ownership_follows_the_last_write():
    o = Ownership()
    a, b = 1, 2
    o.saw(a, "insert", (txn(1, id=7), True))
    o.saw(b, "insert", (txn(1, id=7), False))  # b's retransmission found a's record: still a's
    assert o.left(b) == [] and o.orphans == set()
    o.saw(a, "update", txn(1, id=8, state="sent"))
    o.saw(a, "update", txn(1, id=8, state="answered"))
    assert o.left(a) == [7] and o.orphans == {7}
    o.saw(b, "update_if", txn(1, id=7, state="reversal_pending"))
    assert o.orphans == set()
    o.saw(a, "update", txn(1, id=9, state="sent"))  # read after a went: an orphan at once
    assert o.orphans == {9}
