"""Terminal listeners: framing, many requests in flight per connection, back-pressure.

One :class:`TerminalProtocol` per TCP connection.  Frames are cut by the
compiled framer; each request runs as its own task so a cash-register host can
multiplex many lanes, and answers go back in completion order (the terminal
matches them by 41 + 11).  A connection stops being read while it has
``max_in_flight`` requests open or while its write buffer is full, so a slow or
hostile client can't make the switch buffer without bound.  A framing
violation (oversized declared length) closes that connection only, once the
frames that came whole before it are answered; a frame of declared length 0
is a keepalive (docs/terminal-interface.md, section 1).

Limits of spec section 1 (v1.1): connections are capped in total and per
source address (:class:`Gate`; over a cap a connection is aborted at once);
a frame must arrive whole within ``frame_timeout`` of its first byte and a
connection with no bytes and nothing in flight for ``idle_timeout`` is
closed.  The limit per terminal ID, which reconnecting can't escape, is the
engine's (``max_in_flight_per_terminal``).
"""
from __future__ import annotations

import asyncio
import logging
import ssl

from native.framing import FrameError, Framer, reply_tpdu, split_tpdu

from switch.config import ConfigError, Listener
from switch.core.codecs import Codec, listener_codec
from switch.logs import Throttled

log = logging.getLogger("payswitch.server")
# Connections refused at the gate: a flood of them is a line every 10 s (counted
# exactly in payswitch_terminal_connections_refused_total).
_refusals = Throttled(log)


class Gate:
    """Open terminal connections, in total and per source address, against the caps."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.total = 0
        self.by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a connection in; or return why it is refused (``total``, ``per_address``)."""
        if self.total >= self.cfg.max_connections:
            return "total"
        n = self.by_address.get(address, 0)
        if n >= self.cfg.max_connections_per_address:
            return "per_address"
        self.total += 1
        self.by_address[address] = n + 1
        return None

    def leave(self, address: str) -> None:
        self.total -= 1
        n = self.by_address[address] - 1
        if n:
            self.by_address[address] = n
        else:
            del self.by_address[address]


class TerminalProtocol:
    """One terminal connection (an asyncio protocol: the loop calls it by its methods' names)."""

    def __init__(self, switch, listener: Listener, codec: Codec, gate: Gate | None = None):
        self.switch = switch
        self.gate = gate
        self.address: str | None = None  # counted in the gate under this address
        self.last_active = 0.0
        self.frame_started: float | None = None  # first byte of a frame not yet whole
        self.idle_timer: asyncio.TimerHandle | None = None
        self.frame_timer: asyncio.TimerHandle | None = None
        self.listener = listener
        self.tpdu = listener.tpdu  # the listener's, read for every frame
        self.max_in_flight = listener.max_in_flight
        self.codec = codec  # the listener's dialect: requests decoded and answered in it
        self.framer = Framer(listener.header, tpdu=listener.tpdu, max_frame=listener.max_frame, keepalive=True)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.read_paused = False
        self.write_paused = False
        self.peer = "?"
        self.tasks: dict[int, asyncio.Task] = {}  # by request: the n-th started on this connection
        self.started = 0  # requests started on this connection
        self.quieted = False  # draining, nothing left to wait for: no more requests read
        self.peer_closed = False  # the terminal half-closed: answer what it sent, then close
        self.broken = False  # it broke the framing: answer the frames before the break, then close

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self.gate is not None:
            address = str(peer[0]) if peer else "?"
            refused = self.gate.admit(address)
            if refused is not None:
                self.switch.metrics.connections_refused.labels(refused).inc()
                _refusals.warning("refusing %s: over the %s connection cap", self.peer, refused.replace("_", " "))
                self.transport = None
                transport.abort()
                return
            self.address = address
        self.switch.metrics.connections.inc()
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()
        self.idle_timer = self.loop.call_later(self.listener.idle_timeout, self._idle_check)
        self.switch.connections.add(self)
        if self.switch.draining:  # accepted as the listener closed: nothing will be started here
            self.drain()

    def connection_lost(self, exc):
        if self.transport is None and self.address is None:
            return  # refused at the gate: never counted
        self.switch.metrics.connections.dec()
        self.switch.connections.discard(self)
        if self.address is not None:
            self.gate.leave(self.address)
            self.address = None
        for timer in (self.idle_timer, self.frame_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.frame_timer = None
        self.transport = None
        # Requests already handed to acquirers run to completion and are
        # journaled: a terminal that reconnects and retransmits gets the answer.

    def eof_received(self):
        """The terminal half-closed after sending (``shutdown(SHUT_WR)``): its requests are still
        answered (section 6: every well-formed request is answered), then the connection is
        closed.  A frame cut short by the EOF can never be completed: it is dropped, and its
        deadline must not abort the connection under the answers still to come."""
        self.peer_closed = True
        self._no_frame_pending()
        return self.in_flight > 0  # True: the transport stays open for the answers

    def data_received(self, data: bytes):
        if self.transport is None or self.broken:
            return
        self.last_active = now = self.loop.time()
        try:
            frames = self.framer.feed(data)
        except FrameError as e:
            self._frame_error(e, e.frames)
            return
        if not self.framer.buffered:
            if self.frame_started is not None:
                self._no_frame_pending()
        elif self.frame_started is None or frames:
            # A frame's first byte came in this read: its deadline starts now.
            self.frame_started = now
            if self.frame_timer is not None:
                self.frame_timer.cancel()
            self.frame_timer = self.loop.call_later(self.listener.frame_timeout, self._frame_expired)
        for payload in frames:
            tpdu = b""
            if self.tpdu:
                try:
                    tpdu, payload = split_tpdu(payload)
                except FrameError as e:
                    self._frame_error(e, [])
                    return
                tpdu = reply_tpdu(tpdu)
            self._start(payload, tpdu)
        self._update_reading()

    def _start(self, payload: bytes, tpdu: bytes) -> None:
        self.in_flight += 1
        self.started += 1
        n = self.started
        # Held until _serve ends (it takes itself out, by n): the loop keeps only weak references.
        task = self.loop.create_task(self._serve(payload, tpdu, n))
        if not task.done():  # an eager task factory may have run it whole already
            self.tasks[n] = task

    def _no_frame_pending(self) -> None:
        """No frame is coming in any more: its deadline goes."""
        if self.frame_timer is not None:
            self.frame_timer.cancel()
        self.frame_timer = self.frame_started = None

    def _frame_error(self, e: FrameError, whole: list[bytes]) -> None:
        """The peer does not frame as this listener does: nothing of the stream after the
        break can be trusted.  The frames that came whole before it (``whole``, in the
        same read) are answered, as those already in flight are; then the connection
        closes (spec section 1), reading nothing more meanwhile."""
        self.switch.metrics.frame_errors.inc()
        lst = self.listener
        log.warning("closing %s: %s (the terminal does not frame as this listener does: header = \"%s\"%s;"
                    " runbook: payswitch_frame_errors_total)", self.peer, e, lst.header,
                    ", tpdu = true" if lst.tpdu else ", no TPDU")
        self.broken = True
        self._no_frame_pending()
        for payload in whole:
            tpdu = b""
            if lst.tpdu:
                try:
                    tpdu, payload = split_tpdu(payload)
                    tpdu = reply_tpdu(tpdu)
                except FrameError:
                    break  # the break is here: nothing from it on is answered
            self._start(payload, tpdu)
        if self.in_flight:
            self._update_reading()  # paused until the last answer is written, then closed
        else:
            self.transport.close()

    async def _serve(self, payload: bytes, tpdu: bytes, n: int = 0):
        try:
            out = await self.switch.handle(payload, self.codec)
            if out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(self.framer.encode(tpdu + out if tpdu else out))
        except Exception:
            # Our bug, and the terminal gets no answer: counted with the 96s of
            # our own failures, so that PayswitchInternalErrors says so too.
            self.switch.metrics.internal_error()
            log.exception("request from %s failed, not answered: an internal error"
                          " (runbook: \"Internal errors\")", self.peer)
        finally:
            self.tasks.pop(n, None)
            self.in_flight -= 1
            if self.transport is not None:
                self.last_active = self.loop.time()
                if self.switch.draining:
                    self.drain()
                elif (self.peer_closed or self.broken) and not self.in_flight:
                    self.transport.close()  # the last answer to a terminal that half-closed or broke framing
            self._update_reading()

    def drain(self) -> bool:
        """The switch drains: close this connection if it has nothing in flight (True),
        its last answers written first, so that its terminal reconnects to another
        instance; otherwise it is closed after its last answer."""
        if self.transport is None or self.in_flight or self.transport.is_closing():
            return False
        log.debug("closing %s: draining, nothing in flight", self.peer)
        self.transport.close()
        return True

    def unsent(self) -> int:
        """Bytes of answers written but not yet handed to the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def quiet(self) -> None:
        """Draining with nothing left to wait for: read no more requests, close once answered."""
        self.quieted = True
        if self.transport is None or self.transport.is_closing():
            return
        if not self.read_paused:
            self.transport.pause_reading()
            self.read_paused = True
        self.drain()

    def _frame_expired(self):
        self.frame_timer = None
        if self.transport is None or self.frame_started is None:
            return
        if self.read_paused:
            # Its bytes may be waiting behind our own back-pressure: not the peer's stall.
            self.frame_started = self.loop.time()
            self.frame_timer = self.loop.call_later(self.listener.frame_timeout, self._frame_expired)
            return
        self.switch.metrics.connections_timed_out.labels("partial_frame").inc()
        log.warning(
            "closing %s: a frame not whole %.0f s after its first byte (%d bytes of it)",
            self.peer, self.listener.frame_timeout, self.framer.buffered,
        )
        self.transport.abort()

    def _idle_check(self):
        """Close a connection with nothing in flight and no bytes for idle_timeout."""
        self.idle_timer = None
        if self.transport is None:
            return
        limit = self.listener.idle_timeout
        quiet = self.loop.time() - self.last_active
        if self.in_flight or quiet < limit:
            self.idle_timer = self.loop.call_later(limit if self.in_flight else limit - quiet, self._idle_check)
            return
        self.switch.metrics.connections_timed_out.labels("idle").inc()
        log.info("closing %s: idle for %.0f s", self.peer, quiet)
        self.transport.close()

    def _update_reading(self):
        if self.transport is None:
            return
        limit = self.max_in_flight
        want_pause = self.write_paused or self.in_flight >= limit or self.quieted or self.broken
        if want_pause and not self.read_paused:
            if not self.transport.is_closing():  # asked only when there is something to change
                self.transport.pause_reading()
                self.read_paused = True
        elif not want_pause and self.read_paused and self.in_flight <= limit // 2:
            if not self.transport.is_closing():
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


async def start_listeners(switch, listeners: list[Listener], *, reuse_port: bool = False) -> list[asyncio.AbstractServer]:
    """Bind and serve the terminal listeners; ``reuse_port``: SO_REUSEPORT, one
    listening socket per worker process on the same port (``serve --workers``),
    so the kernel spreads new connections evenly between the workers."""
    loop = asyncio.get_running_loop()
    gate = Gate(switch.cfg)  # one count over all listeners
    servers = []
    for i, lst in enumerate(listeners):
        ctx = tls_context(lst, f"{switch.cfg.source} - at `$.listeners[{i}]`")
        try:
            codec = listener_codec(lst.dialect)  # one per listener, shared by its connections
        except (OSError, ValueError) as e:
            raise ConfigError(f"{switch.cfg.source}: {e} - at `$.listeners[{i}].dialect`") from None
        server = await loop.create_server(
            lambda lst=lst, codec=codec: TerminalProtocol(switch, lst, codec, gate),
            lst.host,
            lst.port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
            ssl=ctx,
        )
        servers.append(server)
    return servers
