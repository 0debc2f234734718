"""The wallets' keep-alive HTTP/1.1 client pool, on plain asyncio and on uvloop."""
import asyncio
import time

import h11
import pytest
import uvloop

from adapters.wallet.http import ConnectionPool, TransportError

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    def run(coro):
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coro)
    return run


class Server:
    """A test HTTP server: ``behaviour(n_on_connection, body)`` -> bytes answer,
    "close" (close without answering) or "hang"."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.connections = 0
        self.open = 0
        self.most_open = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/api"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        conn = h11.Connection(h11.SERVER)
        n = 0
        try:
            while True:
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        target = event.target
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        break
                if isinstance(event, h11.ConnectionClosed):
                    return
                n += 1
                answer = await self.behaviour(n, target + b" " + body)
                if answer == "close":
                    return
                if answer == "hang":
                    await asyncio.sleep(10)
                    return
                writer.write(answer)
                await writer.drain()
                conn = h11.Connection(h11.SERVER)  # raw answers: parse afresh
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            self.open -= 1
            writer.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def echo(n, request):
    return ok(request)


def test_keep_alive_reuses_one_connection(run):
    async def main():
        async with Server(echo) as server:
            pool = ConnectionPool(server.url, size=4)
            for i in range(3):
                response = await pool.request("POST", "/pay", b"x%d" % i, timeout=2.0)
                assert response.status == 200 and response.body == b"/api/pay x%d" % i
            assert server.connections == 1 and pool.idle_connections() == 1
            await pool.close()
    run(main())


def test_connection_close_is_honoured(run):
    async def close_each(n, request):
        return ok(b"ok", b"Connection: close\r\n")

    async def main():
        async with Server(close_each) as server:
            pool = ConnectionPool(server.url)
            for _ in range(2):
                assert (await pool.request("POST", "/", b"", timeout=2.0)).body == b"ok"
            assert server.connections == 2 and pool.idle_connections() == 0
            await pool.close()
    run(main())


def test_idle_connection_closed_by_the_server_is_replaced(run):
    async def first_only(n, request):  # keep-alive announced, but a second request is dropped
        return ok(b"ok") if n == 1 else "close"

    async def main():
        async with Server(first_only) as server:
            pool = ConnectionPool(server.url)
            for _ in range(3):
                assert (await pool.request("POST", "/", b"", timeout=2.0)).body == b"ok"
            assert server.connections == 3
            await pool.close()
    run(main())


def test_request_lost_on_a_reused_connection_may_have_reached_the_server(run):
    # The wallet reads the second request (a pay it may act on), drops the
    # connection without answering and is gone when the request is sent again:
    # that pay may have charged the customer, so it is never "not sent".
    async def answer_once_then_vanish(n, request):
        if n == 1:
            return ok(b"ok")
        server.server.close()  # stop listening: the retry's connect is refused
        return "close"

    async def main():
        nonlocal server
        async with Server(answer_once_then_vanish) as server:
            pool = ConnectionPool(server.url)
            assert (await pool.request("POST", "/", b"", timeout=2.0)).body == b"ok"
            with pytest.raises(TransportError) as exc:
                await pool.request("POST", "/pay", b"x", timeout=2.0)
            assert exc.value.sent is True
            await pool.close()

    server = None
    run(main())


def test_timeout_after_sending_may_have_reached_the_server(run):
    async def hang(n, request):
        return "hang"

    async def main():
        async with Server(hang) as server:
            pool = ConnectionPool(server.url)
            started = time.monotonic()
            with pytest.raises(TransportError) as exc:
                await pool.request("POST", "/", b"x", timeout=0.2)
            assert exc.value.sent is True and time.monotonic() - started < 1.0
            assert pool.idle_connections() == 0
            await pool.close()
    run(main())


def test_closed_without_answer_on_a_fresh_connection(run):
    async def drop(n, request):
        return "close"

    async def main():
        async with Server(drop) as server:
            pool = ConnectionPool(server.url)
            with pytest.raises(TransportError) as exc:
                await pool.request("POST", "/", b"x", timeout=2.0)
            assert exc.value.sent is True and server.connections == 1
            await pool.close()
    run(main())


def test_refused_connection_was_not_sent(run):
    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = ConnectionPool(f"http://127.0.0.1:{port}")
        with pytest.raises(TransportError) as exc:
            await pool.request("POST", "/", b"x", timeout=2.0)
        assert exc.value.sent is False
        await pool.close()
        with pytest.raises(TransportError) as exc:
            await pool.request("POST", "/", b"x", timeout=2.0)
        assert exc.value.sent is False
    run(main())


def test_pool_size_bounds_connections(run):
    async def slow(n, request):
        await asyncio.sleep(0.05)
        return ok(request)

    async def main():
        async with Server(slow) as server:
            pool = ConnectionPool(server.url, size=2)
            answers = await asyncio.gather(
                *(pool.request("POST", "/", b"%d" % i, timeout=5.0) for i in range(8)))
            assert [a.body for a in answers] == [b"/api/ %d" % i for i in range(8)]
            assert server.most_open == 2 and server.connections == 2
            await pool.close()
    run(main())


def test_oversized_or_garbled_answers_fail(run):
    async def garbage(n, request):
        return b"NOT HTTP\r\n\r\n"

    async def main():
        async with Server(garbage) as server:
            pool = ConnectionPool(server.url)
            with pytest.raises(TransportError):
                await pool.request("POST", "/", b"x", timeout=2.0)
            await pool.close()
    run(main())


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:80", "http://"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        ConnectionPool(url)
