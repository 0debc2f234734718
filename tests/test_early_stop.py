"""SIGTERM/SIGINT while starting (switch.io.early_stop), in-process: what the e2e tests in
test_e2e_stop.py cannot time exactly."""
import asyncio
import os
import signal

import pytest

from switch.io import early_stop


@pytest.fixture(autouse=True)
def restore_signals():
    before = {sig: signal.getsignal(sig) for sig in early_stop.SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_before_any_loop_a_stop_unwinds_start_up():
    early_stop.hold()
    unwound = []
    with pytest.raises(early_stop.StopRequested) as e:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between two bytecodes
                pass
        finally:
            unwound.append(True)
    assert str(e.value) == "SIGTERM" and unwound == [True]


def test_a_stop_noted_in_the_loop_before_its_handlers_cancels_start_up_at_once():
    async def start() -> tuple[bool, str | None]:
        os.kill(os.getpid(), signal.SIGINT)  # the loop runs, its handlers are not set yet: noted
        stop = asyncio.Event()
        stopper = early_stop.LoopStop(stop)
        try:
            await asyncio.sleep(5)  # start-up would go on here
        except asyncio.CancelledError:
            assert stopper.cancelled_start()
            await asyncio.sleep(0)  # the cancel is done with: closing can await
            return stop.is_set(), stopper.signal_name
        return False, None

    early_stop.hold()
    assert asyncio.run(asyncio.wait_for(start(), 3)) == (True, "SIGINT")


def test_a_cancel_swallowed_on_the_way_still_stops_at_serving():
    async def start() -> bool:
        stopper = early_stop.LoopStop(asyncio.Event())
        loop = asyncio.get_running_loop()
        loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # a start-up step that takes any exception for its own failure
        try:
            await stopper.serving()
        except asyncio.CancelledError:
            return stopper.cancelled_start()
        return False

    early_stop.hold()
    assert asyncio.run(asyncio.wait_for(start(), 3))


def test_once_serving_a_stop_only_sets_the_event():
    async def serve() -> bool:
        stop = asyncio.Event()
        stopper = early_stop.LoopStop(stop)
        await stopper.serving()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 2)  # not cancelled: the caller drains
        return stopper.cancelled_start()

    early_stop.hold()
    assert asyncio.run(serve()) is False
