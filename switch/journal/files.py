"""The journal's files on disk hold card data (masked PANs, PAN hashes): owner only.

The database is created 0600 before SQLite opens it, whatever the process
umask, and an existing one (from an older payswitch, or copied in) is brought
to 0600 with its ``-wal`` and ``-shm`` files.  SQLite creates ``-wal`` and
``-shm`` with the database file's own mode (its unix VFS fchmods them to it,
so the umask does not widen or narrow them).
"""
from __future__ import annotations

import os

JOURNAL_MODE = 0o600
_COMPANIONS = ("", "-wal", "-shm", "-journal")


def secure(path: str) -> None:
    """Create ``path`` 0600 if it does not exist; set it and its companions to 0600."""
    if path == ":memory:" or path.startswith("file:"):
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
