"""The switch's own deadline on acquirer calls, one timer for all of them.

Every adapter enforces its acquirer's deadline itself; the driver stops
waiting a grace period later in case an adapter does not (a bug, a hung
peer library), answers 68 and has the payment reversed.  ``asyncio.timeout``
per call costs a Timeout object, a timer handle and a reschedule for every
payment (about 6% of the loop's CPU per purchase); here a call costs a dict
entry, and one timer, armed only while calls are watched, checks them every
``tick`` seconds.  The deadline is therefore late by up to ``tick``: a
backstop, not the acquirer's deadline.
"""
from __future__ import annotations

import asyncio


class Backstop:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 0.1) -> None:
        self.loop = loop
        self.tick = tick
        self._watched: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task, seconds: float) -> None:
        """Cancel ``task`` if it is still watched ``seconds`` from now (give or take ``tick``)."""
        self._watched[task] = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._check)

    def release(self, task: asyncio.Task) -> None:
        """The call returned or failed on its own: stop watching."""
        self._watched.pop(task, None)

    def expired(self, task: asyncio.Task) -> bool:
        """After a CancelledError in ``task``: True (once) if this backstop cancelled it.

        The cancellation is then withdrawn (``Task.uncancel``), so the caller
        can turn it into an error of its own.
        """
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def expire_all(self) -> int:
        """Cancel every watched task now, as if its deadline had passed (shutdown); how many."""
        tasks = list(self._watched)
        self._watched.clear()
        for task in tasks:
            self._expired.add(task)
            task.cancel()
        return len(tasks)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        for task, deadline in [item for item in self._watched.items() if item[1] <= now]:
            del self._watched[task]
            self._expired.add(task)
            task.cancel()
        if self._watched:
            self._timer = self.loop.call_later(self.tick, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()
        self._expired.clear()
