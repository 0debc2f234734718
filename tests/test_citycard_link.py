"""The city-card link on the core's reconnect back-off and response mux
(switch.core.backoff, switch.core.inflight), against a scripted centre."""
from __future__ import annotations

import asyncio

import pytest

from adapters.citycard import CityCardAcquirer
from adapters.citycard import adapter as citycard_adapter
from adapters.citycard.adapter import LinkLost
from adapters.citycard.protocol import Balance, Response, encode
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


def test_answers_are_matched_by_request_id_in_any_order(run):
    async def main():
        held = []

        async def answer_backwards(req, writer, number):
            held.append(req)
            if len(held) == len(CARDS):
                for r in reversed(held):
                    writer.write(encode(Response(id=r.id, code="00", balance=int(r.card[-1]))))

        async with FakeCentre(answer_backwards) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            answers = await asyncio.gather(*(acq.call(Balance(id=0, card=card), 2) for card in CARDS))
            assert [a.balance for a in answers] == [0, 1, 2]
            assert sum(link.in_flight for link in acq._links) == 0
            assert acq.metrics.get("late_answers") == acq.metrics.get("unmatched_answers") == 0
            await acq.close()

    run(main())


def test_a_late_answer_is_told_from_a_stray_one(run):
    async def main():
        async def late_and_stray(req, writer, number):
            writer.write(encode(Response(id=req.id + 1000, code="00")))  # never sent
            await asyncio.sleep(0.2)
            late = encode(Response(id=req.id, code="00", balance=1))
            writer.write(late + late)  # late, then the same again: stray

        async with FakeCentre(late_and_stray) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            with pytest.raises(TimeoutError):
                await acq.call(Balance(id=0, card=CARDS[0]), 0.05)
            await until(lambda: acq.metrics.get("unmatched_answers") == 2, "the stray answers")
            assert acq.metrics.get("late_answers") == 1
            assert acq.healthy() and sum(link.in_flight for link in acq._links) == 0
            await acq.close()

    run(main())


def test_a_lost_connection_fails_every_request_in_flight_on_it(run):
    async def main():
        received = []

        async def drop_when_all_arrived(req, writer, number):
            received.append(req)
            if len(received) == len(CARDS):
                writer.transport.abort()

        async with FakeCentre(drop_when_all_arrived) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint], backoff=(5.0, 5.0))
            await acq.start()
            calls = [acq.call(Balance(id=0, card=card), 2) for card in CARDS]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert [type(o) for o in outcomes] == [LinkLost] * len(CARDS)
            assert acq.metrics.get("lost_in_flight", op="balance") == len(CARDS)
            assert acq.metrics.get("late_answers") == 0
            await acq.close()

    run(main())
