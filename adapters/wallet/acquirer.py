"""Barcode-wallet acquirers on asyncio: what both API styles share.

:class:`WalletAcquirer` implements :class:`switch.core.acquirer.Acquirer` by
driving a :class:`.flow.PaymentFlow` with real calls and real time; a style
subclass (:mod:`.tradepay`, :mod:`.micropay`) only turns one call (pay, query,
cancel) into one HTTP exchange and a verified :class:`.messages.WalletReply`.

The merchant order number sent to the wallet is :func:`order_number`: the
same terminal request always maps to the same wallet order, so a retried
authorize, a reversal or a sweeper after a restart all reach the one payment
and the wallet never takes the money twice.

``Result.acquirer_ref`` is ``"<order number>|<wallet trade number>|<disposition>"``
(see :class:`.flow.Done` for the dispositions); :meth:`reverse` needs only the
order number and derives it again when the reference is missing.

A cancel answered "no such order" after a pay that may have reached the wallet
is not final (the pay may land later): :meth:`authorize` ends uncertain
(disposition ``not-found``), so the switch queues the reversal, and
:meth:`reverse` returns :data:`switch.core.acquirer.NOT_FOUND`, which the
switch repeats for ``reversal_not_found_window`` seconds before recording
``unmatched``.  Only a pay that never left the switch (``unsent``) needs no cancel.

``metrics`` (:class:`switch.core.link_metrics.LinkMetrics`, exported as
``payswitch_wallet_<name>_total``) counts ``calls`` by ``call`` (pay, query,
cancel) and ``outcome`` (``answered``; ``unverifiable``: an answer that does
not parse or verify; ``no_answer``: none, though the request may have arrived;
``unsent``) and ``orders`` by the ``disposition`` each flow ended with
(``open``: a cancel never acknowledged; ``not-found``: a cancel answered "no such
order", not final; both left to the switch's reversal).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec

from switch.core.acquirer import NOT_FOUND, Request, Result
from switch.core.acquirer import order_number as core_order_number
from switch.core.link_metrics import LinkMetrics

from . import outcomes
from .flow import Call, Done, PaymentFlow, Reply, Wait
from .http import ConnectionPool, TransportError
from .messages import WalletReply

log = logging.getLogger("payswitch.wallet")

#: ``on_state(order_no, state)``: called (and awaited when it returns an awaitable)
#: with "pay", "query" or "cancel" before each call to the wallet, and with the
#: final disposition once the flow ends.  An exception stops the flow and
#: propagates: the order is then left for :meth:`WalletAcquirer.finish`.
OnState = Callable[[str, str], Awaitable[None] | None]

# Dispositions after which nothing is left to reverse at the wallet ("not-found" is not
# one: the wallet may see a late pay after it).
_NOTHING_TO_REVERSE = frozenset({"declined", "closed", "refunded", "reversed", "unsent"})
_CALL_OUTCOMES = ("answered", "unverifiable", "no_answer", "unsent")
# The payment codes both styles' wallets issue have 16 to 24 digits (trade.pay 16-24,
# micropay 18): another length is no wallet's code, answered 14 and never sent (a wallet
# would decline it too, after the customer's code had travelled for nothing).
CODE_LENGTHS = range(16, 25)
# Wallets' trade numbers have 28-32 characters; field 48 holds 999 with every tag.
MAX_TRADE_NO = 64


def order_number(request: Request) -> str:
    """The wallet order number of a terminal request (:func:`switch.core.acquirer.order_number`)."""
    return core_order_number(request.terminal_id, request.transmission_time, request.stan)


def original_order_number(request: Request) -> str:
    """The order number of ``request.original`` (the payment a reversal refers to)."""
    original = request.original
    if original is None:
        raise ValueError("the reversal names no original")
    if original.acquirer_ref:
        return original.acquirer_ref.split("|", 1)[0]
    return core_order_number(request.terminal_id, original.transmission_time, original.stan)


def acquirer_ref(order_no: str, trade_no: str | None, disposition: str) -> str:
    return f"{order_no}|{trade_no or ''}|{disposition}"


def auth_code(trade_no: str | None, order_no: str) -> str:
    """Field 38 (an6): the last six ASCII letters/digits of the wallet's trade number."""
    source = "".join(c for c in (trade_no or order_no) if c.isascii() and c.isalnum()).upper()
    return source[-6:].rjust(6, "0")


def trade_tag(trade_no: str | None) -> dict[str, str]:
    """Field 48 tag WT for an approval: the trade number when the field can carry it
    (printable ASCII, at most :data:`MAX_TRADE_NO` characters), else no tag."""
    if trade_no and len(trade_no) <= MAX_TRADE_NO and trade_no.isascii() and trade_no.isprintable():
        return {"WT": trade_no}
    return {}


class Order(NamedTuple):
    no: str
    code: str = ""  # the scanned payment code (pay only)
    amount: int = 0  # fen (pay only)


class OrderStatus(msgspec.Struct, frozen=True):
    """What a query found: ``disposition`` is an outcomes.Disposition value."""

    disposition: str
    code: str | None = None
    trade_no: str | None = None


class WalletAcquirer:
    style: str = ""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        pool_size: int = 4,
        request_timeout: float = 5.0,
        poll_interval: float = 3.0,
        cancel_interval: float = 1.0,
        cancel_margin: float = 10.0,
        currency: str | None = None,  # ISO 4217 numeric the wallet settles in; None: any
        subject: str = "payswitch purchase",
        on_state: OnState | None = None,
        ssl: _ssl.SSLContext | None = None,
    ):
        self.name = name
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.cancel_interval = cancel_interval
        self.cancel_margin = cancel_margin
        self.currency = currency
        self.subject = subject
        self._on_state = on_state
        self._pool = ConnectionPool(url, size=pool_size, ssl=ssl)
        self._reachable = False
        self._buyers: dict[str, str] = {}  # order number → the wallet's buyer id, until its Result
        self._closing = asyncio.Event()
        self._stop_at: float | None = None  # loop time by which the switch stops (stopping())
        self._wake = asyncio.Event()  # set to end the waits between calls (stopping, closing)
        self._runs = 0
        self._holding: dict[int, PaymentFlow] = {}  # payments being authorized, by txn_id (withdraw)
        self._drained = asyncio.Event()
        self._drained.set()
        self.metrics = LinkMetrics(link="wallet")
        # Every counter exists (at 0) before its first event: a rate over it is 0, not "no data".
        for call in ("pay", "query", "cancel"):
            for outcome in _CALL_OUTCOMES:
                self.metrics.inc("calls", 0, call=call, outcome=outcome)
        for disposition in ("paid", "open", "not-found", *sorted(_NOTHING_TO_REVERSE)):
            self.metrics.inc("orders", 0, disposition=disposition)

    # --- the Acquirer interface ------------------------------------------------

    async def start(self) -> None:
        """Probe the endpoint once (a query of an order that does not exist)."""
        await self.query("PAYSWITCHPROBE")

    async def close(self) -> None:
        """Stop holding: flows end at their next step (uncertain when the wallet may
        hold a payment), then the connections close."""
        self._closing.set()
        self._wake.set()
        await self._drained.wait()
        await self._pool.close()

    def stopping(self, within: float) -> None:
        """The switch stops in ``within`` seconds: every order held for its customer is
        cancelled (trade.pay) or reversed (micropay) by then, as at its own deadline, and
        its terminal answered; not left open at the wallet until the next start."""
        at = asyncio.get_running_loop().time() + within
        self._stop_at = at if self._stop_at is None else min(self._stop_at, at)
        self._wake.set()
        self._wake = asyncio.Event()

    def healthy(self) -> bool:
        return self._reachable and not self._closing.is_set()

    async def authorize(self, request: Request, timeout: float) -> Result:
        code = request.tlv.get("BC", "")
        # Purchases only: a refund or pre-authorization sent as a pay would charge the customer.
        purchase = request.mti == "0200" and request.processing_code.startswith("00")
        if request.kind != "wallet" or not purchase:
            return Result(response_code="12")
        if request.currency is None:
            # Spec section 3: a financial request carries field 49; a payment in no known
            # currency is a format error, never a pay in whatever the wallet takes.
            return Result(response_code="30")
        if self.currency is not None and request.currency != self.currency:
            return Result(response_code="12")
        if not (code.isascii() and code.isdigit()):
            return Result(response_code="30")
        if len(code) not in CODE_LENGTHS:
            return Result(response_code="14")
        if request.amount is None or request.amount <= 0:
            return Result(response_code="13")
        order = Order(order_number(request), code, request.amount)
        now = asyncio.get_running_loop().time()
        flow = PaymentFlow(
            now=now,
            deadline=now + timeout,
            margin=min(self.cancel_margin, timeout / 3),
            poll_interval=self.poll_interval,
            cancel_interval=self.cancel_interval,
            request_timeout=self.request_timeout,
        )
        self._holding[request.txn_id] = flow
        try:
            return await self._finished(flow, order)
        finally:
            if self._holding.get(request.txn_id) is flow:
                del self._holding[request.txn_id]

    def withdraw(self, txn_id: int) -> bool:
        """The terminal reversed payment ``txn_id`` while it is being authorized here (spec
        6.1): its order is cancelled (trade.pay) or reversed (micropay) at the wallet now,
        not when the customer's hold ends, and :meth:`authorize` returns once the wallet
        acknowledges it.  False when no payment of that id is held here."""
        flow = self._holding.get(txn_id)
        if flow is None:
            return False
        flow.withdraw(asyncio.get_running_loop().time())
        log.info("%s: payment %d reversed by its terminal; its order is withdrawn at the wallet", self.name, txn_id)
        self._wake.set()  # a flow waiting between two queries looks again
        self._wake = asyncio.Event()
        return True

    async def reverse(self, request: Request, timeout: float) -> bool | str:
        """Cancel (trade.pay) or reverse (micropay) the original's order: True once the
        wallet acknowledges it, False when it did not answer, :data:`NOT_FOUND` when it
        knows no such order (yet: the switch repeats it for its not-found window)."""
        order_no = original_order_number(request)
        ref = request.original.acquirer_ref if request.original else None
        if ref and ref.rsplit("|", 1)[-1] in _NOTHING_TO_REVERSE:
            return True
        now = asyncio.get_running_loop().time()
        flow = PaymentFlow.for_reversal(
            now=now,
            deadline=now + timeout,
            cancel_interval=self.cancel_interval,
            request_timeout=self.request_timeout,
        )
        done = await self._run(flow, Order(order_no))
        if done.disposition == "not-found":
            return NOT_FOUND
        return not done.uncertain

    # --- for a sweeper finishing orders after a restart -------------------------

    async def query(self, order_no: str) -> OrderStatus:
        reply = await self._call("query", Order(order_no), self.request_timeout)
        self._buyers.pop(order_no, None)  # only a payment's Result takes it
        if reply.outcome is None:
            return OrderStatus(outcomes.Disposition.UNKNOWN.value)
        return OrderStatus(reply.outcome.disposition.value, reply.outcome.code, reply.trade_no)

    async def finish(self, order_no: str, deadline: float) -> Result:
        """Finish an order left waiting: query it until it is final or ``deadline``
        (wall-clock, ``time.time()`` seconds), then cancel / reverse it within
        ``cancel_margin`` more seconds.  A deadline already past cancels at once."""
        now = asyncio.get_running_loop().time()
        hold = max(0.0, deadline - time.time())
        flow = PaymentFlow.for_order(
            now=now,
            deadline=now + hold + self.cancel_margin,
            margin=self.cancel_margin,
            poll_interval=self.poll_interval,
            cancel_interval=self.cancel_interval,
            request_timeout=self.request_timeout,
        )
        return await self._finished(flow, Order(order_no))

    # --- the driver -------------------------------------------------------------

    async def _finished(self, flow: PaymentFlow, order: Order) -> Result:
        """Run a payment's flow to its Result; its buyer id is dropped however it ends."""
        try:
            return self._result(order.no, await self._run(flow, order))
        finally:
            self._buyers.pop(order.no, None)

    async def _run(self, flow: PaymentFlow, order: Order) -> Done:
        loop = asyncio.get_running_loop()
        self._runs += 1
        self._drained.clear()
        try:
            while True:
                now = loop.time()
                if self._stop_at is not None:
                    flow.stop_by(self._stop_at)
                step = flow.step(now)
                if isinstance(step, Done):
                    break
                if self._closing.is_set():
                    step = flow.abandon()
                    break
                if isinstance(step, Wait):
                    try:
                        await asyncio.wait_for(self._wake.wait(), step.until - now)
                    except TimeoutError:
                        pass
                    continue
                assert isinstance(step, Call)
                await self._journal(order.no, step.call)
                if step.call == "query" and flow.phase == "cancel":
                    continue  # withdrawn meanwhile (the journal said it was reversed): no query, the cancel
                flow.feed(step.call, await self._call(step.call, order, step.timeout), loop.time())
            self.metrics.inc("orders", disposition=step.disposition)
            await self._journal(order.no, step.disposition)
            log.log(logging.WARNING if step.uncertain else logging.INFO, "%s: order %s %s -> %s%s", self.name,
                    order.no, step.disposition, step.code, " (uncertain)" if step.uncertain else "")
            return step
        finally:
            self._runs -= 1
            if self._runs == 0:
                self._drained.set()

    async def _journal(self, order_no: str, state: str) -> None:
        if self._on_state is not None:
            pending = self._on_state(order_no, state)
            if inspect.isawaitable(pending):
                await pending

    async def _call(self, call: str, order: Order, timeout: float) -> Reply:
        try:
            reply = await self._exchange(call, order, timeout)
        except TransportError as exc:
            self._reachable = False
            self.metrics.inc("calls", call=call, outcome="no_answer" if exc.sent else "unsent")
            log.warning("%s: %s %s: %s", self.name, call, order.no, exc)
            return Reply(None, sent=exc.sent)
        self._reachable = True
        if reply is not None and reply.buyer_id and call != "cancel":
            self._buyers[order.no] = reply.buyer_id
        if reply is None:
            self.metrics.inc("calls", call=call, outcome="unverifiable")
            log.warning("%s: %s %s: unverifiable answer, taken as no answer", self.name, call, order.no)
            return Reply(None)
        self.metrics.inc("calls", call=call, outcome="answered")
        outcome = outcomes.classify(self.style, call, reply.word, reply.family)
        return Reply(outcome, reply.trade_no)

    async def _exchange(self, call: str, order: Order, timeout: float) -> WalletReply | None:
        """One HTTP exchange: the verified reply, None when unverifiable; raises TransportError."""
        raise NotImplementedError

    def _result(self, order_no: str, done: Done) -> Result:
        ref = acquirer_ref(order_no, done.trade_no, done.disposition)
        buyer = self._buyers.pop(order_no, None)
        if done.code == "00":
            tlv = trade_tag(done.trade_no)
            if done.trade_no and not tlv:
                log.warning("%s: order %s paid; its trade number (%d characters) cannot go in field 48",
                            self.name, order_no, len(done.trade_no))
            return Result(
                response_code="00",
                auth_code=auth_code(done.trade_no, order_no),
                acquirer_ref=ref,
                tlv=tlv,
                buyer_id=buyer,
            )
        return Result(response_code=done.code, acquirer_ref=ref, uncertain=done.uncertain)
