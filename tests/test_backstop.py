"""switch.io.backstop: one timer guards every acquirer call's overrun deadline."""
import asyncio

import pytest

from switch.io.backstop import Backstop


def run(coro):
    return asyncio.run(coro)


def test_a_call_past_its_deadline_is_cancelled_and_reported_as_expired():
    async def main():
        loop = asyncio.get_running_loop()
        stop = Backstop(loop, tick=0.01)
        outcome = []

        async def call():
            task = asyncio.current_task()
            stop.watch(task, 0.03)
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                outcome.append(stop.expired(task))
                outcome.append(task.cancelling())
                return "overrun"
            finally:
                stop.release(task)

        t0 = loop.time()
        assert await asyncio.wait_for(call(), 2) == "overrun"
        assert 0.03 <= loop.time() - t0 < 0.5
        assert outcome == [True, 0]  # the backstop's cancellation was withdrawn
        await asyncio.sleep(0.03)
        assert stop._timer is None  # nothing watched: no timer left armed

    run(main())


def test_a_call_that_returns_in_time_is_never_cancelled():
    async def main():
        stop = Backstop(asyncio.get_running_loop(), tick=0.01)

        async def call():
            task = asyncio.current_task()
            stop.watch(task, 0.05)
            try:
                await asyncio.sleep(0.01)
                return "answer"
            finally:
                stop.release(task)

        assert await call() == "answer"
        await asyncio.sleep(0.1)  # past the deadline: nothing to cancel any more
        assert not stop._watched and not stop._expired

    run(main())


def test_a_cancellation_from_elsewhere_is_not_taken_for_an_overrun():
    async def main():
        stop = Backstop(asyncio.get_running_loop(), tick=0.01)
        seen = []

        async def call():
            task = asyncio.current_task()
            stop.watch(task, 5)
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append(stop.expired(task))
                raise
            finally:
                stop.release(task)

        task = asyncio.create_task(call())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [False]
        stop.close()

    run(main())
