"""The city-card acquirer adapter: payswitch's side of the clearing-centre link (asyncio).

``CityCardAcquirer`` implements :class:`switch.core.acquirer.Acquirer`.  It
keeps ``connections`` TCP connections to the centre (spread over the
endpoints, each reconnected with back-off, :mod:`switch.core.backoff`),
multiplexes requests on them by request id (``protocol.py``; the response mux
is :mod:`switch.core.inflight`) and turns answers into Results (``mapping.py``).

Outcomes it cannot know are reported as such: no answer within the deadline
is 68 and a connection lost after sending is 91, both ``uncertain`` when the
request moves money, so the switch reverses them by ref; no connection at all
is 91, certain (nothing was sent).  An answer counts for the request only
when it names the request's ref (``mapping.to_result``,
``mapping.answers``): an answer under the request's id that names another
ref is no answer to it (counted as unmatched; the request keeps waiting
and, without its own answer, times out and is reversed), and a reversal
is done when the centre
acknowledges that very ref, repeated after a transient answer, and left to
an operator after a refusal.

``metrics`` (:class:`switch.core.link_metrics.LinkMetrics`, exported as
``payswitch_citycard_<name>_total``) counts what the link saw: ``timeouts``,
``lost_in_flight`` and ``unavailable`` by ``op`` (debit, offline, load,
balance, reverse), ``late_answers`` (answers after their caller gave up),
``unmatched_answers`` (answers to no request in flight or recently given up on,
or naming another ref than the request of their id),
``protocol_errors`` by ``endpoint`` (connections closed for a bad answer) and
``uploads`` by ``result`` (offline advices: ``confirmed`` 00, ``refused``
another code, ``unconfirmed`` no answer: the terminal uploads it again).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from switch.core.acquirer import REVERSED, RETRY, Request, Result
from switch.core.backoff import Backoff
from switch.core.inflight import InFlight
from switch.core.link_metrics import LinkMetrics
from switch.core.messages import mask_pan

from .mapping import (
    Refusal,
    answers,
    build_message,
    moves_money,
    original_ref,
    reversal_outcome,
    shown_code,
    to_result,
)
from .protocol import (
    CentreRequest,
    FrameBuffer,
    Ledger,
    LedgerPage,
    Offline,
    ProtocolError,
    Response,
    Reverse,
    decode_response,
    encode,
)

__all__ = ["CityCardAcquirer", "Unavailable", "LinkLost"]

log = logging.getLogger("payswitch.citycard")

_OPS = ("debit", "offline", "load", "balance", "reverse")


class Unavailable(Exception):
    """No connection to the centre is up: nothing was sent."""


class LinkLost(Exception):
    """The connection closed after the request was sent: outcome unknown."""


class _Link(asyncio.Protocol):
    """One connection to the centre: framing and request/response matching."""

    def __init__(self, peer: str, metrics: LinkMetrics) -> None:
        self.peer = peer
        self.metrics = metrics
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._frames = FrameBuffer()
        # By request id: (the ref its answer must name, None: any; its waiter).  No deadlines
        # here: CityCardAcquirer.call times out and gives up.
        self._pending: InFlight[int, tuple[str | None, asyncio.Future[Response]]] = InFlight()
        self._ids = itertools.count(1)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                response = decode_response(payload)
                entry = self._pending.peek(response.id)
                if entry is None:
                    self._unexpected(response)
                    continue
                ref, waiter = entry
                if not answers(ref, response):
                    # Another transaction's answer under this id: not this request's.
                    # It keeps waiting for its own; none by its deadline is a timeout.
                    self.metrics.inc("unmatched_answers")
                    log.warning("answer from %s to request %d names another ref; not its answer: %s",
                                self.peer, response.id, shown_code(response))
                    continue
                self._pending.pop(response.id)
                if not waiter.done():
                    waiter.set_result(response)
        except ProtocolError as exc:
            self.metrics.inc("protocol_errors", endpoint=self.peer)
            log.error("closing connection to %s: %s", self.peer, exc)
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for _, waiter in self._pending.drain():
            if not waiter.done():
                waiter.set_exception(LinkLost(f"connection to {self.peer} lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # use

    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def send(self, message: CentreRequest) -> tuple[int, asyncio.Future[Response]]:
        assert self.transport is not None
        rid = next(self._ids)
        message.id = rid
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending.add(rid, (getattr(message, "ref", None), waiter))
        self.transport.write(encode(message))
        return rid, waiter

    def give_up(self, rid: int) -> None:
        """The caller stopped waiting for ``rid``: an answer to it now is late."""
        self._pending.give_up(rid)

    def _unexpected(self, response: Response) -> None:
        """An answer to nothing in flight: late (its caller gave up: 68, and the
        switch reverses it by ref) or stray (never sent here, or answered already)."""
        if self._pending.expired(response.id) is not None:
            self._pending.forget_expired(response.id)
            self.metrics.inc("late_answers")
            log.warning("late answer from %s to request %d: %s", self.peer, response.id, shown_code(response))
        else:
            self.metrics.inc("unmatched_answers")
            log.warning("answer from %s to request %d, which is not in flight: %s",
                        self.peer, response.id, shown_code(response))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class CityCardAcquirer:
    """Acquirer adapter for a city-card clearing centre (see ``protocol.py``)."""

    def __init__(
        self,
        name: str = "citycard",
        endpoints: Sequence[tuple[str, int]] = (("127.0.0.1", 9301),),
        connections: int = 1,
        connect_timeout: float = 2.0,
        *,
        backoff: tuple[float, float] = (0.05, 5.0),
        ssl: Any = None,
        currency: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a city-card acquirer needs at least one endpoint")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.name = name
        self.endpoints = [(host, int(port)) for host, port in endpoints]
        self.connections = connections
        self.connect_timeout = connect_timeout
        self.ssl = ssl  # an ssl.SSLContext: TLS (or mutual TLS) to the centre, adapters/tls.py
        self.backoff = backoff
        # The only currency the centre takes (field 49 of a debit, top-up or upload; None: any): its
        # protocol has none, so another is refused 12 here (mapping.build_message), never sent.
        self.currency = currency
        self._links: list[_Link] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._up = asyncio.Event()
        self._turn = itertools.count()
        self._closing = False
        self.metrics = LinkMetrics(link="citycard")
        # Every counter exists (at 0) before its first event: a rate over it is 0, not "no data".
        for op in _OPS:
            for name in ("timeouts", "lost_in_flight", "unavailable"):
                self.metrics.inc(name, 0, op=op)
        for result in ("confirmed", "refused", "unconfirmed"):
            self.metrics.inc("uploads", 0, result=result)
        self.metrics.inc("late_answers", 0)
        self.metrics.inc("unmatched_answers", 0)
        for host, port in self.endpoints:
            self.metrics.inc("protocol_errors", 0, endpoint=f"{host}:{port}")

    # -- Acquirer ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; return once one connection is up or
        ``connect_timeout`` has passed (the connections keep trying)."""
        if self._tasks:
            return
        self._closing = False
        self._up = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._keep_connected(slot), name=f"{self.name}-link-{slot}")
            for slot in range(self.connections)
        ]
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._up.wait()
        except TimeoutError:
            log.warning("%s: no connection to the centre yet; retrying in the background", self.name)

    async def close(self) -> None:
        self._closing = True
        for link in list(self._links):
            link.close()  # pending calls end with LinkLost: uncertain
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()

    def healthy(self) -> bool:
        return any(link.is_open() for link in self._links)

    async def authorize(self, request: Request, timeout: float) -> Result:
        try:
            message = build_message(request, self.currency)
        except Refusal as refusal:
            log.info("%s: txn %d refused %s: %s", self.name, request.txn_id, refusal.code, refusal.reason)
            return Result(response_code=refusal.code)
        if isinstance(message, Reverse):
            acked = await self._reverse(message, timeout) == REVERSED
            return Result(response_code="00" if acked else "91", acquirer_ref=message.ref)
        ref = getattr(message, "ref", None)
        uncertain = moves_money(message)
        upload = isinstance(message, Offline)
        try:
            response = await self.call(message, timeout)
        except Unavailable:
            self._unconfirmed(upload)
            log.warning("%s: txn %d: no connection to the centre, not sent", self.name, request.txn_id)
            return Result(response_code="91", acquirer_ref=ref)
        except TimeoutError:
            self._unconfirmed(upload)
            log.warning("%s: txn %d (ref %s) unanswered after %.3fs", self.name, request.txn_id, ref, timeout)
            return Result(response_code="68", acquirer_ref=ref, uncertain=uncertain)
        except LinkLost as exc:
            self._unconfirmed(upload)
            log.warning("%s: txn %d (ref %s): %s", self.name, request.txn_id, ref, exc)
            return Result(response_code="91", acquirer_ref=ref, uncertain=uncertain)
        result = to_result(message, response)
        if upload:
            self.metrics.inc("uploads", result="confirmed" if result.response_code == "00" else
                             "unconfirmed" if result.uncertain else "refused")
        log.debug(
            "%s: txn %d card %s %s -> %s",
            self.name, request.txn_id, mask_pan(request.pan) or "-", type(message).__name__.lower(),
            result.response_code,
        )
        return result

    async def reverse(self, request: Request, timeout: float) -> str:
        """REVERSED, RETRY, or a Refused for an operator (``mapping.reversal_outcome``)."""
        if request.original is None:
            return REVERSED  # nothing to reverse
        return await self._reverse(Reverse(id=0, ref=original_ref(request.original)), timeout)

    # -- beyond the Acquirer protocol ---------------------------------------------

    async def ledger(self, timeout: float = 5.0, page_size: int = 500) -> LedgerPage:
        """The centre's whole ledger (admin; paged under the frame limit).

        The totals are those of the last page; they are consistent with the
        balances only when no transaction runs meanwhile.
        """
        balances: dict[str, int] = {}
        after = ""
        while True:
            response = await self.call(Ledger(id=0, after=after, limit=page_size), timeout)
            page = response.ledger
            if response.code != "00" or page is None:
                raise RuntimeError(f"{self.name}: ledger refused with {shown_code(response)}")
            balances.update(page.balances)
            if not page.more or not page.balances:
                return msgspec.structs.replace(page, balances=balances, more=False)
            after = max(page.balances)

    async def call(self, message: CentreRequest, timeout: float) -> Response:
        """Send one message and wait for its answer.

        Raises :class:`Unavailable` (not sent), :class:`TimeoutError` or
        :class:`LinkLost` (sent, outcome unknown).
        """
        op = type(message).__name__.lower()
        link = self._pick()
        if link is None:
            self.metrics.inc("unavailable", op=op)
            raise Unavailable(f"{self.name}: no connection to the centre")
        rid, waiter = link.send(message)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            self.metrics.inc("timeouts", op=op)
            raise
        except LinkLost:
            self.metrics.inc("lost_in_flight", op=op)
            raise
        finally:
            # A timeout cancels the waiter itself: give it up whatever its state, or
            # it would count as in flight until the connection closes and its late
            # answer would pass for a stray one.
            link.give_up(rid)
            waiter.cancel()

    # -- internals -------------------------------------------------------------

    def _unconfirmed(self, upload: bool) -> None:
        if upload:
            self.metrics.inc("uploads", result="unconfirmed")

    async def _reverse(self, message: Reverse, timeout: float) -> str:
        try:
            response = await self.call(message, timeout)
        except (Unavailable, TimeoutError, LinkLost) as exc:
            log.info("%s: reversal of ref %s not acknowledged: %s", self.name, message.ref, str(exc) or "timeout")
            return RETRY
        outcome = reversal_outcome(message, response)
        if outcome != REVERSED:
            # The answer names this ref or none (``mapping.answers``); its code is the centre's text.
            log.warning("%s: reversal of ref %s answered %s%s: %s", self.name, message.ref, shown_code(response),
                        "" if response.ref == message.ref else " naming no ref",
                        "repeated later" if outcome == RETRY else "refused, an operator's")
        return outcome

    def _pick(self) -> _Link | None:
        """The open link with the fewest requests in flight (round robin among equals)."""
        links = [link for link in self._links if link.is_open()]
        if not links:
            return None
        start = next(self._turn) % len(links)
        rotated = links[start:] + links[:start]
        return min(rotated, key=lambda link: link.in_flight)

    async def _keep_connected(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        initial, ceiling = self.backoff
        # +-25%: a spread of half the delay, so that connections lost together do not come back in step.
        backoff = Backoff(initial, ceiling, jitter=0.25)
        attempt = slot  # spread the slots over the endpoints
        failing = False
        while not self._closing:
            host, port = self.endpoints[attempt % len(self.endpoints)]
            attempt += 1
            peer = f"{host}:{port}"
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, link = await loop.create_connection(lambda: _Link(peer, self.metrics), host, port,
                                                           ssl=self.ssl)
            except (OSError, TimeoutError) as exc:
                if not failing:
                    log.warning("%s: cannot connect to %s: %s", self.name, peer, str(exc) or "timeout")
                    failing = True
                await asyncio.sleep(backoff.next_delay())
                continue
            if self._closing:
                link.close()
                break
            log.info("%s: connected to %s", self.name, peer)
            failing = False
            backoff.reset()
            self._links.append(link)
            self._up.set()
            try:
                await link.closed
            finally:
                if link in self._links:
                    self._links.remove(link)
                link.close()
            if not self._closing:
                log.warning("%s: connection to %s lost; reconnecting", self.name, peer)
                await asyncio.sleep(backoff.next_delay())
