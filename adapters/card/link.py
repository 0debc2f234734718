"""The card host link on asyncio: a pool of persistent connections to a bank
acquirer, implementing :class:`switch.core.acquirer.Acquirer`.

All protocol state lives in :class:`adapters.card.hostlink.HostConnection`;
this module owns the sockets, the clock and the timers.

Per connection slot (``connections`` per endpoint) a task connects, signs on
(0800 70=001), and on any loss reconnects after an exponential backoff with
jitter.  A request goes to the least busy signed-on connection of the first
endpoint that has one and whose circuit breaker lets it through (failover in
endpoint order): an endpoint whose transactions time out ``breaker_threshold``
times in a row gets nothing for ``breaker_cooldown`` seconds, then one probe.
One timer per connection fires at the earliest deadline or echo time the core
asks for.

The acquirer's 0800s are honoured: an echo is answered; a sign-off takes the
connection out of service (what is in flight still completes) until the
acquirer signs on again or, after ``resign_wait``, we sign on ourselves; a key
change goes to ``on_key_change(endpoint, fields) -> bool`` and is answered 00
only when that returned True (96 otherwise, or when nobody handles it).

Outcomes (``authorize``):

- answered: Result(39, 38, 55), ``acquirer_ref = "stan|f7|rrn"`` as sent to
  and answered by the acquirer;
- deadline passed (the ``timeout`` argument): Result("68", uncertain=True);
- connection lost or garbage received after the request was written:
  Result("91", uncertain=True) -- the acquirer may have approved, the switch
  must reverse; 91 ("acquirer inoperative") rather than 68 says that the link
  failed, not the acquirer's speed;
- no signed-on connection at all: Result("91", uncertain=False), nothing sent
  (the switch may fall through to the next acquirer of the route);
- the message cannot be encoded (our side), or the switch-assigned STAN is
  still in flight: Result("96", uncertain=False), nothing sent.

Uncertain results carry ``acquirer_ref`` too, so the reversal names exactly
what the acquirer may have seen.

``reverse`` sends 0420 (0421 when ``request.attempt > 0``) and returns
``REVERSED`` (0430 39=00), ``NOT_FOUND`` (39=25), ``Refused`` (a refusal
no repeat can change: 12, 30, 64...) or ``RETRY`` (a transient or unknown
answer, timeout, lost link, no connection, nothing sent).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from typing import Any, Callable, Sequence

import cython

from adapters.card.breaker import Breaker  # a type read by Cython too: link.pxd
from adapters.card.hostlink import (
    FINANCIAL_MTIS,
    RC_INOPERATIVE,
    RC_MALFUNCTION,
    GivenUp,
    KeyChange,
    LinkMetrics,
    StanAllocator,
    StanInUse,
    mask_pan,
    scrub,
)
from adapters.card.hostmac import HostMac
from adapters.card.hostlink import HostConnection  # noqa: F401  (a type read by Cython: link.pxd)
from adapters.card.inflight import Pending  # noqa: F401  (a type read by Cython: link.pxd)
from adapters.card.slot import Slot
from native.iso8583 import Dialect  # a type read by Cython too: link.pxd
from switch.core.acquirer import RETRY, Request, Result

log = logging.getLogger("payswitch.card")
_wall = time.time  # field 7's clock, read once a request: bound here, not looked up on the module each time


@cython.cfunc
def _encoded(dialect: Any, msg: Any) -> bytes:
    """``dialect.encode(msg)``: compiled, a native Dialect encodes a request's dict with a C call
    (native/iso8583.pxd), not a bound method and a call through Python each request."""
    if cython.compiled and type(dialect) is Dialect and type(msg) is dict:
        return cython.cast(Dialect, dialect)._encode_mapping(msg)
    return dialect.encode(msg)


class HostLinkAcquirer:
    """A bank acquirer reached over an ISO 8583 (host-87-bcd) host link.

    ``endpoints`` are tried in order (failover); ``connections`` persistent
    connections are kept to each.  ``acquirer_id`` goes in field 32 (and in
    field 90 of reversals).  ``echo_interval``: an echo (0800 70=301) goes out
    on a connection that received nothing for that long; ``network_timeout``
    bounds the answer to a sign-on, echo or sign-off (an unanswered one closes
    the connection).  ``request_timeout``, when set, caps the ``timeout`` the
    switch passes per call.  ``metrics_listener(name, labels, amount)`` sees
    every counter increment (see :class:`LinkMetrics`).

    ``stan_source``: a zero-argument callable returning the next 6-digit STAN
    of the switch's journaled per-acquirer sequence; the link's own network
    messages (and requests without ``host_stan``) take their STANs from it, so
    they never collide with the switch's.  ``resign_wait``: how long a
    connection the acquirer signed off waits for its sign-on before signing on
    itself.  ``breaker_threshold`` / ``breaker_cooldown``: see
    :class:`adapters.card.breaker.Breaker`.  ``on_key_change(endpoint,
    fields) -> bool``: installs a key the acquirer sent (True when it did).
    """

    def __init__(
        self,
        name: str,
        endpoints: Sequence[tuple[str, int]],
        acquirer_id: str,
        connections: int = 2,
        echo_interval: float = 30.0,
        connect_timeout: float = 2.0,
        *,
        network_timeout: float = 5.0,
        request_timeout: float | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        dialect: str = "host-87-bcd",
        header: str = "binary2",
        max_frame: int = 8192,
        metrics_listener: Callable[[str, dict[str, str], int], None] | None = None,
        stan_start: int | None = None,
        seed: int | None = None,
        stan_source: Callable[[], str] | None = None,
        resign_wait: float = 30.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 10.0,
        on_key_change: Callable[[str, dict], bool] | None = None,
        ssl: Any = None,
        mac: str = "none",
        mac_key: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError(f"acquirer {name!r}: no endpoints")
        if connections < 1:
            raise ValueError(f"acquirer {name!r}: connections must be >= 1")
        if not (acquirer_id.isdigit() and 1 <= len(acquirer_id) <= 11):
            raise ValueError(f"acquirer {name!r}: acquirer_id must be 1..11 digits")
        from native.framing import FrameError, Framer
        from native.iso8583 import DecodeError, dialect as load_dialect

        self.name = name
        # (host STAN, field 7, field 38, acquirer_ref, approved) of a late answer: the switch keeps
        # the auth code and the amount held for the reversal it queued meanwhile (use_late_auth_codes).
        self.on_late_auth_code: Callable[[str, str, str | None, str | None, bool], None] | None = None
        self.endpoints = [(str(h), int(p)) for h, p in endpoints]
        self.acquirer_id = acquirer_id
        self.connections = connections
        self.echo_interval = echo_interval
        self.connect_timeout = connect_timeout
        self.ssl = ssl  # an ssl.SSLContext: TLS (or mutual TLS) to the host, adapters/tls.py
        self.network_timeout = network_timeout
        self.request_timeout = request_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = random.Random(seed)
        self.dialect = load_dialect(dialect)
        self.FrameError = FrameError
        self.DecodeError = DecodeError
        Framer(header, max_frame=max_frame)  # an unknown header is refused here, not on first connect
        self.framer_factory = lambda: Framer(header, max_frame=max_frame)
        self.metrics = LinkMetrics(metrics_listener)
        # A random first STAN, so that a restarted switch does not repeat
        # the STANs of its previous run within the same day.
        self.stans = StanAllocator(stan_start if stan_start is not None
                                   else self.rng.randint(1, StanAllocator.LIMIT),
                                   source=stan_source)
        self.resign_wait = resign_wait
        # What the link gave up on (deadline passed, connection lost), for all its connections:
        # an answer to it, on whichever connection, is late and goes to its reversal.
        self.given_up = GivenUp()
        self.on_key_change = on_key_change
        # Host-link MACs (adapters.card.hostmac): None when the acquirer takes none.
        self.mac = None if mac == "none" else HostMac(name, mac, mac_key or "", self.dialect)
        self.tasks: set[asyncio.Task] = set()  # MACs being made by a module that must be awaited
        self.breakers = [Breaker(breaker_threshold, breaker_cooldown) for _ in self.endpoints]
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self.slots = [
            Slot(self, e, host, port, i)
            for e, (host, port) in enumerate(self.endpoints)
            for i in range(connections)
        ]
        self._by_endpoint = [[s for s in self.slots if s.endpoint == e] for e in range(len(self.endpoints))]

    # -- Acquirer protocol ----------------------------------------------------

    async def start(self) -> None:
        """Open every connection; return once one is signed on, or after
        ``connect_timeout`` (the connections keep trying in the background).

        A link that MACs first checks its key in the security module
        (:class:`~adapters.card.hostmac.HostMacError` when it has none or the
        key does not fit: nothing goes out unMACed)."""
        if self.mac is not None:
            await self.mac.check()
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._ready = asyncio.Event()
        for slot in self.slots:
            slot.task = self.loop.create_task(slot.run(), name=f"{self.name}:{slot.label}#{slot.index}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            log.warning("%s: no connection signed on within %.1fs; retrying in the background",
                        self.name, self.connect_timeout)

    async def close(self) -> None:
        """Sign off, wait briefly for the answers, close; pending calls end uncertain."""
        if self.closing:
            return
        self.closing = True
        loop = self.loop or asyncio.get_running_loop()
        waiting = []
        for slot in self.slots:
            core = slot.core
            if core is not None and slot.transport is not None and not slot.transport.is_closing():
                try:
                    msg = core.sign_off(loop.time(), time.time())
                except Exception as exc:  # no STAN for it (stan_source failed): close all the same
                    log.warning("%s: closing %s without a sign-off: %s: %s", self.name, slot.label,
                                type(exc).__name__, exc)
                    msg = None
                if msg is not None:
                    slot.write(msg)
                    slot.arm()
                    waiting.append(slot.closed)
                else:
                    slot.transport.close()
        if waiting:
            await asyncio.wait(waiting, timeout=min(1.0, self.network_timeout))
        for slot in self.slots:
            if slot.transport is not None:
                slot.transport.abort()
        tasks = [s.task for s in self.slots if s.task is not None]
        # With an HSM: MACs still being made or checked for connections now gone.
        tasks += [s.checker for s in self.slots if s.checker is not None] + list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in self.slots:
            slot.task = None

    def healthy(self) -> bool:
        """Some connection is signed on at an endpoint whose breaker is not open."""
        now = self._now()
        return any(slot.usable and not self.breakers[slot.endpoint].is_open(now) for slot in self.slots)

    @cython.ccall
    def _now(self) -> float:
        return self.loop.time() if self.loop is not None else 0.0

    @cython.ccall
    @cython.locals(slot=Slot, best=Slot, breaker=Breaker)
    def _pick(self, store_and_forward: bool = False) -> Slot | None:
        """The least busy signed-on connection of the first endpoint that has one
        and whose breaker lets a request through.  ``store_and_forward``
        (reversals): with every breaker open, one anyway; a reversal has nowhere
        else to go and would only wait for an authorization to probe."""
        now = None  # the loop's clock, read when a breaker that is not closed needs it
        fallback = None
        for e, slots in enumerate(self._by_endpoint):
            best = None
            fewest = 0
            for slot in slots:
                n = slot.load()
                if n is not None and (best is None or n < fewest):
                    best, fewest = slot, n
            if best is not None:
                breaker = self.breakers[e]
                if breaker.closed():  # allow() would let it through, whatever the time
                    return best
                if now is None:
                    now = self._now()
                if breaker.allow(now):
                    return best
            if fallback is None:
                fallback = best
        return fallback if store_and_forward else None

    @cython.ccall
    @cython.locals(slot=Slot, breaker=Breaker)
    def breaker_learns(self, slot: Slot, how: str) -> None:
        """A transaction on ``slot`` ended: answered, timed out, or lost."""
        breaker = self.breakers[slot.endpoint]
        if how == "answered":  # every answer: no clock needed
            breaker.success()
        elif how == "timeout":
            if breaker.failure(self._now()):
                self.metrics.inc("breaker_trips", endpoint=slot.label)
                log.warning("%s: %s opened its circuit breaker (transactions time out); "
                            "next probe in %.1fs", self.name, slot.label, breaker.cooldown)
        else:
            breaker.inconclusive(self._now())

    def key_change(self, slot: Slot, event: KeyChange) -> bool:
        """Hand a key change to the owner; True when it installed the key.
        Logged without the key material (only the code and which fields came)."""
        handler = self.on_key_change
        accepted = False
        if handler is None:
            log.error("%s: %s sent a key change (70=%s, stan=%s, fields %s) and nothing "
                      "handles key changes; answered 96", self.name, slot.label, event.code,
                      event.stan, sorted(event.fields))
            return False
        try:
            verdict = handler(slot.label, event.fields)
            if inspect.isawaitable(verdict):
                # An answer is due now, on this connection: a coroutine would read as True.
                if inspect.iscoroutine(verdict):
                    verdict.close()
                raise TypeError("on_key_change must return a bool, not an awaitable")
            accepted = verdict is True
        except Exception as exc:
            log.error("%s: key change from %s (70=%s, stan=%s) failed in its handler: %s; "
                      "answered 96", self.name, slot.label, event.code, event.stan, type(exc).__name__)
            return False
        log.log(logging.INFO if accepted else logging.ERROR,
                "%s: key change from %s (70=%s, stan=%s) %s", self.name, slot.label, event.code,
                event.stan, "installed" if accepted else "refused by its handler; answered 96")
        return accepted

    @cython.ccall
    def _deadline(self, timeout: float) -> float:
        if self.request_timeout is not None:
            return min(timeout, self.request_timeout)
        return timeout

    @cython.locals(slot=Slot, core=HostConnection, pending=Pending)
    async def authorize(self, request: Request, timeout: float) -> Result:
        if request.mti not in FINANCIAL_MTIS:
            raise ValueError(f"{self.name}: authorize() takes 0100/0200/0220, not {request.mti}")
        slot = self._pick()
        if slot is None:
            self.metrics.inc("unavailable", mti=request.mti)
            self.metrics.inc("requests", mti=request.mti, response_code=RC_INOPERATIVE)
            return Result(response_code=RC_INOPERATIVE)
        loop = self.loop
        fut = loop.create_future()
        try:
            msg, pending = slot.core.request(request, loop.time(), _wall(), self._deadline(timeout), fut)
        except (StanInUse, ValueError) as exc:  # the switch's STAN/field 7: nothing sent
            self.breakers[slot.endpoint].inconclusive(loop.time())
            log.error("%s: txn %d not sent: %s", self.name, request.txn_id, exc)
            self.metrics.inc("requests", mti=request.mti, response_code=RC_MALFUNCTION)
            return Result(response_code=RC_MALFUNCTION)
        core, transport = slot.core, slot.transport
        try:
            # Without MACs, encoded here: awaiting _encode would make a coroutine per request.
            data = slot.framer.encode(_encoded(self.dialect, msg) if self.mac is None else await self._encode(msg))
        except Exception as exc:  # EncodeError, a frame too long, no MAC: our side, nothing sent
            core.cancel(pending)
            self.breakers[slot.endpoint].inconclusive(loop.time())
            log.error("%s: cannot encode %s for pan %s: %s: %s", self.name, request.mti,
                      mask_pan(request.pan) or "", type(exc).__name__, scrub(str(exc)))
            self.metrics.inc("requests", mti=request.mti, response_code=RC_MALFUNCTION)
            return Result(response_code=RC_MALFUNCTION)
        if fut.done():  # the connection went, or the deadline passed, while an HSM made the MAC
            return fut.result()
        slot.send(transport, data)
        slot.arm_by(pending.deadline)
        return await fut

    async def reverse(self, request: Request, timeout: float) -> str:
        """0420 (0421 for a repeat) for ``request.original``: REVERSED,
        NOT_FOUND, Refused or RETRY (see :func:`adapters.card.hostlink.reversal_outcome`)."""
        if request.original is None:
            raise ValueError(f"{self.name}: reverse() needs request.original")
        mti = "0420" if request.attempt == 0 else "0421"
        slot = self._pick(True)
        if slot is None:
            self.metrics.inc("unavailable", mti=mti)
            self.metrics.inc("reversals", mti=mti, response_code="unavailable")
            return RETRY
        loop = self.loop
        fut = loop.create_future()
        try:
            msg, pending = slot.core.reversal(request, now=loop.time(), wall=time.time(),
                                              timeout=self._deadline(timeout), token=fut)
        except (StanInUse, ValueError) as exc:
            self.breakers[slot.endpoint].inconclusive(loop.time())
            log.error("%s: reversal txn %d not sent: %s", self.name, request.txn_id, exc)
            return RETRY
        core, transport = slot.core, slot.transport
        try:
            data = slot.framer.encode(await self._encode(msg))
        except Exception as exc:
            core.cancel(pending)
            self.breakers[slot.endpoint].inconclusive(loop.time())
            log.error("%s: cannot encode %s for txn %d: %s: %s", self.name, mti, request.txn_id,
                      type(exc).__name__, scrub(str(exc)))
            return RETRY
        if fut.done():  # the connection went, or the deadline passed, while an HSM made the MAC
            return fut.result()
        slot.send(transport, data)
        slot.arm()
        return await fut

    # -- observability -------------------------------------------------------

    @cython.ccall
    def ready_changed(self) -> None:
        if self._ready is not None and self.healthy():
            self._ready.set()

    def connection_states(self) -> dict[str, dict[str, int]]:
        """Per endpoint, how many connections are in each state (a gauge)."""
        out: dict[str, dict[str, int]] = {}
        for slot in self.slots:
            states = out.setdefault(slot.label, {})
            states[slot.state] = states.get(slot.state, 0) + 1
        return out

    def use_security_module(self, module: Any) -> None:
        """The switch's security module, for the MACs of a link configured with ``mac`` (before :meth:`start`)."""
        if self.mac is not None:
            self.mac.use(module)

    async def _encode(self, msg: dict) -> bytes:
        mac = self.mac
        if mac is None:
            return self.dialect.encode(msg)
        if mac.immediate:
            return mac.encode_now(msg)
        return await mac.encode(msg)

    def use_late_auth_codes(self, sink: Callable[[str, str, str | None, str | None, bool], None]) -> None:
        """``sink(host STAN, field 7, field 38, acquirer_ref, approved)`` for every late answer that
        approved, carries a field 38, or approved another amount or currency than requested
        (``acquirer_ref`` saying what, :class:`adapters.card.hostlink.Late`; else None)."""
        self.on_late_auth_code = sink

    def use_stan_source(self, source: Callable[[], str]) -> None:
        """Sign-on, echo and sign-off take their STANs from the switch's sequence too."""
        self.stans.use_source(source)

    def breaker_states(self) -> dict[str, str]:
        """Per endpoint, its circuit breaker: "closed", "open" or "half-open" (a gauge)."""
        now = self._now()
        return {f"{h}:{p}": b.state(now).value for (h, p), b in zip(self.endpoints, self.breakers)}
