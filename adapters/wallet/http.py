"""A small keep-alive HTTP/1.1 client for the wallet APIs: h11 on asyncio streams.

One :class:`ConnectionPool` per wallet endpoint: at most ``size`` connections,
idle ones reused (last in, first out), a connection the server closed while
idle is replaced once, every request bounded by its own timeout.  Bodies go
with Content-Length.  Failures raise :class:`TransportError`, whose ``sent``
says whether the server may have received the request -- the difference
between "nothing happened" and "ask the wallet what happened".
"""
from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import NamedTuple
from urllib.parse import urlsplit

import h11

from switch.secret_refs import shown_url

MAX_BODY = 1 << 20


class TransportError(Exception):
    """No complete HTTP response.  ``sent``: the request may have reached the server."""

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


def gateway_failed(response: "Response") -> None:
    """A 5xx (a gateway whose wallet service is down, overloaded, in maintenance)
    says nothing about the payment: raised as a TransportError of a request that
    may have reached the wallet, so the wallet counts as unreachable (not
    healthy: a route falls back) and the payment as unanswered (queried, then
    cancelled), as for a timeout.  Other non-200 answers stay "unverifiable"."""
    if response.status >= 500:
        raise TransportError(f"HTTP {response.status} from the wallet's server", sent=True)


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Progress:
    __slots__ = ("sent", "received")

    def __init__(self) -> None:
        self.sent = False  # bytes of the request were handed to the socket
        self.received = False  # bytes of a response arrived


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    async def exchange(self, events: list, progress: _Progress) -> Response:
        data = b"".join(self.h11.send(event) for event in events)
        progress.sent = True
        self.writer.write(data)
        await self.writer.drain()
        status, headers, body = 0, [], bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.reader.read(65536)
                if chunk:
                    progress.received = True
                self.h11.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError(f"response body over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed before the response")
            # InformationalResponse (1xx): keep reading

    def finish_cycle(self) -> bool:
        """Ready the connection for the next request; False when it must close."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    def __init__(
        self,
        url: str,
        *,
        size: int = 4,
        ssl: _ssl.SSLContext | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s)://host[:port][/path] URL, got {shown_url(url)!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        if parts.scheme == "https" and ssl is None:
            ssl = _ssl.create_default_context()
        self._ssl = ssl if parts.scheme == "https" else None
        self._host_header = parts.netloc
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        timeout: float,
        headers: list[tuple[str, str]] = (),
    ) -> Response:
        """One request/response.  Raises TransportError, never returns a partial answer."""
        if self._closed:
            raise TransportError("connection pool closed", sent=False)
        headers = [
            ("Host", self._host_header),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Accept", "application/json"),
            *headers,  # e.g. a signature header (value-added services)
        ]
        events = [
            h11.Request(method=method, target=self.base_path + path, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ]
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    return await self._exchange(events, progress)
        except TimeoutError:
            raise TransportError(f"no response within {timeout:.2f}s", sent=progress.sent) from None

    async def _exchange(self, events: list, progress: _Progress) -> Response:
        while True:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(progress)
            keep = False
            try:
                response = await conn.exchange(events, progress)
                keep = conn.finish_cycle() and not self._closed
                return response
            except (OSError, h11.ProtocolError) as exc:
                if reused and not progress.received:
                    # Most likely the server closed the idle connection before
                    # reading us: send it again on a fresh one (the wallet APIs
                    # are idempotent by order number).  ``sent`` stays True: it
                    # may also have read the request and died before answering,
                    # and a pay that may have reached the wallet must be asked
                    # about and cancelled, never taken as never sent.
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}", sent=progress.sent) from exc
            finally:
                if keep:
                    self._idle.append(conn)
                else:
                    conn.close()

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return None

    async def _connect(self, progress: _Progress) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, limit=MAX_BODY
            )
        except OSError as exc:
            # Not sent on this connection; it may have been on a reused one before.
            raise TransportError(f"connect to {self.host}:{self.port}: {exc}", sent=progress.sent) from exc
        return _Connection(reader, writer)

    def idle_connections(self) -> int:
        return len(self._idle)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except OSError:
                pass
