"""Random bytes for the request path without the GIL released per call.

``os.urandom`` (and ``secrets``, which uses it) releases the interpreter lock
around its ``getrandom`` call.  On the event loop's thread that hands the
lock to the journal writer thread, and the loop waits until the writer gives
it back: measured here, 0.8-1 ms per call beside a busy thread instead of a
microsecond.  :func:`random_bytes` serves slices of a 4 KiB block drawn from
OpenSSL's random generator (``RAND_bytes``: a NIST SP 800-90A DRBG seeded by
the operating system), which keeps the lock; what it hands out is never
handed out again, also across :func:`os.fork` (a child drops the parent's
block, and OpenSSL reseeds a forked child's generator itself).

The block lives in ``native/aead.pyx``, which draws the nonces of sealed
card numbers from it without a call back into Python (0.13 µs a draw, where
a Python pool took 1 µs and ``ssl.RAND_bytes(12)`` 1.8 µs).
"""
from __future__ import annotations

from native.aead import random_bytes

__all__ = ["random_bytes"]
