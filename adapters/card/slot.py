"""One connection slot of a card host link on asyncio: an endpoint and the
connection currently serving it.

Part of :mod:`adapters.card.link` (its pool, :class:`~adapters.card.link.HostLinkAcquirer`,
picks a slot per request): the slot owns one socket, its framer and its timer,
feeds what arrives to its :class:`~adapters.card.hostlink.HostConnection`,
writes what that core returns, and reconnects after a loss with backoff.
On a link that MACs (:mod:`adapters.card.hostmac`) it checks the MAC of
everything it receives before the core sees it, and MACs what it writes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable

import cython

from adapters.card.hostlink import (
    Close,
    Completed,
    HostConnection,
    KeyChange,
    Kind,
    Late,
    Send,
    SignedOffByAcquirer,
    SignedOn,
    State,
    Unmatched,
    scrub,
)
from adapters.card.inflight import Pending  # noqa: F401  (a type read by Cython: slot.pxd)
from native.iso8583 import Dialect  # a type read by Cython too: slot.pxd
from switch.core.backoff import Backoff
from switch.security.module import SecurityModuleError

if TYPE_CHECKING:
    from adapters.card.link import HostLinkAcquirer

log = logging.getLogger("payswitch.card")

# Read once: an enum member read through its class takes the enum metaclass's
# ``__getattr__`` hook in Python 3.11 (several hundred instructions), and these
# are read for every request and answer.
_READY = State.READY
_REQUEST = Kind.REQUEST
_REVERSAL = Kind.REVERSAL


@cython.cfunc
def _decoded(dialect: Any, payload: Any) -> Any:
    """``dialect.decode(payload)``: compiled, a native Dialect's bytes are decoded with a C call
    (native/iso8583_message.pxd), not a bound method and a call through Python each message."""
    if cython.compiled and type(dialect) is Dialect and type(payload) is bytes:
        return _decode(cython.cast(Dialect, dialect), cython.cast(bytes, payload), False)  # noqa: F821 (slot.pxd)
    return dialect.decode(payload)


class SlotProtocol(asyncio.Protocol):
    __slots__ = ("slot",)

    def __init__(self, slot: "Slot") -> None:
        self.slot = slot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.slot.connected(transport)

    def data_received(self, data: bytes) -> None:
        self.slot.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.lost(exc)


class Slot:
    """One connection slot: an endpoint and the connection currently serving it."""

    def __init__(self, link: "HostLinkAcquirer", endpoint: int, host: str, port: int, index: int) -> None:
        self.link = link
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self.label = f"{host}:{port}"
        self.index = index
        self.core: HostConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.framer: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future | None = None
        self.backoff = Backoff(link.backoff_initial, link.backoff_max, rng=link.rng)
        self.phase = "disconnected"  # before a core exists / between connections
        self.task: asyncio.Task | None = None
        # With an HSM to check MACs: what arrived, waiting for its check, and the task checking it.
        self.checking: deque[bytes] = deque()
        self.checker: asyncio.Task | None = None
        # Requests and reversals written in one pass of the event loop, sent together.
        self.outbox: list[bytes] = []
        self.outbox_to: Any = None  # the transport they are for

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.core is not None and self.transport is not None:
            return self.core.state.value
        return self.phase

    @property
    def usable(self) -> bool:
        return self.load() is not None

    @cython.ccall
    @cython.locals(core=HostConnection)
    def load(self) -> int | None:
        """How many messages are in flight on the connection, None when it takes no
        requests (not signed on, or going away): what the pool picks by, in one call."""
        core = self.core
        if core is not None and core.state is _READY:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                return len(core.inflight)
        return None

    # -- supervision --------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        link = self.link
        first = True
        while not link.closing:
            if not first:
                link.metrics.inc("reconnects", endpoint=self.label)
            first = False
            self.phase = "connecting"
            self.closed = loop.create_future()
            self.core = HostConnection(
                link.stans, acquirer_id=link.acquirer_id, echo_interval=link.echo_interval,
                network_timeout=link.network_timeout, resign_wait=link.resign_wait,
                endpoint=self.label, metrics=link.metrics, given_up=link.given_up)
            self.framer = link.framer_factory()
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: SlotProtocol(self), self.host, self.port, ssl=link.ssl),
                    link.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                log.debug("%s: connect to %s failed: %s", link.name, self.label, exc)
                if self.transport is not None:  # connected just as the timeout fired
                    self.transport.abort()
                    await self.closed
            else:
                await self.closed
            self.core = None
            self.phase = "disconnected"
            if link.closing:
                break
            delay = self.backoff.next_delay()
            await asyncio.sleep(delay)

    # -- protocol callbacks -------------------------------------------------

    def connected(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = self.link.loop
        try:
            msg = self.core.connection_made(loop.time(), time.time())
        except Exception as exc:  # no STAN for the sign-on (stan_source failed): try again later
            log.error("%s: cannot sign on at %s: %s: %s", self.link.name, self.label,
                      type(exc).__name__, exc)
            transport.abort()
            return
        log.info("%s: connected to %s, signing on", self.link.name, self.label)
        self.write(msg)
        self.arm()

    @cython.ccall
    @cython.locals(core=HostConnection)
    def data_received(self, data: bytes) -> None:
        """The whole messages that arrived, to the core: at once, or after an awaited MAC check."""
        link = self.link
        core = self.core
        if core is None or self.transport is None:
            return
        bad = None
        try:
            payloads = self.framer.feed(data)
        except link.FrameError as exc:  # the whole messages before the bad bytes still count
            payloads, bad = exc.frames, exc
        mac = link.mac
        if mac is None:
            self.take(core, payloads, None, None)
        elif mac.immediate:
            self.take(core, payloads, None, mac.verify_now)
        else:
            self.checking.extend(payloads)
            if self.checker is None:
                self.checker = link.loop.create_task(self._deliver_checked(core, self.transport))
        if bad is not None:
            self.garbage(f"framing: {scrub(str(bad))}")

    @cython.ccall
    @cython.locals(core=HostConnection)
    def take(self, core: HostConnection, payloads: Iterable[bytes], decode: Callable[[bytes], Any] | None,
             verify: Callable[[Any, bytes], str] | None) -> bool:
        """Each payload decoded (by ``decode``; None: by the link's dialect), its MAC checked by
        ``verify`` (None: the link does not MAC) and given to ``core``.

        In order, then the timer is armed; False when it stopped before the
        end: the connection changed, or a message made it close.
        """
        link = self.link
        dialect = link.dialect
        now = link.loop.time()
        for payload in payloads:
            if self.transport is None or self.core is not core:
                return False
            try:
                msg = _decoded(dialect, payload) if decode is None else decode(payload)
                why = "" if verify is None else verify(msg, payload)
                events = core.receive(msg, now, not why)
            except Exception as exc:
                self.cannot_handle(exc)
                return False
            if why:
                self.not_authentic(msg, why)
            self.handle(events)
        self.arm()
        return True

    async def _deliver_checked(self, core: HostConnection, transport: Any) -> None:
        """:meth:`data_received` with a security module that must be awaited (an HSM): in order, one at a time.

        Each message is decoded and its verdict awaited here; :meth:`take` then
        does the rest, with nothing left to await.
        """
        link = self.link
        try:
            while self.checking and self.core is core and self.transport is transport:
                payload = self.checking.popleft()
                try:
                    msg = link.dialect.decode(payload)
                    why = await link.mac.verify(msg, payload)
                except Exception as exc:
                    self.cannot_handle(exc)
                    return
                if self.core is not core or self.transport is not transport:
                    return
                # Decoded and checked already: take() is given the message and the verdict.
                if not self.take(core, (payload,), lambda _payload: msg, lambda _msg, _payload: why):
                    return
        finally:
            self.checker = None
            if self.checking and self.core is not core and self.transport is not None:
                # A new connection's messages came while this one's last check was out.
                self.checker = link.loop.create_task(self._deliver_checked(self.core, self.transport))

    def cannot_handle(self, exc: Exception) -> None:
        """A message that does not decode, or whose handling failed (our bug): the connection starts afresh."""
        link = self.link
        if isinstance(exc, link.DecodeError):
            self.garbage(f"decode: {scrub(str(exc))}")
            return
        # Our bug: the connection's state is suspect.
        log.error("%s: failed to handle a message from %s", link.name, self.label, exc_info=exc)
        self.garbage(f"{type(exc).__name__}")

    def not_authentic(self, msg: Any, why: str) -> None:
        """Logged (MTI, STAN, the reason: no card data); the core has counted it and made it uncertain."""
        log.warning("%s: %s stan=%s from %s has a missing or wrong MAC (%s): not taken as the acquirer's "
                    "word", self.link.name, msg.mti, msg.get(11), self.label, why)

    def garbage(self, what: str) -> None:
        link = self.link
        link.metrics.inc("protocol_errors", endpoint=self.label)
        log.warning("%s: garbage from %s (%s); closing the connection", link.name, self.label, what)
        if self.transport is not None:
            self.transport.abort()

    def lost(self, exc: Exception | None) -> None:
        link = self.link
        core = self.core
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        self.checking.clear()
        if core is not None:
            was = core.state
            events = core.connection_lost()
            if events:
                log.warning("%s: connection to %s lost (%s); %d in flight made uncertain",
                            link.name, self.label, exc or "closed", len(events))
            elif was is not State.SIGNING_OFF and not link.closing:
                log.warning("%s: connection to %s lost (%s)", link.name, self.label, exc or "closed")
            self.handle(events)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    # -- events, writes, timers ---------------------------------------------

    @cython.ccall
    @cython.locals(pending=Pending)
    def handle(self, events: list) -> None:
        link = self.link
        for event in events:
            if type(event) is Completed:
                pending = event.pending
                kind = pending.kind
                if kind is _REQUEST or kind is _REVERSAL:
                    link.breaker_learns(self, event.how)
                fut = pending.token
                if fut is not None and not fut.done():
                    fut.set_result(event.outcome)
            elif type(event) is Send:
                self.write(event.message)
            elif type(event) is SignedOn:
                log.info("%s: signed on at %s", link.name, self.label)
                self.backoff.reset()
                link.ready_changed()
            elif type(event) is SignedOffByAcquirer:
                log.warning("%s: %s signed off; no new requests on this connection until it "
                            "signs on again (or we do in %.1fs)", link.name, self.label,
                            event.resume_at - link.loop.time())
            elif type(event) is KeyChange:
                self.write(self.core.key_change_answer(event, link.key_change(self, event)))
            elif type(event) is Close:
                level = logging.INFO if link.closing else logging.WARNING
                log.log(level, "%s: closing connection to %s: %s", link.name, self.label, event.reason)
                if self.transport is not None:
                    self.transport.close()
            elif type(event) is Late:
                log.warning("%s: late answer %s stan=%s 39=%s from %s dropped", link.name,
                            event.mti, event.stan, event.response_code, self.label)
                if (event.auth_code or event.acquirer_ref or event.approved) and link.on_late_auth_code is not None:
                    link.on_late_auth_code(event.stan, event.f7, event.auth_code, event.acquirer_ref, event.approved)
            elif type(event) is Unmatched:
                log.warning("%s: unmatched %s stan=%s from %s: %s", link.name, event.mti,
                            event.stan, self.label, event.reason)

    def write(self, msg: dict) -> None:
        """Write a network message (sign-on, echo, sign-off, an answer to the acquirer): MACed when the link MACs."""
        link = self.link
        mac = link.mac
        if mac is None:
            data = link.dialect.encode(msg)
        elif mac.immediate:
            try:
                data = mac.encode_now(msg)
            except SecurityModuleError as exc:
                self.cannot_mac(self.transport, msg, exc)
                return
        else:
            task = link.loop.create_task(self._write_signed(self.transport, msg))
            link.tasks.add(task)
            task.add_done_callback(link.tasks.discard)
            return
        self.transport.write(self.framer.encode(data))

    async def _write_signed(self, transport: Any, msg: dict) -> None:
        try:
            data = await self.link.mac.encode(msg)
        except SecurityModuleError as exc:
            self.cannot_mac(transport, msg, exc)
            return
        if self.transport is transport and not transport.is_closing():
            transport.write(self.framer.encode(data))

    def cannot_mac(self, transport: Any, msg: dict, exc: Exception) -> None:
        """A network message the module could not MAC: the connection starts afresh (its sign-on retries)."""
        log.error("%s: cannot MAC %s 70=%s for %s: %s: %s; closing the connection", self.link.name,
                  msg.get("mti"), msg.get(70), self.label, type(exc).__name__, exc)
        if transport is not None:
            transport.abort()

    @cython.ccall
    def send(self, transport: Any, frame: bytes) -> None:
        """Write a request frame on ``transport``; every frame of one pass of the loop leaves in one send.

        Many terminals' requests share a host connection: under load a pass of
        the loop makes several, and one write for them all saves a system call
        each.  Frames for a transport that is gone by then are dropped: their
        requests were in flight on it and its loss already settled them.
        """
        if self.outbox and self.outbox_to is not transport:
            self._flush()  # frames for an earlier connection: dropped now, not sent on this one
        self.outbox.append(frame)
        if len(self.outbox) == 1:
            self.outbox_to = transport
            self.link.loop.call_soon(self._flush)

    def _flush(self) -> None:
        outbox, transport = self.outbox, self.outbox_to
        if not outbox:
            return
        self.outbox, self.outbox_to = [], None
        if transport is self.transport and not transport.is_closing():
            transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))

    @cython.ccall
    @cython.locals(core=HostConnection)
    def arm(self) -> None:
        """Make sure the timer fires no later than the core's next wakeup."""
        core = self.core
        if core is None or self.transport is None:
            return
        wake = core.next_wakeup()
        timer = self.timer
        if wake is None:
            if timer is not None:
                timer.cancel()
                self.timer = None
            return
        if timer is not None:
            if timer.when() <= wake:
                return
            timer.cancel()
        self.timer = self.link.loop.call_at(wake, self.on_timer)

    @cython.ccall
    def arm_by(self, deadline: float) -> None:
        """:meth:`arm` after a request was registered with ``deadline``.

        Whatever changed the core's next wakeup since the timer was last armed
        armed it again (a request, an answer, the timer firing), so a timer
        due by ``deadline`` is due by the next wakeup too: it stands, and the
        core is not asked (a heap walk and an echo time per request)."""
        timer = self.timer
        if timer is not None and timer.when() <= deadline:
            return
        self.arm()

    def on_timer(self) -> None:
        self.timer = None
        core = self.core
        if core is None or self.transport is None:
            return
        self.handle(core.poll(self.link.loop.time(), time.time()))
        self.arm()
