"""The journal writer's watchdog: a writer that stops answering is treated as dead.

A writer that dies is noticed at once (its thread's loop raises, its
process's socket closes: switch.io.app stops the switch, exit 1).  One that
hangs (a process stopped with SIGSTOP, a thread stuck in an fsync on a
dying disk or a hard NFS mount) says nothing: every payment waits on a
write that neither commits nor fails, terminals get no answer, and the
switch would stay up.  So the switch pings the writer every ``interval``
seconds, one ping at a time; a ping that has neither succeeded nor failed
after ``hang_after`` seconds means the writer hangs.  A failed ping (disk
full, locked) is an answer: the writer lives ("Journal failing").

``hang_after`` is well above SQLite's busy_timeout (5 s, after which a write
that cannot get the lock fails) and an fsync of a batch on a slow disk.

It counts only the time the event loop was watching.  The watch runs on the
loop; a loop stalled longer than ``hang_after`` (a long synchronous callback,
a GC pause, the VM descheduled, the switch itself stopped) would otherwise,
on resumption, find its ping unanswered while the writer's answer waits in
the loop's ready queue or on the writer's socket, and kill a healthy writer.
So a tick that comes much later than ``interval`` after the previous one
counts only ``2 * interval`` of the gap and gives no verdict; the watch ticks
again as soon as the loop has run what was waiting.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Callable

HANG_AFTER = 15.0  # seconds without an answer from the writer: it hangs
INTERVAL = 1.0  # seconds between two pings


class WriterWatch:
    """When the writer hangs, from the pings sent and answered; ``now`` is given, nothing waits."""

    def __init__(self, ping: Callable[[], Future], hang_after: float = HANG_AFTER,
                 interval: float = INTERVAL) -> None:
        self._ping = ping
        self.hang_after = hang_after
        self.interval = interval
        self.stalled_after = 2 * interval  # a longer gap between two ticks: the loop was stalled
        self._pending: Future | None = None
        self._unanswered = 0.0  # loop time watched since the ping out was sent
        self._last: float | None = None  # the previous tick
        self._stalled = False

    def tick(self, now: float) -> float | None:
        """Send a ping if none is out; the seconds the one out has gone unanswered while
        the loop was watching, once that is over ``hang_after`` (then the writer hangs),
        else None.  Never a verdict on a tick that follows a stall of the loop."""
        gap = 0.0 if self._last is None else now - self._last
        self._last = now
        self._stalled = gap > self.stalled_after
        if self._pending is None or self._pending.done():
            self._pending, self._unanswered = self._ping(), 0.0
            self._pending.add_done_callback(_read)
            return None
        self._unanswered += min(gap, self.stalled_after)
        if self._stalled:
            return None  # its answer may be waiting behind this tick: judge once the loop ran it
        return self._unanswered if self._unanswered > self.hang_after else None

    def next_tick(self, now: float) -> float:
        """When to tick again: at once (after the loop has run what waited) after a stall,
        else ``interval`` later."""
        return now if self._stalled else now + self.interval


def _read(fut) -> None:
    """A failed ping (disk full: "Journal failing" says so) is an answer, not an error of
    the watch's: read, so that asyncio does not log it as never retrieved, once a second."""
    if not fut.cancelled():
        fut.exception()


async def watch(ping: Callable[[], Future], on_hung: Callable[[float], None], *,
                hang_after: float | None = None, interval: float = INTERVAL) -> None:
    """Ping until the writer hangs, then call ``on_hung(seconds unanswered)`` once and return
    (``hang_after``: HANG_AFTER as it is when called)."""
    loop = asyncio.get_running_loop()
    w = WriterWatch(ping, HANG_AFTER if hang_after is None else hang_after, interval)
    while True:
        now = loop.time()
        waited = w.tick(now)
        if waited is not None:
            on_hung(waited)
            return
        await asyncio.sleep(w.next_tick(now) - now)  # 0 after a stall: one pass of the loop first


def stop_hung_writer(journal, waited: float, *, log, exit: Callable[[int], None]) -> None:
    """End a writer that hangs the way a dead one ends.

    A writer process is killed (SIGKILL reaches a stopped process too): its
    death fails every write it had not confirmed (each payment waiting on one
    is answered 96, or not at all when that write held its acquirer's outcome:
    JournalUncertain; none is answered as if recorded) and stops the switch
    (exit 1, "The journal writer process died").  A writer thread cannot be
    ended from outside, and closing the journal would wait for it forever: the
    switch exits 1 at once, answering nothing it had not recorded; terminals
    time out and reverse as for any lost answer, start-up recovery reverses
    what the journal holds in flight."""
    import os
    import signal

    kind, ident = journal.writer_identity() or ("thread", 0)
    why = f"journal writer {kind} has not answered for {waited:.0f} s (runbook: \"The journal writer hangs\")"
    if kind == "process":
        log.error("%s: killing it (pid %d); the switch stops as when it dies", why, ident)
        try:
            os.kill(ident, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it died meanwhile: its death is being handled
        return
    log.error("%s: a thread cannot be stopped; exiting now for the service manager to start the switch again", why)
    exit(1)
