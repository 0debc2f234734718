"""The journal as the one thing that must never lose a payment: start-up on a
bad file, migrations from every older schema, and an online backup.

Every start-up refusal is one error that names the file and says what to do,
and leaves the file as it was (its bytes compared before and after).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from switch.journal import JournalError, files, open_journal, schema
from tests.test_journal import KEY, ok, txn


def _journal(tmp_path, name: str = "j.sqlite", rows: int = 3) -> str:
    path = str(tmp_path / name)
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    try:
        for stan in range(1, rows + 1):
            ok(j.insert(txn(stan)))
    finally:
        j.close()
    return path


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _refused(path: str, *what: str) -> None:
    """Opening ``path`` fails with one JournalError naming it and each of ``what``; its bytes unchanged."""
    before = _digest(path) if os.path.exists(path) else None
    with pytest.raises(JournalError) as caught:
        open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    message = str(caught.value)
    assert path in message
    for words in what:
        assert words in message
    assert "runbook" in message
    if before is not None:
        assert _digest(path) == before
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0


# -- 1. start-up against a bad journal ---------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_by_name_and_left_alone(tmp_path):
    path = str(tmp_path / "j.sqlite")
    with open(path, "w") as f:
        f.write("settlement report, not a journal\n" * 200)
    _refused(path, "is not a SQLite database", "restore")


def test_a_damaged_journal_is_refused_by_name_and_left_alone(tmp_path):
    path = _journal(tmp_path, rows=50)
    with open(path, "r+b") as f:  # the schema's page, the first one after the header
        f.seek(100)
        f.write(b"\xa5" * 3000)
    _refused(path, "is damaged", "restore")


def test_a_journal_newer_than_the_code_is_refused_and_not_migrated(tmp_path):
    path = _journal(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (schema.SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    _refused(path, f"schema version {schema.SCHEMA_VERSION + 1}", "newer than this payswitch")


def test_a_journal_in_a_missing_directory_is_refused_and_nothing_created(tmp_path):
    path = str(tmp_path / "absent" / "j.sqlite")
    _refused(path, "does not exist")
    assert not os.path.exists(tmp_path / "absent")


def test_a_journal_on_a_read_only_file_system_is_refused_by_name(tmp_path, monkeypatch):
    # Root (CI's containers) writes through file modes, so the read-only file
    # system SQLite meets is given by its own error.
    path = _journal(tmp_path)
    real = sqlite3.connect

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")  # what SQLite says on a read-only mount

    monkeypatch.setattr(files.sqlite3, "connect", read_only)
    monkeypatch.setattr(files, "_read_only", lambda p: True)
    _refused(path, "read-only")
    monkeypatch.setattr(files.sqlite3, "connect", real)


def test_a_journal_locked_by_another_switch_is_refused_by_name(tmp_path):
    path = _journal(tmp_path)
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    try:
        with pytest.raises(OSError, match="in use by another payswitch process") as caught:
            open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
        assert path in str(caught.value)
        assert ok(j.ping()) is True  # the running one goes on
    finally:
        j.close()


# -- 2. migrations from every older schema -----------------------------------


def _at_version(path: str, version: int, monkeypatch) -> None:
    """A journal at schema ``version`` holding one approved purchase, written as that version's switch did."""
    # The schema alone, as that version's switch laid it: today's journal, once
    # open, may read what only later versions have (the settlement cut-off).
    conn = sqlite3.connect(path)
    with monkeypatch.context() as m:
        m.setattr(schema, "SCHEMA_VERSION", version)
        schema.migrate(conn, path)
    conn.execute(
        "INSERT INTO txn (terminal_id, merchant_id, mti, stan, transmission_time, processing_code, amount, currency,"
        " kind, acquirer, pan_masked, content_digest, state, response_code, auth_code, reversal_attempts,"
        " created_at, updated_at) VALUES ('DEMO0001', 'M1', '0200', '000042', '1202043000', '000000', 1250, '978',"
        " 'card', 'acq-a', '476173******0119', 'd1', 'answered', '00', 'A12345', 0, 1000.0, 1001.0)"
    )
    conn.commit()
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == version
    conn.close()


@pytest.mark.parametrize("version", range(1, schema.SCHEMA_VERSION))
def test_a_journal_of_every_older_schema_migrates_keeping_its_payments(tmp_path, monkeypatch, version):
    path = str(tmp_path / "j.sqlite")
    _at_version(path, version, monkeypatch)
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    try:
        rec = ok(j.find("DEMO0001", "000042", "1202043000"))
        assert (rec.amount, rec.response_code, rec.auth_code, rec.state, rec.rrn) == (1250, "00", "A12345", "answered",
                                                                                       "000000000001")
        assert ok(j.insert(txn(7))) is not None  # and takes new ones
    finally:
        j.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_migration_that_fails_half_way_leaves_the_journal_as_it_was_and_runs_again(tmp_path, monkeypatch):
    path = str(tmp_path / "j.sqlite")
    old = schema.SCHEMA_VERSION - 2
    _at_version(path, old, monkeypatch)
    broken = (*schema.MIGRATIONS[:-1], (*schema.MIGRATIONS[-1], "ALTER TABLE no_such_table ADD COLUMN x TEXT"))
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", broken)
        with pytest.raises(JournalError) as caught:
            open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    message = str(caught.value)
    assert f"could not be migrated to schema version {schema.SCHEMA_VERSION}" in message
    assert f"at version {old}" in message and path in message
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == old  # the earlier step too
    conn.close()
    for _ in range(2):  # run again (and once more: nothing left to do)
        j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
        try:
            assert ok(j.find("DEMO0001", "000042", "1202043000")).amount == 1250
        finally:
            j.close()


# -- 5. backup while the switch runs, and restore ----------------------------


def test_a_backup_taken_while_the_journal_writes_is_whole_and_restores(tmp_path, capsys):
    from switch import cli

    path = _journal(tmp_path, rows=20)
    dest = str(tmp_path / "backups" / "j-0430.sqlite")
    os.makedirs(os.path.dirname(dest))
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    try:
        ok(j.insert(txn(21)))  # in the WAL, not yet checkpointed into the file
        assert cli.main(["journal", "backup", dest, "--journal", path]) == 0
        assert "21 transactions" in capsys.readouterr().out
        ok(j.insert(txn(22)))  # after the backup: the switch went on, and this one is not in it
        assert ok(j.reserve_stans("acq-a", 100)) == 1
        # A backup never overwrites one, and nothing of a failed one is left.
        assert cli.main(["journal", "backup", dest, "--journal", path]) == 1
        assert "exists" in capsys.readouterr().err
        assert os.listdir(os.path.dirname(dest)) == ["j-0430.sqlite"]
        assert os.stat(dest).st_mode & 0o777 == 0o600
        # The switch runs: a restore is refused and changes nothing.
        before = _digest(path)
        assert cli.main(["journal", "restore", dest, "--journal", path]) == 1
        assert "in use by another payswitch process" in capsys.readouterr().err
        assert _digest(path) == before
        assert ok(j.find("DEMO0001", "000022", txn(22).transmission_time)) is not None
    finally:
        j.close()
    assert cli.main(["journal", "restore", dest, "--journal", path]) == 0
    out = capsys.readouterr().out
    assert "21 transactions" in out and ".before-restore-" in out
    aside = [n for n in os.listdir(tmp_path) if ".before-restore-" in n]
    assert aside and not os.path.exists(path + "-wal")
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    try:
        assert ok(j.find("DEMO0001", "000021", txn(21).transmission_time)) is not None
        assert ok(j.find("DEMO0001", "000022", txn(22).transmission_time)) is None
        new, _ = ok(j.insert(txn(23)))
        assert new.id == 23  # the replaced journal's ids go on: RRN 000000000022 is never given twice
        assert ok(j.stan_position("acq-a")) == 101  # nor a host STAN
    finally:
        j.close()
    # The journal it replaced keeps what came after the backup.
    replaced = str(tmp_path / min(aside))
    conn = sqlite3.connect(replaced)
    assert conn.execute("SELECT count(*) FROM txn").fetchone()[0] == 22
    conn.close()


def test_a_backup_of_a_path_that_is_no_journal_creates_nothing(tmp_path, capsys):
    from switch import cli

    missing = str(tmp_path / "typo.sqlite")
    assert cli.main(["journal", "backup", str(tmp_path / "b.sqlite"), "--journal", missing]) == 1
    assert missing in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a journal " * 300)
    assert cli.main(["journal", "restore", str(junk), "--journal", str(tmp_path / "j.sqlite")]) == 1
    assert "is not a payswitch journal" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["junk.sqlite"]


# -- 4. a journal writer that hangs ------------------------------------------


def test_a_writer_that_answers_is_never_called_hung_even_when_it_fails():
    from concurrent.futures import Future

    from switch.io.journal_watch import WriterWatch

    sent: list[Future] = []

    def ping():
        sent.append(Future())
        return sent[-1]

    w = WriterWatch(ping, hang_after=15.0, interval=1.0)
    assert w.tick(100.0) is None and len(sent) == 1
    for now in range(101, 115):
        assert w.tick(float(now)) is None
    assert len(sent) == 1  # one ping out at a time
    sent[-1].set_exception(JournalError("database or disk is full"))  # an answer: it lives
    assert w.tick(115.0) is None and len(sent) == 2
    for now in range(116, 131):
        assert w.tick(float(now)) is None
    assert w.tick(130.5) == 15.5  # unanswered for longer than hang_after: it hangs


def test_a_writer_process_that_hangs_is_killed_and_its_unconfirmed_write_fails(tmp_path):
    import asyncio
    import logging
    import signal

    from switch.io.journal_watch import stop_hung_writer, watch
    from switch.journal import JournalClosed

    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process", hmac_key=KEY)
    told: list[str] = []
    j.on_died = told.append
    kind, pid = j.writer_identity()
    try:
        j.insert(txn(1)).result(10)
        os.kill(pid, signal.SIGSTOP)  # hangs: alive, silent
        waiting = j.insert(txn(2))
        exits: list[int] = []

        async def main():
            async with asyncio.timeout(10):
                await watch(j.ping, lambda waited: stop_hung_writer(j, waited, log=logging.getLogger("t"),
                                                                      exit=exits.append),
                            hang_after=0.5, interval=0.1)

        asyncio.run(main())
        with pytest.raises(JournalClosed):
            waiting.result(10)  # never confirmed: never answered as recorded
        assert exits == [] and len(told) == 1 and "exit code -9" in told[0]
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        j.close()
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", hmac_key=KEY, writer="thread")
    try:  # what it confirmed is there; what it did not is not
        assert ok(j.find("DEMO0001", "000001", txn(1).transmission_time)) is not None
        assert ok(j.find("DEMO0001", "000002", txn(2).transmission_time)) is None
    finally:
        j.close()


def test_a_writer_thread_that_hangs_ends_the_process_with_exit_1(tmp_path):
    import asyncio
    import logging
    import threading

    from switch.io.journal_watch import stop_hung_writer, watch

    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="thread", hmac_key=KEY)
    stuck, exits = threading.Event(), []
    try:
        j._submit(lambda: stuck.wait(10), (), True)  # the writer thread stuck in a call, as in a dead disk's fsync

        async def main():
            async with asyncio.timeout(10):
                await watch(j.ping, lambda waited: stop_hung_writer(j, waited, log=logging.getLogger("t"),
                                                                      exit=exits.append),
                            hang_after=0.5, interval=0.1)

        asyncio.run(main())
        assert exits == [1]
    finally:
        stuck.set()
        j.close()


# -- 3. the disk fills up mid-run --------------------------------------------


def test_a_batch_the_full_disk_refuses_leaves_no_part_of_it_and_the_journal_goes_on(tmp_path):
    from tests.test_journal_full import _cap_pages

    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", hmac_key=KEY, writer="thread")
    try:
        first, _ = ok(j.insert(txn(1)))
        _cap_pages(j, 2)
        futures = [j.insert(txn(stan, acquirer_ref="x" * 900)) for stan in range(2, 200)]
        futures.append(j.update(first.id, state="answered", response_code="00", auth_code="A00001"))
        outcomes = []
        for fut in futures:
            try:
                outcomes.append(fut.result(10))
            except JournalError as e:
                assert "disk is full" in str(e)
                outcomes.append(None)
        assert None in outcomes  # the disk filled up in the middle
        _cap_pages(j, 100000)  # space again: no restart
        for stan, got in zip(range(2, 200), outcomes):
            rec = ok(j.find("DEMO0001", f"{stan:06d}", txn(stan).transmission_time))
            # Confirmed and there, whole; or refused and not there at all: never half of it.
            assert (rec is None) == (got is None)
            if rec is not None:
                assert rec.state == "received" and rec.acquirer_ref == "x" * 900
        rec = ok(j.get(first.id))
        if outcomes[-1] is None:
            assert (rec.state, rec.response_code) == ("received", None)  # the answer refused: not half-answered
        else:
            assert (rec.state, rec.response_code, rec.auth_code) == ("answered", "00", "A00001")
        ok(j.insert(txn(500)))
        assert ok(j.ping()) is True
        assert ok(j._submit(lambda: j._conn.execute("PRAGMA integrity_check").fetchone()[0], (), False)) == "ok"
    finally:
        j.close()


def test_creating_or_migrating_a_journal_is_said_in_the_log(tmp_path, monkeypatch, caplog):
    import logging

    path = str(tmp_path / "j.sqlite")
    caplog.set_level(logging.INFO, logger="switch.journal.schema")
    with monkeypatch.context() as m:
        m.setattr(schema, "SCHEMA_VERSION", 3)
        open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    assert [r.getMessage() for r in caplog.records] == [
        f"journal {path} created, empty (schema version 3): if a journal was expected here, "
        "stop the switch and check [journal] url (runbook: \"Journal will not open\")"]
    caplog.clear()
    open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    [said] = [r for r in caplog.records]
    assert said.levelno == logging.WARNING
    assert said.getMessage().startswith(f"journal {path} migrated from schema version 3 to {schema.SCHEMA_VERSION}")
    caplog.clear()
    open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    assert caplog.records == []  # nothing to do, nothing said


def test_a_journal_whose_mode_cannot_be_set_on_a_read_only_mount_is_refused_by_name(tmp_path, monkeypatch):
    import errno

    path = _journal(tmp_path)
    os.chmod(path, 0o644)  # copied in with another mode: the switch sets 0600 before opening

    def refused(p, mode):
        raise OSError(errno.EROFS, "Read-only file system", p)

    monkeypatch.setattr(files.os, "chmod", refused)
    monkeypatch.setattr(files, "_read_only", lambda p: True)
    _refused(path, "read-only")


def test_a_failed_ping_of_the_watch_is_not_logged_as_an_exception_never_retrieved(caplog):
    import asyncio
    import gc

    from switch.io.journal_watch import WriterWatch

    async def main():
        loop = asyncio.get_running_loop()

        def ping():  # as the switch's journal answers: an asyncio future, failed (disk full)
            fut = loop.create_future()
            fut.set_exception(JournalError("database or disk is full"))
            return fut

        w = WriterWatch(ping, hang_after=15.0)
        for now in range(5):
            w.tick(float(now))

    asyncio.run(main())
    gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_restore_without_the_journal_lock_restores_nothing(tmp_path, capsys, monkeypatch):
    from switch import cli

    dest = str(tmp_path / "b.sqlite")
    path = _journal(tmp_path)
    assert cli.main(["journal", "backup", dest, "--journal", path]) == 0
    monkeypatch.setattr(files, "claim", lambda p: None)  # as when PATH.lock cannot be opened
    before = _digest(path)
    assert cli.main(["journal", "restore", dest, "--journal", path]) == 1
    assert "cannot take the lock" in capsys.readouterr().err
    assert _digest(path) == before and not [n for n in os.listdir(tmp_path) if "before-restore" in n]


def test_serve_on_a_journal_that_is_not_sqlite_exits_1_with_one_line_and_leaves_it(tmp_path):
    import subprocess
    import sys

    from tests import e2e

    text, _ = e2e.card_config(tmp_path)
    config = tmp_path / "switch.toml"
    config.write_text(text)
    journal = tmp_path / "journal.sqlite"
    assert f'url = "sqlite://{journal}"' in text
    journal.write_bytes(b"terminal totals, not a journal\n" * 100)
    before = _digest(str(journal))
    env = {**os.environ, "PYTHONPATH": str(e2e.ROOT)}
    done = subprocess.run([sys.executable, "-m", "switch.cli", "serve", "--config", str(config)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"payswitch: cannot start: journal {journal} is not a SQLite database (or its header is damaged); it was "
        "not changed: check the path in [journal] url, else restore the last backup (runbook: \"Journal will not open\")")
    assert _digest(str(journal)) == before and not (tmp_path / "journal.sqlite-wal").exists()
