"""How close one switch process is to its limit: event-loop lag and the CPU of its parts.

A switch process serves every terminal request on one event-loop thread,
and that thread's Python work (with the journal writer's, which shares the
interpreter lock) is what caps it: when the loop thread uses about a whole
core, more load only makes every answer later.  Measured on a 2-vCPU machine
(issue 9's closing note): at 50 connections the loop thread was 60-75% busy
and at 200 connections the throughput grew by only 6% while latency grew
fourfold.  Two signals tell an operator that this is happening:

- ``payswitch_event_loop_lag_seconds``: how late a timer the loop set for
  itself fired, every :data:`INTERVAL` seconds.  That is how long any ready
  callback (a terminal's bytes, a journal result, an acquirer's answer)
  waits for the loop: under 1 ms when it has room, tens of ms when it has
  none;
- ``payswitch_cpu_seconds_total{part}``: CPU time of the event-loop thread
  (``event_loop``) and of the journal writer (``journal_writer``: the writer
  thread, or the writer process of ``[journal] writer = "process"``), read
  from ``/proc`` when scraped.  Its rate is the share of a core each uses;
  ``event_loop`` near 1.0 is a saturated worker (see the runbook, "Event loop
  saturated": more workers, more cores).

Linux only for the CPU counters (``/proc``); elsewhere they are not exported.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

INTERVAL = 0.5  # seconds between two lag samples

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(path: str) -> float | None:
    """utime + stime of a ``/proc/.../stat`` file (a process or one of its threads), None if unreadable."""
    try:
        with open(path, "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def thread_stat(native_id: int) -> str:
    return f"/proc/self/task/{native_id}/stat"


def process_stat(pid: int) -> str:
    return f"/proc/{pid}/stat"


class LoopWatch:
    """Samples the loop's lag on a timer; names the CPU counters' sources.

    ``lag``: a histogram child (``observe(seconds)``); ``writer``: returns the
    ``/proc`` stat path of the journal writer (thread or process) or None.
    Start it on the loop it watches.
    """

    def __init__(self, lag, writer: Callable[[], str | None] = lambda: None, interval: float = INTERVAL) -> None:
        self._lag = lag
        self._writer = writer
        self._interval = interval
        self._loop = None
        self._timer = None
        self._due = 0.0
        self._loop_thread: int | None = None

    def start(self, loop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_native_id()
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._due = time.monotonic() + self._interval
        self._timer = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        # A timer may fire up to a clock tick early (uvloop keeps milliseconds): never negative.
        self._lag.observe(max(0.0, time.monotonic() - self._due))
        self._arm()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by part (what can be read here)."""
        out = {}
        if self._loop_thread is not None:
            value = cpu_seconds(thread_stat(self._loop_thread))
            if value is not None:
                out["event_loop"] = value
        path = self._writer()
        if path is not None:
            value = cpu_seconds(path)
            if value is not None:
                out["journal_writer"] = value
        return out
