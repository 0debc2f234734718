"""Random bytes for the request path without the GIL released per call.

``os.urandom`` (and ``secrets``, which uses it) releases the interpreter lock
around its ``getrandom`` call.  On the event loop's thread that hands the
lock to the journal writer thread, and the loop waits until the writer gives
it back: measured here, 0.8-1 ms per call beside a busy thread instead of a
microsecond.  :func:`random_bytes` serves slices of a 4 KiB block drawn from
OpenSSL's random generator (``ssl.RAND_bytes``: a NIST SP 800-90A DRBG
seeded by the operating system), which keeps the lock; what it hands out is
never handed out again, also across :func:`os.fork` (a child drops the
parent's block, and OpenSSL reseeds a forked child's generator itself).
"""
from __future__ import annotations

import os
import ssl
import threading

__all__ = ["random_bytes"]

_BLOCK = 4096


class _Pool:
    __slots__ = ("_lock", "_block", "_pos")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n > _BLOCK // 4:
            return ssl.RAND_bytes(n)
        with self._lock:
            pos = self._pos
            if pos + n > len(self._block):
                self._block, pos = ssl.RAND_bytes(_BLOCK), 0
            self._pos = pos + n
            return self._block[pos : pos + n]

    def forget(self) -> None:
        # A forked child must not hand out what its parent will.
        self._lock = threading.Lock()
        self._block, self._pos = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from OpenSSL's random generator, the interpreter lock kept."""
    return _pool.take(n)
