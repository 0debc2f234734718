"""The city-card link on the core's reconnect back-off (switch.core.backoff),
against a scripted centre."""
from __future__ import annotations

import asyncio

import pytest

from adapters.citycard import CityCardAcquirer
from adapters.citycard import adapter as citycard_adapter
from adapters.citycard.adapter import LinkLost
from adapters.citycard.protocol import Balance
from switch.core.backoff import Backoff
from tests.test_citycard_adapter import FakeCentre, run, socket_closed_port  # noqa: F401  (run: a fixture)

CARDS = [f"880000000000400{n}" for n in range(3)]


async def until(condition, what, tries=200):
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still waiting for {what}")


def test_reconnect_back_off_grows_while_the_centre_is_down_and_resets_once_connected(run, monkeypatch):
    seen: list = []  # delays, and "reset"

    class Recording(Backoff):
        def next_delay(self):
            delay = super().next_delay()
            seen.append(delay)
            return delay

        def reset(self):
            seen.append("reset")
            super().reset()

    monkeypatch.setattr(citycard_adapter, "Backoff", Recording)
    initial, ceiling = 0.002, 0.008

    async def main():
        async def drop(req, writer, number):
            writer.transport.abort()

        with socket_closed_port() as port:
            acq = CityCardAcquirer(endpoints=[("127.0.0.1", port)], connect_timeout=0.05,
                                   backoff=(initial, ceiling))
            await acq.start()
            await until(lambda: len(seen) >= 5, "five failed attempts")
            async with FakeCentre(drop, port=port):
                await until(acq.healthy, "a connection")
                with pytest.raises(LinkLost):  # the centre drops it: reconnect from the initial delay
                    await acq.call(Balance(id=0, card=CARDS[0]), 2)
                await until(lambda: seen.index("reset") < len(seen) - 1, "a delay after the reset")
                await acq.close()

    run(main())
    reset = seen.index("reset")
    base = initial
    for delay in seen[:reset + 2]:
        if delay == "reset":
            base = initial
            continue
        assert base * 0.75 <= delay <= base * 1.25, (seen, base)
        base = min(ceiling, base * 2)
    assert reset >= 5 and max(seen[:reset]) > ceiling * 0.75  # it grew to the ceiling
    assert seen[reset + 1] <= initial * 1.25  # and started again from the initial delay
