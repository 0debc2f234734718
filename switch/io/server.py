"""Terminal listeners: framing, many requests in flight per connection, back-pressure.

One :class:`TerminalProtocol` per TCP connection.  Frames are cut by the
compiled framer; each request runs as its own task so a cash-register host can
multiplex many lanes, and answers go back in completion order (the terminal
matches them by 41 + 11).  A connection stops being read while it has
``max_in_flight`` requests open or while its write buffer is full, so a slow or
hostile client can't make the switch buffer without bound.  A framing
violation (oversized declared length) closes that connection only.
"""
from __future__ import annotations

import asyncio
import logging
import ssl

from native.framing import FrameError, Framer, reply_tpdu, split_tpdu

from switch.config import ConfigError, Listener
from switch.core.codecs import Codec, listener_codec

log = logging.getLogger("payswitch.server")


class TerminalProtocol(asyncio.Protocol):
    def __init__(self, switch, listener: Listener, codec: Codec):
        self.switch = switch
        self.listener = listener
        self.codec = codec  # the listener's dialect: requests decoded and answered in it
        self.framer = Framer(listener.header, tpdu=listener.tpdu, max_frame=listener.max_frame)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.read_paused = False
        self.write_paused = False
        self.peer = "?"
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.switch.metrics.connections.inc()

    def connection_lost(self, exc):
        self.switch.metrics.connections.dec()
        self.transport = None
        # Requests already handed to acquirers run to completion and are
        # journaled: a terminal that reconnects and retransmits gets the answer.

    def data_received(self, data: bytes):
        try:
            frames = self.framer.feed(data)
        except FrameError as e:
            self.switch.metrics.frame_errors.inc()
            log.warning("closing %s: %s", self.peer, e)
            self.transport.close()
            return
        for payload in frames:
            tpdu = b""
            if self.listener.tpdu:
                try:
                    tpdu, payload = split_tpdu(payload)
                except FrameError as e:
                    self.switch.metrics.frame_errors.inc()
                    log.warning("closing %s: %s", self.peer, e)
                    self.transport.close()
                    return
                tpdu = reply_tpdu(tpdu)
            self.in_flight += 1
            task = asyncio.ensure_future(self._serve(payload, tpdu))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self._update_reading()

    async def _serve(self, payload: bytes, tpdu: bytes):
        try:
            out = await self.switch.handle(payload, self.codec)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(self.framer.encode(tpdu + out))
        except Exception:
            log.exception("request from %s failed", self.peer)
        finally:
            self.in_flight -= 1
            self._update_reading()

    def _update_reading(self):
        if self.transport is None or self.transport.is_closing():
            return
        limit = self.listener.max_in_flight
        want_pause = self.write_paused or self.in_flight >= limit
        if want_pause and not self.read_paused:
            self.transport.pause_reading()
            self.read_paused = True
        elif not want_pause and self.read_paused and self.in_flight <= limit // 2:
            self.transport.resume_reading()
            self.read_paused = False

    def pause_writing(self):
        self.write_paused = True
        self._update_reading()

    def resume_writing(self):
        self.write_paused = False
        self._update_reading()


def tls_context(lst: Listener, where: str) -> ssl.SSLContext | None:
    """A server context for TLS 1.2 or later, or None for plain TCP."""
    if not lst.tls_cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(lst.tls_cert_file, lst.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"{where}: cannot load TLS certificate {lst.tls_cert_file} / key {lst.tls_key_file}: {e}"
        ) from None
    return ctx


async def start_listeners(switch, listeners: list[Listener]) -> list[asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()
    servers = []
    for i, lst in enumerate(listeners):
        ctx = tls_context(lst, f"{switch.cfg.source} - at `$.listeners[{i}]`")
        try:
            codec = listener_codec(lst.dialect)  # one per listener, shared by its connections
        except (OSError, ValueError) as e:
            raise ConfigError(f"{switch.cfg.source}: {e} - at `$.listeners[{i}].dialect`") from None
        server = await loop.create_server(
            lambda lst=lst, codec=codec: TerminalProtocol(switch, lst, codec),
            lst.host,
            lst.port,
            reuse_address=True,
            backlog=1024,
            ssl=ctx,
        )
        servers.append(server)
    return servers
