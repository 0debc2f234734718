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

    if on_disk(path) and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise JournalError(cannot_open(path, None))  # before secure() or SQLite could create anything
    try:
        secure(path)  # 0600 before SQLite makes it, whatever the umask
    except OSError as e:  # a read-only mount, a file of another user
        raise JournalError(cannot_open(path, e)) from None
    claimed = claim(path)
    try:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
        except sqlite3.DatabaseError as e:
            raise JournalError(cannot_open(path, e)) from None
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
        except sqlite3.DatabaseError as e:
            conn.close()
            raise JournalError(cannot_open(path, e)) from None
        except BaseException:
            conn.close()
            raise
    except BaseException:
        release(claimed)
        raise
    return conn, claimed


WHAT_TO_DO = 'runbook: "Journal will not open"'


def _read_only(path: str) -> bool:
    """Whether the journal's file or directory cannot be written (mode, or a read-only mount)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    if not os.access(directory, os.W_OK):
        return True
    return os.path.exists(path) and not os.access(path, os.W_OK)


def cannot_open(path: str, exc: BaseException | None) -> str:
    """Why the journal at ``path`` cannot be opened or migrated, and what to do: one line.

    The error of SQLite alone ("unable to open database file") names no file and no cause;
    this names both.  Nothing was written to the file (:func:`open_database`, and
    schema.migrate's one transaction)."""
    directory = os.path.dirname(os.path.abspath(path))
    name = getattr(exc, "sqlite_errorname", "")
    said = str(exc) if exc is not None else ""
    if not os.path.isdir(directory):
        why = f": its directory {directory} does not exist: create it, owned by the switch's user, mode 0700"
    elif name in ("SQLITE_NOTADB",) or "not a database" in said:
        why = (" is not a SQLite database (or its header is damaged); it was not changed: check the path in "
               "[journal] url, else restore the last backup")
    elif name.startswith("SQLITE_CORRUPT") or "malformed" in said:
        why = f" is damaged ({said}); it was not changed: restore the last backup"
    elif name.startswith("SQLITE_READONLY") or _read_only(path):
        why = (f" is read-only ({said}): the switch writes the file and creates {os.path.basename(path)}-wal, "
               "-shm and .lock beside it; make the file and its directory writable by the switch's user")
    elif name == "SQLITE_FULL" or "disk is full" in said:
        why = f" cannot be written ({said}): free space on its file system"
    else:
        why = f" cannot be opened ({said}): check the path, its permissions and dmesg for I/O errors"
    return f"journal {path}{why} ({WHAT_TO_DO})"


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
