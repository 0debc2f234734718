"""An upgrade's migration of the journal keeps the way back: a whole, checked
copy of the journal as it was, beside it, named in the log, taken before
anything changes, and no migration without it."""
from __future__ import annotations

import glob
import logging
import os
import sqlite3
import stat

import pytest

from switch.journal import JournalError, backup, open_journal, schema
from tests.test_journal import KEY, ok
from tests.test_journal_strict import _at_version


def _version(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        conn.close()


def test_a_migration_leaves_a_checked_copy_of_the_journal_as_it_was_and_names_it(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / "j.sqlite")
    old = schema.SCHEMA_VERSION - 3
    _at_version(path, old, monkeypatch)
    caplog.set_level(logging.INFO, logger="switch.journal.schema")
    open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    [copy] = glob.glob(f"{path}.schema-{old}.*.bak")
    assert backup.describe(copy) == {"schema_version": old, "transactions": 1, "last_id": 1}
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT amount, auth_code FROM txn").fetchall() == [(1250, "A12345")]
    conn.close()
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600  # it holds what the journal holds
    assert _version(path) == schema.SCHEMA_VERSION
    [said] = [r for r in caplog.records if "migrated" in r.getMessage()]
    assert f"the journal as it was is in {copy}" in said.getMessage()
    # Opened again: nothing to migrate, no second copy.
    open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    assert glob.glob(f"{path}.schema-*.bak") == [copy]


def test_a_new_journal_takes_no_copy(tmp_path):
    path = str(tmp_path / "j.sqlite")
    open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread").close()
    assert glob.glob(f"{path}.schema-*") == []


def test_no_migration_without_its_copy(tmp_path, monkeypatch):
    path = str(tmp_path / "j.sqlite")
    old = schema.SCHEMA_VERSION - 2
    _at_version(path, old, monkeypatch)

    def disk_full(src, dest):
        raise JournalError(f"cannot write the backup {dest}: No space left on device")

    monkeypatch.setattr(backup, "backup", disk_full)
    with pytest.raises(JournalError) as caught:
        open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")
    message = str(caught.value)
    assert f"journal {path} was not migrated from schema version {old}" in message
    assert "No space left on device" in message and "left as it was" in message
    assert _version(path) == old and glob.glob(f"{path}.schema-*") == []
    monkeypatch.undo()
    j = open_journal(f"sqlite://{path}", hmac_key=KEY, writer="thread")  # room again: it migrates
    try:
        assert ok(j.find("DEMO0001", "000042", "1202043000")).amount == 1250
    finally:
        j.close()
    assert _version(path) == schema.SCHEMA_VERSION
