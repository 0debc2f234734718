"""A consistent copy of the SQLite journal taken while the switch runs, and its restore.

``payswitch journal backup DEST`` copies the journal with SQLite's online
backup API in one step: one read transaction, so the copy is the journal as
of one commit (in WAL mode a reader never blocks the writer: payments go on
being journaled meanwhile, and are in the next backup).  The copy is written
beside DEST, checked (``PRAGMA integrity_check``), fsynced and only then
renamed to DEST: a DEST that exists is a whole, checked backup.  It holds
what the journal holds (masked PANs, PAN hashes, sealed cards, sealed
terminal keys), so it is created 0600.

``payswitch journal restore BACKUP`` puts a backup in place of the journal of
a stopped switch: it takes the journal's lock (a running switch holds it, and
the restore is refused), checks the backup, moves the journal and its
``-wal`` aside (``PATH.before-restore-STAMP``, never deleted: the
transactions since the backup are in it) and drops the old ``-shm``; a WAL
left beside the restored file would be replayed onto a database it does not
belong to.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from switch.journal import JournalError, files, schema

_RUNBOOK = 'runbook: "Journal backup and restore"'


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(path: str) -> dict:
    """A journal file's schema version and transaction count, after ``PRAGMA integrity_check``;
    raises JournalError (naming ``path``) for a file that is not a whole journal of this payswitch."""
    if not os.path.isfile(path):
        raise JournalError(f"{path}: no such file ({_RUNBOOK})")
    try:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise JournalError(f"{path} is damaged: integrity_check says {check!r} ({_RUNBOOK})")
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            count, last = conn.execute("SELECT count(*), max(id) FROM txn").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise JournalError(f"{path} is not a payswitch journal ({e}) ({_RUNBOOK})") from None
    if version > schema.SCHEMA_VERSION:
        raise JournalError(f"{path} has schema version {version}, newer than this payswitch knows "
                           f"({schema.SCHEMA_VERSION}): use the payswitch version that wrote it ({_RUNBOOK})")
    return {"schema_version": version, "transactions": count, "last_id": last or 0}


def backup(path: str, dest: str) -> dict:
    """Copy the journal at ``path`` to ``dest`` (which must not exist), consistent as of one commit."""
    if not files.on_disk(path) or not os.path.isfile(path):
        raise JournalError(f"journal {path}: no such file to back up ({_RUNBOOK})")
    if os.path.lexists(dest):
        raise JournalError(f"{dest} exists: a backup never overwrites a file; name a new one ({_RUNBOOK})")
    partial = f"{dest}.partial"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, files.JOURNAL_MODE)
    except OSError as e:
        raise JournalError(f"cannot write the backup {dest}: {e.strerror} ({_RUNBOOK})") from None
    os.fchmod(fd, files.JOURNAL_MODE)
    os.close(fd)
    try:
        # Read-only: a backup never creates or changes the journal (a wrong path is not made a journal).
        src = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # every page in one step: one read transaction, one commit's state
                dst.execute("PRAGMA journal_mode = DELETE")  # one file, without -wal beside it
            finally:
                dst.close()
        finally:
            src.close()
        facts = describe(partial)
        _fsync(partial)
        os.rename(partial, dest)
        _fsync_dir(dest)
    except sqlite3.DatabaseError as e:
        raise JournalError(f"journal {path} could not be backed up to {dest}: {e} ({_RUNBOOK})") from None
    finally:
        for leftover in (partial, partial + "-journal", partial + "-wal", partial + "-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return facts


def restore(source: str, path: str, clock=time.time) -> tuple[dict, str | None]:
    """Put the backup ``source`` in place of the journal at ``path``, whose switch is stopped.

    Returns the backup's facts and where the journal it replaced went (None if there was none)."""
    if not files.on_disk(path):
        raise JournalError(f"journal {path}: only a journal file can be restored ({_RUNBOOK})")
    facts = describe(source)
    claimed = files.claim(path)  # files.InUse while a switch runs on it
    if claimed is None:
        raise JournalError(f"cannot take the lock {path}.lock (its directory missing or not writable): "
                           f"nothing restored ({_RUNBOOK})")
    try:
        aside = None
        if os.path.exists(path):
            aside = f"{path}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(clock()))}"
            for suffix in ("-wal", ""):  # the WAL first: never a journal moved without it
                if os.path.exists(path + suffix):
                    os.rename(path + suffix, aside + suffix)
        for suffix in ("-shm", "-journal"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        partial = f"{path}.restoring"
        with open(source, "rb") as f_in, open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                                     files.JOURNAL_MODE), "wb") as f_out:
            while chunk := f_in.read(1 << 20):
                f_out.write(chunk)
            f_out.flush()
            os.fsync(f_out.fileno())
        os.chmod(partial, files.JOURNAL_MODE)
        carried = aside is not None and _carry_counters(aside, partial)
        os.rename(partial, path)
        _fsync_dir(path)
    finally:
        files.release(claimed)
    facts["counters_carried"] = carried
    return facts, aside


def _carry_counters(replaced: str, restored: str) -> bool:
    """Carry the counters the journal ``replaced`` reached into the backup ``restored``.

    What was handed out after the backup was taken must not be handed out
    again: ids (the RRN is the id, and ids are never reused), the host STAN
    blocks (an acquirer takes a repeated STAN and field 7 for a duplicate) and
    the DUKPT counters (a lower one would accept a replayed KSN).  Best effort:
    False when the replaced journal cannot be read (it is damaged); the
    operator is told what that means."""
    try:
        old = sqlite3.connect(replaced)
        try:
            sequences = old.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
            stans = old.execute("SELECT acquirer, next FROM stan_block").fetchall()
            counters = old.execute("SELECT device, counter, updated_at FROM dukpt_counter").fetchall()
        finally:
            old.close()
        new = sqlite3.connect(restored, isolation_level=None)
        try:
            new.execute("BEGIN IMMEDIATE")
            for name, seq in sequences:
                if new.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name)).rowcount == 0:
                    new.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
            # The replaced journal's position is the later one, wrapped or not.
            new.executemany("INSERT OR REPLACE INTO stan_block (acquirer, next) VALUES (?, ?)", stans)
            new.executemany(
                "INSERT INTO dukpt_counter (device, counter, updated_at) VALUES (?, ?, ?) ON CONFLICT (device) "
                "DO UPDATE SET counter = excluded.counter, updated_at = excluded.updated_at "
                "WHERE excluded.counter > dukpt_counter.counter", counters)
            new.execute("COMMIT")
        finally:
            new.close()
    except sqlite3.DatabaseError:
        return False
    return True


USAGE = "usage: payswitch journal backup DEST | restore BACKUP [--config FILE | --journal PATH]"


def main(argv: list[str]) -> int:
    """``payswitch journal backup|restore``: 0 done, 1 refused (the line says why), 2 a usage or configuration error."""
    import argparse
    import sys

    from switch import config

    p = argparse.ArgumentParser(prog="payswitch journal", description="back up or restore the SQLite journal")
    p.add_argument("action", choices=["backup", "restore"])
    p.add_argument("file", help="backup: the new backup file; restore: the backup to put in place")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", help="the switch's configuration file: its [journal] url (default: serve's default)")
    where.add_argument("--journal", metavar="PATH", help="the journal file itself")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    if args.journal is not None:
        path = args.journal
    else:
        try:
            cfg = config.load(args.config) if args.config else config.default()
        except config.ConfigError as e:
            print(config.error_line(e, args.config), file=sys.stderr)
            return 2
        scheme, _, path = cfg.journal.url.partition("://")
        if scheme.lower() != "sqlite" or not files.on_disk(path):
            print(f"payswitch journal: [journal] url names no journal file ({scheme}://…): use --journal PATH",
                  file=sys.stderr)
            return 2
    try:
        if args.action == "backup":
            facts = backup(path, args.file)
            print(f"payswitch journal: backed up {path} to {args.file}: schema version {facts['schema_version']}, "
                  f"{facts['transactions']} transactions, the last id {facts['last_id']}")
        else:
            facts, aside = restore(args.file, path)
            print(f"payswitch journal: restored {args.file} to {path}: schema version {facts['schema_version']}, "
                  f"{facts['transactions']} transactions, the last id {facts['last_id']}"
                  + (f"; the journal it replaced is {aside} (keep it: what came after the backup is there)"
                     if aside else ""))
            if not facts["counters_carried"]:
                print("payswitch journal: the ids (RRNs), host STAN blocks and DUKPT counters reached after the "
                      "backup could not be read from the journal it replaced: RRNs and host STANs given since the "
                      f"backup may be given again ({_RUNBOOK})", file=sys.stderr)
    except (JournalError, OSError) as e:
        print(f"payswitch journal: {e}", file=sys.stderr)
        return 1
    return 0
