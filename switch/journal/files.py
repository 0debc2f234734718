"""The journal's files on disk: owner only, and one writer process at a time.

They hold card data (masked PANs, PAN hashes, sealed cards).

The database is created 0600 before SQLite opens it, whatever the process
umask, and an existing one (from an older payswitch, or copied in) is brought
to 0600 with its ``-wal`` and ``-shm`` files.  SQLite creates ``-wal`` and
``-shm`` with the database file's own mode (its unix VFS fchmods them to it,
so the umask does not widen or narrow them).  ``PATH.lock`` is held (``flock``)
by the process that writes the journal, for as long as it is open
(:func:`claim`).
"""
from __future__ import annotations

import errno
import fcntl
import os
import sqlite3

JOURNAL_MODE = 0o600
_COMPANIONS = ("", "-wal", "-shm", "-journal")


def on_disk(path: str) -> bool:
    """Whether ``path`` names a file of ours (not ``:memory:`` or a ``file:`` URI SQLite resolves)."""
    return path != ":memory:" and not path.startswith("file:")


def secure(path: str) -> None:
    """Create ``path`` 0600 if it does not exist; set it and its companions to 0600."""
    if not on_disk(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, JOURNAL_MODE)
    except FileExistsError:
        pass
    except OSError:
        return  # no directory, no access: SQLite's own open reports it
    else:
        try:
            os.fchmod(fd, JOURNAL_MODE)  # the umask may have taken bits away
        finally:
            os.close(fd)
    for suffix in _COMPANIONS:
        try:
            st = os.stat(path + suffix)
        except FileNotFoundError:
            continue
        if st.st_mode & 0o777 != JOURNAL_MODE:
            os.chmod(path + suffix, JOURNAL_MODE)


class InUse(OSError):
    """Another process writes this journal."""


def claim(path: str) -> int | None:
    """Hold ``path``'s lock file (``PATH.lock``, an exclusive ``flock``) for as long as the
    journal is open: the fd to give to :func:`release`, None for a journal in memory.

    Two switches on one journal would each take the other's payments at the
    acquirer for a dead run's and reverse them at start-up (and share STAN
    blocks, settlement cut-offs and the reversal queue).  The lock goes with
    the process, however it ends, so a killed switch never leaves it held.
    A separate file, because closing any other descriptor of the database
    file would drop the POSIX locks SQLite holds on it.
    """
    if not on_disk(path):
        return None
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, JOURNAL_MODE)
    except OSError:
        return None  # no directory, no access: SQLite's own open reports it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise InUse(f"journal {path} is in use by another payswitch process"
                        f"{f' (pid {holder})' if holder.isdigit() else ''}: "
                        "one journal, one switch (or one supervisor with --workers)") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd: int | None) -> None:
    """Give the lock of :func:`claim` back (closing its descriptor releases it)."""
    if fd is not None:
        os.close(fd)


_WAL_HEADER, _FRAME_HEADER = 32, 24  # bytes (sqlite.org/fileformat.html, "WAL File Format")


def open_database(path: str, busy_timeout: float) -> tuple[sqlite3.Connection, int | None]:
    """The journal's database for its writer: 0600 (:func:`secure`), its lock held
    (:func:`claim`), WAL, synchronous=FULL (nothing answered before it is on disk),
    secure_delete and a WAL cut back after bursts (a card the journal lets go
    leaves no bytes behind).
    Returns the connection and the lock for :func:`release`."""
    from switch.journal import JournalError

    secure(path)  # 0600 before SQLite makes it, whatever the umask
    claimed = claim(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
        try:
            if path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise JournalError(f"journal {path}: cannot switch to WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            # Sealed cards are deleted when their reversal ends or card_retention
            # passes: zero them in the file too, not just unlink their cells
            # (upstream SQLite leaves secure_delete off; Debian's build turns it on).
            conn.execute("PRAGMA secure_delete = ON")
            # The WAL keeps the largest size it ever reached and is overwritten from
            # its start: after a burst its tail would hold old pages (sealed cards
            # long forgotten) until the switch stops. Cut it back to one
            # auto-checkpoint's worth when it restarts; in steady state it never
            # grows beyond that, so nothing changes for the hot path.
            pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_HEADER + max(pages, 1) * (page_size + _FRAME_HEADER)}")
        except BaseException:
            conn.close()
            raise
    except BaseException:
        release(claimed)
        raise
    return conn, claimed


def identity(path: str) -> tuple[int, int] | None:
    """The journal file's (device, inode) as it is opened, for :func:`still_there`."""
    if not on_disk(path):
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def still_there(path: str, opened: tuple[int, int] | None) -> bool:
    """True while ``path`` is the file the journal opened; else raise.

    SQLite goes on writing to a journal file that was deleted or replaced
    (a wrong ``rm``, a restore over a running switch): durable in name only,
    it is gone when the process ends, and with it every payment's record.
    The journal's ping fails, so ``/readyz`` and ``payswitch_journal_writable``
    say so (alert PayswitchJournalNotWritable).
    """
    if opened is None:
        return True
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != opened:
        from switch.journal import JournalError

        raise JournalError(f"journal {path} was {'deleted' if st is None else 'replaced'} while open: "
                           "what is written now is lost when this process ends (runbook: journal file "
                           "deleted or replaced)")
    return True


# What the journal's ping writes once a batch of writes failed: room for a
# batch of payments.  A full disk fails every payment's insert but not an
# empty transaction, and the time since the last failure says nothing about
# the disk: the ping fails until this much can be written again, and only
# then passes (no flapping between a failed payment and a quiet spell).
PROBE_BYTES = 256 * 1024


def writable(journal, path: str, opened: tuple[int, int] | None) -> bool:
    """The journal's ping, run on its writer inside a write transaction: :func:`still_there`,
    and, after a batch of writes failed (``journal.write_failed``), a probe write of
    PROBE_BYTES into table ``journal_probe``.  A probe that fails raises as the writes did
    (disk full, I/O error); one that succeeds clears ``write_failed`` (set again if the
    batch's commit fails), and the next ping without a failure since gives the room back."""
    still_there(path, opened)
    conn = journal._conn
    if journal.write_failed is None:
        # WHERE: a DELETE of the whole table rewrites its root page even when it is empty.
        conn.execute("DELETE FROM journal_probe WHERE room IS NOT NULL")
        return True
    # Not after a DELETE of the last probe's row: its freed pages would let this
    # one pass on a disk where the payments that failed since found no room.
    conn.execute("INSERT INTO journal_probe (room) VALUES (zeroblob(?))", (PROBE_BYTES,))
    journal.write_failed = None
    return True
