"""The relay's waits (:mod:`switch.events`): a try repeated with doubling waits, a sleep that a stop cuts
short, and a sink started again after it failed.  Each ends promptly once the relay is stopped."""
from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("payswitch.relay")

RESTART_FIRST_WAIT = 1.0  # seconds before a failed sink starts again (doubling up to retry_max)


async def retried(attempt, retrying, retry_max: float, stop: asyncio.Event) -> bool:
    """``await attempt()`` until it returns None (done), with doubling waits from 0.1 s up to ``retry_max``;
    ``retrying(failure, wait)`` is told each failure (what ``attempt`` returned) before its wait.

    False when ``stop`` is set after a failed try, or during the wait: the try on its way is let finish,
    none is started after a stop.
    """
    wait = 0.1
    while (failure := await attempt()) is not None:
        if stop.is_set():
            return False
        retrying(failure, wait)
        await sleep_unless(stop, wait)
        if stop.is_set():
            return False
        wait = min(wait * 2, retry_max)
    return True


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def supervised(name: str, sink, retry_max: float, stop: asyncio.Event) -> None:
    """Run ``sink()`` until ``stop``: should it fail, one error line and a fresh start from its saved
    position after a doubling wait (never a crash loop, never a sink silently gone)."""
    wait = RESTART_FIRST_WAIT
    while not stop.is_set():
        started = time.monotonic()
        try:
            await sink()
        except Exception as e:  # noqa: BLE001 - any failure of a sink is retried; CancelledError passes
            if time.monotonic() - started > 60:  # it ran a while: a new failure starts the waits again
                wait = RESTART_FIRST_WAIT
            log.error("%s stopped: %s: %s; starting again in %g s from its last saved position",
                      name, type(e).__name__, e, wait)
        await sleep_unless(stop, wait)
        wait = min(wait * 2, max(retry_max, RESTART_FIRST_WAIT))
