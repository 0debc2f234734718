"""The journal writer's watchdog counts only the time the event loop was watching.

A stalled loop (a long synchronous callback, a GC pause, the VM descheduled,
the switch itself stopped) is not a hung writer: on resumption the writer's
answer may still wait in the loop's ready queue behind the watch's own tick.
A writer that really hangs is still caught within about ``hang_after`` of the
loop's time.  The loop below never waits for real: its clock jumps to the
next timer, and a stall is a jump of the clock as the watch reads it.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest

from switch.io.journal_watch import WriterWatch, watch


def _pings() -> tuple[list[Future], callable]:
    sent: list[Future] = []

    def ping():
        sent.append(Future())
        return sent[-1]

    return sent, ping


def test_a_ping_answered_in_the_ready_queue_after_a_stall_is_not_a_hang():
    sent, ping = _pings()
    w = WriterWatch(ping, hang_after=15.0, interval=1.0)
    assert w.tick(100.0) is None and len(sent) == 1
    assert w.tick(101.0) is None
    assert w.tick(125.0) is None  # 25 s since the ping, 23 of them the loop stalled: no verdict
    assert w.next_tick(125.0) == 125.0  # again as soon as the loop has run what waited
    sent[-1].set_result(True)  # the answer that sat in the ready queue
    assert w.tick(125.0) is None and len(sent) == 2  # answered: the next ping goes out
    assert w.next_tick(125.0) == 126.0


def test_a_stall_does_not_count_against_a_writer_that_hangs_but_the_watched_time_does():
    sent, ping = _pings()
    w = WriterWatch(ping, hang_after=15.0, interval=1.0)
    w.tick(0.0)
    for now in range(1, 10):
        assert w.tick(float(now)) is None  # 9 s unanswered
    assert w.tick(40.0) is None  # a 31 s stall: at most one stall's allowance counted (2 s: 11 s)
    assert w.tick(40.0) is None  # the re-check after the ready queue ran: still 11 s
    for now in range(41, 45):
        assert w.tick(float(now)) is None  # 15 s
    assert w.tick(45.0) == 16.0  # watched for longer than hang_after: it hangs
    assert len(sent) == 1


def test_a_loop_late_on_every_tick_still_catches_a_writer_that_hangs():
    sent, ping = _pings()
    w = WriterWatch(ping, hang_after=15.0, interval=1.0)
    now, said = 0.0, None
    w.tick(now)
    while said is None and now < 60:
        now += 3.0  # every tick 2 s late: each a stall
        assert w.tick(now) is None  # never judged on the late tick itself...
        said = w.tick(now)  # ...but on the re-check right after it
    assert said == 16.0 and now == 24.0


class _StallingLoop(asyncio.SelectorEventLoop):
    """Its clock jumps to the next timer instead of waiting.  ``stall_at``: the first
    time a task reads the clock at or after it, the loop has been stalled ``stall[0]``
    seconds, and ``stall[1]`` (what the writer said meanwhile) waits in the ready queue."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.stall_at: float | None = None
        self.stall: tuple[float, callable] = (0.0, lambda: None)
        select = self._selector.select

        def jump(timeout=None):
            self.now += timeout or 0.0
            return select(0)

        self._selector.select = jump

    def time(self) -> float:
        if self.stall_at is not None and self.now >= self.stall_at and asyncio.current_task(self) is not None:
            self.stall_at = None
            self.now += self.stall[0]
            self.call_soon(self.stall[1])
        return self.now


def _run_watch(writer, *, stall: float = 0.0, stall_at: float | None = None, meanwhile: bool = False,
               until: float = 60.0):
    """Run ``watch`` with ``writer(loop, ping_number, future)`` answering each ping (and, if
    ``meanwhile``, the one out during the stall, as the loop resumes); the verdicts given and
    the loop time of each, and the number of pings."""
    loop = _StallingLoop()
    said: list[tuple[float, float]] = []
    pending: list[asyncio.Future] = []

    def ping():
        pending.append(loop.create_future())
        writer(loop, len(pending), pending[-1])
        return pending[-1]

    def answer_held():
        if meanwhile and not pending[-1].done():
            pending[-1].set_result(True)

    async def main():
        if stall_at is not None:
            loop.stall_at, loop.stall = loop.now + stall_at, (stall, answer_held)
        try:
            async with asyncio.timeout(until):
                await watch(ping, lambda waited: said.append((waited, loop.now)), hang_after=15.0, interval=1.0)
        except TimeoutError:
            pass

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return [(waited, at - 1000.0) for waited, at in said], len(pending)


def test_watch_does_not_call_a_healthy_writer_hung_after_the_loop_stalled_20_s():
    def writer(loop, n, fut):  # answers at once, except the ping out when the loop stalls
        if n != 6:
            loop.call_soon(fut.set_result, True)

    said, pings = _run_watch(writer, stall=20.0, stall_at=6.0, meanwhile=True)
    assert said == []
    assert pings > 30  # went on pinging once a second after the stall


@pytest.mark.parametrize("stall", [0.0, 20.0])
def test_watch_catches_a_writer_that_hangs_within_hang_after_of_loop_time(stall):
    def writer(loop, n, fut):  # answers the first 5 pings, then never again
        if n <= 5:
            loop.call_soon(fut.set_result, True)

    said, _ = _run_watch(writer, stall=stall, stall_at=8.0, until=120.0)
    assert len(said) == 1
    waited, at = said[0]
    assert 15.0 < waited <= 16.0
    # unanswered since 5.0: caught 15-16 s of loop time later, the stall not counted
    # beyond its allowance (2 s)
    assert 5.0 + 15.0 + stall - 2.0 <= at <= 5.0 + 16.0 + stall
