"""No core files from a process that holds keys or card data (PCI DSS 3.3).

The switch's memory holds the software module's master key and clear
session keys, card numbers and PIN blocks of requests in flight; a crash
(a signal, an abort in a compiled module) would write all of it to a core
file wherever the system puts them (the working directory, apport,
systemd-coredump), outside every control on the journal. The limit is set
to 0, soft and hard, before anything secret is read, and processes started
after it (workers, simulators) inherit it.
"""
from __future__ import annotations

import logging

__all__ = ["no_core_dumps"]

log = logging.getLogger("payswitch")


def no_core_dumps() -> None:
    """RLIMIT_CORE 0 (soft and hard) for this process and its future children; a warning if it cannot be set."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to set
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as e:
        log.warning("cannot turn core dumps off (RLIMIT_CORE): %s; a crash may write keys and card data to disk", e)
