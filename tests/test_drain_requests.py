"""Requests that come while the switch drains (SIGTERM), without sockets (switch.core.drain).

New requests are answered 91 at once, neither journaled nor sent; the journal
still answers retransmissions and repeats (sections 6, 6.1); reversals are
recorded as always; the drain ends with the last request in flight, however
many new ones keep coming.  The processes and their connections:
tests/test_e2e_drain.py.
"""
from __future__ import annotations

import asyncio

from switch.core import states
from tests.test_service import (  # noqa: F401  (hmac_key: the autouse fixture)
    TERM, WAIT, FakeAcquirer, call, fakes, hmac_key, record, request, reversal, run, sample, settlement, wait_state,
)

REFUSED = "payswitch_requests_refused_draining_total"


def test_while_draining_a_new_request_is_answered_91_and_neither_journaled_nor_sent():
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        assert await sw.drain(1.0)  # nothing in flight: over at once, the switch now draining
        for body, stan in ((request(stan="000002"), "000002"), (request("0100", stan="000003"), "000003"),
                           (settlement("000004"), "000004")):
            answer = await call(sw, body)
            assert answer[39] == "91" and answer[11] == stan and 38 not in answer
            assert await record(sw, stan) is None
        assert bank_a.authorized == []
        assert sample(sw, REFUSED) == 3
        assert sample(sw, "payswitch_requests_total", kind="unknown", mclass="financial", code="91") == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_while_draining_retransmissions_and_repeats_get_the_journaled_answer_s6():
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        body = request()
        first = await sw.handle(body)
        assert TERM.decode(first)[39] == "00"
        await sw.drain(1.0)
        assert await sw.handle(body) == first  # byte for byte
        repeat = await call(sw, request("0201"))
        original = TERM.decode(first)
        assert repeat.mti == "0210" and [repeat.get(f) for f in (37, 38, 39)] == [original.get(f) for f in (37, 38, 39)]
        assert (await call(sw, request(amount="000000009900")))[39] == "94"  # other content, same key
        assert len(bank_a.authorized) == 1
        assert sample(sw, REFUSED) == 0

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_while_draining_a_reversal_is_recorded_and_answered_00_s6_1():
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        await sw.drain(1.0)
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)
        assert len(bank_a.reversed) == 1
        # A reversal of something never seen is recorded too: its late original is a 94.
        assert (await call(sw, reversal("000003", "000009")))[39] == "00"
        assert (await record(sw, "000009")).state == states.VOID
        assert sample(sw, REFUSED) == 0

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_the_drain_ends_with_the_last_request_in_flight_while_new_ones_keep_coming():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        body = request()
        first = asyncio.create_task(sw.handle(body))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        drained = asyncio.create_task(sw.drain(30.0))
        await asyncio.sleep(0)
        again = asyncio.create_task(sw.handle(body))  # a retransmission of the one in flight: its answer
        for n in range(2, 12):  # a busy host: each new one 91 at once, the drain going on
            answer = await asyncio.wait_for(call(sw, request(stan="%06d" % n)), WAIT)
            assert answer[39] == "91"
        assert not drained.done() and not first.done() and not again.done()
        gate.set()
        assert await asyncio.wait_for(drained, WAIT) is True  # not after 30 s
        assert first.done() and again.done() and first.result() == again.result()
        assert TERM.decode(first.result())[39] == "00"
        assert len(bank_a.authorized) == 1
        assert sample(sw, REFUSED) == 10

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- terminal connections (real sockets, the listener kept open to connect while draining) ----


def test_draining_closes_idle_connections_at_once_and_busy_ones_after_their_last_answer():
    from tests.test_limits import LOOP, closed, frame, read_answer, serve

    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw, port):
        idle_r, _idle_w = await asyncio.open_connection(LOOP, port)
        busy_r, busy_w = await asyncio.open_connection(LOOP, port)
        busy_w.write(frame(request(stan="000001")))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        drained = asyncio.create_task(sw.drain(30.0))
        assert await closed(idle_r, 1.0)  # nothing in flight: closed as the drain starts
        # Accepted while draining (here the listener is still open): closed, nothing read.
        late_r, late_w = await asyncio.open_connection(LOOP, port)
        assert await closed(late_r, 1.0)
        busy_w.write(frame(request(stan="000002")))  # new: 91 at once, the connection kept
        assert (await read_answer(busy_r))[39] == "91"
        assert not await closed(busy_r, 0.1)
        gate.set()
        answer = await read_answer(busy_r)
        assert (answer[11], answer[39]) == ("000001", "00")
        assert await closed(busy_r, 1.0)  # its last answer written: closed
        assert await asyncio.wait_for(drained, WAIT) is True
        assert sw.connections == set()

    serve(scenario, acquirers=fakes(**{"bank-a": bank_a}))
