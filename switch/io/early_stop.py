"""SIGTERM or SIGINT while the process is still starting: a clean stop, not death by signal.

The event loop's stop handlers drain a switch that serves.  Before they are
set, the signals' default actions applied: SIGTERM ended the process at once
(exit status -15, the journal not closed, the simulators being started left
to their parent-death signal) and SIGINT printed a KeyboardInterrupt
traceback.  A supervisor that stops a switch still starting (a deploy rolled
back, ``systemctl stop`` while acquirers sign on) is as ordinary as any stop.

:func:`hold`, from the first line of ``serve``, replaces both.  Outside an
event loop (reading the configuration, starting the simulators) the handler
raises :class:`StopRequested`, which unwinds start-up through its ``finally``
blocks; the command catches it and exits 0.  Inside the loop, before the
loop's own handlers are set, it is only noted: :func:`pending` tells the code
that sets them, which then stops at once.  Python-level handlers are reset to
the default in the children we exec (simulators, workers, the journal writer).
"""
from __future__ import annotations

import asyncio
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: int | None = None


class StopRequested(BaseException):
    """A stop signal came while starting (a BaseException: no ``except Exception`` takes it
    for a start-up failure)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame) -> None:
    global _received
    _received = signum
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StopRequested(signum) from None
    # In a running loop: raised here it would land in whatever callback runs; noted instead.


def hold() -> None:
    """From now on until an event loop takes them over, SIGTERM and SIGINT stop start-up cleanly."""
    global _received
    _received = None
    for sig in SIGNALS:
        signal.signal(sig, _stop)


def pending() -> str | None:
    """The name of the stop signal that came since :func:`hold` (and forget it), or None;
    call once the loop's handlers are set."""
    global _received
    came, _received = _received, None
    return None if came is None else signal.Signals(came).name


class LoopStop:
    """The loop's SIGTERM/SIGINT handlers, set as the loop starts (call from the task that starts
    the process): until :meth:`serving`, a stop cancels that task (start-up unwinds and closes
    what it opened); from then on it sets ``stop`` (the caller drains).  A signal noted by
    :func:`hold` before the handlers were set counts as one that comes now."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.signal_name: str | None = None
        self._task = asyncio.current_task()
        self._serving = False
        self._cancelled = False
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        came = pending()
        if came is not None:
            self._on_signal(signal.Signals[came])

    def _on_signal(self, sig: int) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(sig).name
        self.stop.set()
        if not self._serving and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    async def serving(self) -> None:
        """Start-up is over: from now on a stop drains.  A stop that came while starting
        raises CancelledError here (for :meth:`cancelled_start`), whatever swallowed it."""
        if self._cancelled:
            await asyncio.sleep(0)  # the cancel still pending lands here
            raise asyncio.CancelledError
        self._serving = True

    def cancelled_start(self) -> bool:
        """For an ``except CancelledError``: True (and the cancel is done with) when it is
        ours, a stop while starting; False for any other cancellation (re-raise it)."""
        if not self._cancelled:
            return False
        self._task.uncancel()
        return True
