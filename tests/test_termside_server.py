"""A terminal connection holds each request's task until the request ends (the loop keeps
only weak references to tasks), then lets it go; reading pauses at the connection's
max_in_flight and resumes once half of them are answered (spec section 1)."""
from __future__ import annotations

import asyncio

from switch.config import Listener
from tests.test_limits import LOOP, frame, read_answer, serve
from tests.test_service import hmac_key, request  # noqa: F401  (hmac_key: the autouse fixture)


def hold_answers(sw) -> asyncio.Event:
    """Requests wait in the switch until the event returned is set."""
    release = asyncio.Event()
    handle = sw.handle

    async def held(body, codec=None):
        await release.wait()
        return await handle(body, codec)

    sw.handle = held
    return release


def test_each_request_task_is_held_while_it_runs_and_let_go_when_answered():
    async def scenario(sw, port):
        release = hold_answers(sw)
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(frame(request(stan="000001")) + frame(request(stan="000002")))
        for _ in range(100):
            await asyncio.sleep(0.01)
            [conn] = sw.connections
            if conn.in_flight == 2:
                break
        during = (len(conn.tasks), all(not t.done() for t in conn.tasks.values()))
        release.set()
        answers = sorted([(await read_answer(reader))[11] for _ in range(2)])
        await asyncio.sleep(0.05)
        after = (len(conn.tasks), conn.in_flight)
        writer.close()
        return during, answers, after

    during, answers, after = serve(scenario)
    assert during == (2, True)
    assert answers == ["000001", "000002"]
    assert after == (0, 0)


def test_reading_pauses_at_max_in_flight_and_resumes_when_half_are_answered():
    async def scenario(sw, port):
        release = hold_answers(sw)
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(b"".join(frame(request(stan="%06d" % i)) for i in range(1, 5)))
        for _ in range(100):
            await asyncio.sleep(0.01)
            [conn] = sw.connections
            if conn.in_flight >= 2:
                break
        await asyncio.sleep(0.05)
        paused = (conn.in_flight, conn.read_paused)
        release.set()
        answers = sorted([(await read_answer(reader))[11] for _ in range(4)])
        await asyncio.sleep(0.05)
        resumed = (conn.in_flight, conn.read_paused, len(conn.tasks))
        writer.close()
        return paused, answers, resumed

    paused, answers, resumed = serve(scenario, listener=Listener(host=LOOP, port=0, max_in_flight=2))
    assert paused[0] >= 2 and paused[1] is True  # frames that came whole in one read are all started
    assert answers == ["000001", "000002", "000003", "000004"]
    assert resumed == (0, False, 0)
