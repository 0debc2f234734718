"""No core files, and no ptrace, of a process that holds keys or card data (PCI DSS 3.3, 3.6).

The switch's memory holds the software module's master key and clear
session keys, card numbers and PIN blocks of requests in flight; a crash
(a signal, an abort in a compiled module) would write all of it to a core
file wherever the system puts them (the working directory, apport,
systemd-coredump), outside every control on the journal. The limit is set
to 0, soft and hard, before anything secret is read, and processes started
after it (workers, simulators) inherit it.

On Linux the process is also made non-dumpable (``prctl(PR_SET_DUMPABLE,
0)``): no core file whatever the limit (a raised hard limit, a
``core_pattern`` pipe), and another user's process, even with the same uid
of a service account's debugger, cannot ptrace it or read its
``/proc/<pid>/mem``.  That flag is reset by ``execve``, so each process
holding keys calls :func:`no_core_dumps` itself: ``serve``, its workers,
the journal writer, ``payswitch keys`` and the event relay.
"""
from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["no_core_dumps", "not_dumpable"]

PR_SET_DUMPABLE = 4  # <linux/prctl.h>

log = logging.getLogger("payswitch")


def not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)`` on Linux (elsewhere nothing); a warning if it cannot be set."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
        why = ctypes.get_errno()
    except (OSError, AttributeError) as e:
        failed, why = True, e
    if failed:
        log.warning("cannot make this process non-dumpable (PR_SET_DUMPABLE): %s; "
                    "a debugger could read keys and card data from its memory", why)


def no_core_dumps() -> None:
    """RLIMIT_CORE 0 (soft and hard) for this process and its future children, and this process
    non-dumpable (:func:`not_dumpable`); a warning for what cannot be set."""
    not_dumpable()
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to set
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as e:
        log.warning("cannot turn core dumps off (RLIMIT_CORE): %s; a crash may write keys and card data to disk", e)
