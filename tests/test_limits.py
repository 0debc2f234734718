"""Issue 8 limits of the terminal listeners (spec section 1 v1.1) on real sockets:
connection caps in total and per source address, the partial-frame deadline,
the idle limit, and the per-terminal in-flight limit that reconnecting can't
escape.  The switch is the service harness's (fake acquirers, journal in memory)."""
from __future__ import annotations

import asyncio
import struct

import msgspec

from switch.config import Listener
from switch.io.server import start_listeners
from switch.io.service import Switch
from tests.test_service import TERM, FakeAcquirer, fakes, hmac_key, make_config, request, sample  # noqa: F401

LOOP = "127.0.0.1"


def frame(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


async def read_answer(reader) -> dict:
    n = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
    msg = TERM.decode(await asyncio.wait_for(reader.readexactly(n), 3))
    return {k: msg[k] for k in msg} | {"mti": msg.mti}


async def closed(reader, within: float) -> bool:
    """True when the peer closed (EOF or reset) within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


def serve(scenario, *, acquirers=None, listener=None, **limits):
    cfg = make_config()
    lst = listener or Listener(host=LOOP, port=0)
    cfg = msgspec.structs.replace(cfg, listeners=[lst], **limits)

    async def main():
        sw = Switch(cfg, acquirers=acquirers if acquirers is not None else fakes())
        await sw.start()
        servers = await start_listeners(sw, cfg.listeners)
        port = servers[0].sockets[0].getsockname()[1]
        try:
            return await scenario(sw, port)
        finally:
            for s in servers:
                s.close()
            await asyncio.wait_for(sw.close(), 3)

    return asyncio.run(main())


async def purchase(port, stan="000001", tid="TERM0001"):
    reader, writer = await asyncio.open_connection(LOOP, port)
    writer.write(frame(request(stan=stan, tid=tid)))
    try:
        return await read_answer(reader)
    finally:
        writer.close()


def test_connections_over_the_total_cap_are_closed_at_once_and_counted():
    async def scenario(sw, port):
        kept = [await asyncio.open_connection(LOOP, port) for _ in range(3)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(LOOP, port)
        assert await closed(reader, 1.0)
        assert sample(sw, "payswitch_terminal_connections_refused_total", reason="total") == 1
        assert sample(sw, "payswitch_terminal_connections") == 3
        # the three admitted ones still transact
        r, w = kept[0]
        w.write(frame(request(stan="000007")))
        assert (await read_answer(r))[39] == "00"
        for _, w in kept:
            w.close()
        writer.close()
        await asyncio.sleep(0.05)
        assert sample(sw, "payswitch_terminal_connections") == 0
        assert (await purchase(port, "000008"))[39] == "00"  # slots come back on close

    serve(scenario, max_connections=3)


def test_connections_over_the_per_address_cap_are_closed_at_once():
    async def scenario(sw, port):
        kept = [await asyncio.open_connection(LOOP, port) for _ in range(2)]
        reader, writer = await asyncio.open_connection(LOOP, port)
        assert await closed(reader, 1.0)
        assert sample(sw, "payswitch_terminal_connections_refused_total", reason="per_address") == 1
        for _, w in kept:
            w.close()
        writer.close()

    serve(scenario, max_connections_per_address=2)


def test_a_flood_of_refused_connections_is_counted_exactly_and_logged_a_line_per_interval(caplog, monkeypatch):
    from switch.io import server
    from switch.logs import Throttled

    monkeypatch.setattr(server, "_refusals", Throttled(server.log))  # a fresh interval for this test

    async def scenario(sw, port):
        kept = [await asyncio.open_connection(LOOP, port)]
        refused = [await asyncio.open_connection(LOOP, port) for _ in range(200)]
        for reader, _ in refused:
            assert await closed(reader, 1.0)
        assert sample(sw, "payswitch_terminal_connections_refused_total", reason="per_address") == 200
        for _, w in kept + refused:
            w.close()

    with caplog.at_level("WARNING", logger="payswitch.server"):
        serve(scenario, max_connections_per_address=1)
    lines = [r for r in caplog.records if "connection cap" in r.getMessage()]
    assert len(lines) == 1 and "over the per address connection cap" in lines[0].getMessage()


def test_throttled_says_how_many_lines_it_held_back(caplog):
    import logging

    from switch.logs import Throttled

    now = [100.0]
    t = Throttled(logging.getLogger("payswitch.test"), every=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="payswitch.test"):
        for i in range(5):
            t.warning("refusing %s", i)
        now[0] += 10.0
        t.warning("refusing %s", "late")
    assert [r.getMessage() for r in caplog.records] == [
        "refusing 0", "refusing late (and 4 more like it in the last 10 s, not logged)"]


def test_a_frame_stalled_mid_way_closes_its_connection_not_others():
    async def scenario(sw, port):
        loris_r, loris_w = await asyncio.open_connection(LOOP, port)
        body = request(stan="000002")
        loris_w.write(frame(body)[:10])  # header and a few bytes, then nothing
        # bytes trickling in do not extend the deadline of the frame they belong to
        for i in range(10, 14):
            await asyncio.sleep(0.1)
            loris_w.write(frame(body)[i : i + 1])
        assert await closed(loris_r, 1.0)
        assert sample(sw, "payswitch_terminal_connections_timed_out_total", reason="partial_frame") == 1
        # a terminal sending whole frames slowly is not a slow-loris
        r, w = await asyncio.open_connection(LOOP, port)
        for stan in ("000003", "000004", "000005"):
            w.write(frame(request(stan=stan)))
            assert (await read_answer(r))[39] == "00"
            await asyncio.sleep(0.25)
        w.close()

    serve(scenario, listener=Listener(host=LOOP, port=0, frame_timeout=0.4, idle_timeout=60))


def test_idle_connections_are_closed_but_not_while_a_request_is_open():
    gate = asyncio.Event()

    async def scenario(sw, port):
        idle_r, idle_w = await asyncio.open_connection(LOOP, port)
        busy_r, busy_w = await asyncio.open_connection(LOOP, port)
        busy_w.write(frame(request(stan="000009")))  # held at the acquirer past the idle limit
        assert await closed(idle_r, 1.5)
        assert sample(sw, "payswitch_terminal_connections_timed_out_total", reason="idle") == 1
        gate.set()
        assert (await read_answer(busy_r))[39] == "00"
        busy_w.close()

    bank_a = FakeAcquirer("bank-a", gate=gate)
    serve(scenario, acquirers=fakes(**{"bank-a": bank_a}),
          listener=Listener(host=LOOP, port=0, idle_timeout=0.5))


def test_a_half_closed_connection_is_answered_though_a_frame_was_cut_short():
    """EOF after a request still open and a partial frame: the partial frame's deadline passes
    while the request waits at the acquirer, and the answer is still written, then the close."""
    gate = asyncio.Event()

    async def scenario(sw, port):
        r, w = await asyncio.open_connection(LOOP, port)
        w.write(frame(request(stan="000010")) + frame(request(stan="000011"))[:10])
        w.write_eof()
        while not bank_a.authorized:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.8)  # twice the frame deadline
        gate.set()
        answer = await read_answer(r)
        assert (answer[11], answer[39]) == ("000010", "00")
        assert await closed(r, 1.0)
        assert sample(sw, "payswitch_terminal_connections_timed_out_total", reason="partial_frame") == 0
        w.close()

    bank_a = FakeAcquirer("bank-a", gate=gate)
    serve(scenario, acquirers=fakes(**{"bank-a": bank_a}),
          listener=Listener(host=LOOP, port=0, frame_timeout=0.4, idle_timeout=60))


def test_the_in_flight_limit_per_terminal_holds_across_connections_and_reconnects():
    gate = asyncio.Event()

    async def scenario(sw, port):
        # three requests of TERM0001 held at the acquirer, on a connection that then goes away
        r1, w1 = await asyncio.open_connection(LOOP, port)
        for stan in ("000011", "000012", "000013"):
            w1.write(frame(request(stan=stan)))
        while len(bank_a.authorized) < 3:
            await asyncio.sleep(0.01)
        w1.close()
        # reconnecting gets no more: the fourth is answered 91 at once, never reaching the acquirer
        assert (await purchase(port, "000014"))[39] == "91"
        assert len(bank_a.authorized) == 3
        assert sample(sw, "payswitch_terminal_in_flight_limited_total") == 1
        # another terminal is not held back
        other = asyncio.ensure_future(purchase(port, "000015", tid="TERM0002"))
        while len(bank_a.authorized) < 4:
            await asyncio.sleep(0.01)
        gate.set()
        assert (await other)[39] == "00"
        while sw.engine.slots.open:
            await asyncio.sleep(0.01)
        assert (await purchase(port, "000016"))[39] == "00"  # slots free once answered

    bank_a = FakeAcquirer("bank-a", gate=gate)
    serve(scenario, acquirers=fakes(**{"bank-a": bank_a}), max_in_flight_per_terminal=3)


def test_a_reload_sets_the_per_terminal_limit():
    """The limit is read with the rest of the configuration (Engine.apply), so a reload changes it."""
    from tests.test_service import TID, call, run

    async def scenario(sw):
        assert sw.engine.slots.take(TID, 256)  # one request of the terminal still open
        sw.reload(msgspec.structs.replace(make_config(), max_in_flight_per_terminal=1))
        assert (await call(sw, request(stan="000001")))[39] == "91"
        sw.reload(msgspec.structs.replace(make_config(), max_in_flight_per_terminal=2))
        assert (await call(sw, request(stan="000002")))[39] == "00"
        assert sample(sw, "payswitch_terminal_in_flight_limited_total") == 1

    run(scenario)


def test_a_request_that_fails_outside_the_engine_is_counted_as_an_internal_error(caplog):
    """A bug past the engine's own handler (an answer that does not encode, say) leaves the
    terminal without an answer: it is an internal error on /metrics, so the alert says so,
    and the log line names its runbook section."""
    async def scenario(sw, port):
        async def broken(body, codec=None):
            raise RuntimeError("an answer that does not encode")

        sw.handle = broken
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(frame(request(stan="000007")))
        assert await closed(reader, 0.5) is False  # no answer, the connection lives on
        writer.close()
        return sample(sw, "payswitch_internal_errors_total")

    assert serve(scenario) == 1
    [line] = [r for r in caplog.records if "not answered" in r.getMessage()]
    assert line.getMessage().endswith('failed, not answered: an internal error (runbook: "Internal errors")')
    assert line.exc_info is not None


def test_a_terminal_framing_otherwise_is_closed_with_a_line_that_says_what_to_check(caplog):
    """A wrong length header (here a 4-digit ASCII one on a binary2 listener declaring more than
    the largest frame) closes the connection, counted; the warning names the listener's
    framing and the runbook's metric, so an operator knows which side to look at."""
    async def scenario(sw, port):
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(b"0123" + b"x" * 8)
        assert await closed(reader, 2.0)
        writer.close()
        return sample(sw, "payswitch_frame_errors_total")

    assert serve(scenario) == 1
    [line] = [r for r in caplog.records if r.getMessage().startswith("closing ")]
    assert line.getMessage().endswith(
        '(the terminal does not frame as this listener does: header = "binary2", no TPDU;'
        " runbook: payswitch_frame_errors_total)"), line.getMessage()
