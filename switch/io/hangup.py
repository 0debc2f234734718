"""SIGHUP while the process is still starting: kept, and acted on once it serves.

The event loop's SIGHUP handler (reload) is set only when the switch serves.
Until then the signal's default action applies, and that ends the process:
``systemctl reload`` (or a configuration tool's SIGHUP) that lands while the
switch signs on to its acquirers, or while a supervisor starts its workers,
killed it without a word.  :func:`hold` replaces the default from the first
line of ``serve``; :func:`pending` tells, once the loop's handler is set,
whether one came meanwhile, so the file is re-read then (an edit made while
the process started is not lost).  A Python-level handler is reset to the
default in the children we exec (simulators, workers, the journal writer).
"""
from __future__ import annotations

import signal

_received = False

#: After the reason a reload was rejected, in its log line: what to do (ops/runbook.md).
REJECTED_HINT = " (fix the file and reload again; runbook: \"Configuration reload rejected\")"


def _note(signum, frame) -> None:
    global _received
    _received = True


def hold() -> None:
    """From now on until the loop takes SIGHUP over, a SIGHUP is noted instead of ending the process."""
    global _received
    _received = False
    signal.signal(signal.SIGHUP, _note)


def pending() -> bool:
    """Whether a SIGHUP came since :func:`hold` (and forget it); call after the loop's handler is set."""
    global _received
    came, _received = _received, False
    return came
