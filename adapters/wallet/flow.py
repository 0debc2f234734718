"""The life of one wallet payment, from the pay to a final answer (sans-I/O).

Spec section 6: a wallet payment waiting for the customer to confirm on the
phone is held and polled until it is final or the deadline nears; then the
wallet payment is cancelled (trade.pay) or reversed (micropay) and the
terminal gets 68.  The clock is passed in; the driver
(:mod:`adapters.wallet.acquirer`) does the calls and the waiting::

    flow = PaymentFlow(now=t, deadline=t + timeout, ...)
    while not isinstance(step := flow.step(now()), Done):
        if isinstance(step, Wait): sleep until step.until
        else: flow.feed(step.call, <the wallet's reply to step.call>, now())

Phases: ``pay`` (one pay call) -> ``poll`` (query every ``poll_interval``
until ``hold_until`` = deadline - margin) -> ``cancel`` (cancel every
``cancel_interval`` until acknowledged or the deadline).  A final answer in
``pay`` or ``poll`` ends it at once.  A cancel answered "no such order" after a pay that
may have reached the wallet ends it too, but not as final: the wallet may only
not have seen the pay *yet* (still on its way, or queued there), so the order is
left to the switch's reversal queue, which repeats the cancel for
``reversal_not_found_window`` seconds before it counts as nothing to cancel
(journal state ``unmatched``), as a card reversal answered 25.
:meth:`PaymentFlow.withdraw` (the terminal reversed the payment meanwhile) moves
to ``cancel`` at once.  :meth:`PaymentFlow.for_reversal` starts
at ``cancel``, :meth:`PaymentFlow.for_order` at ``poll`` (a sweeper finishing
an order after a restart).
"""
from __future__ import annotations

from typing import NamedTuple

from . import outcomes
from .outcomes import Disposition, Outcome

# Below this many seconds a call is not worth starting.
MIN_CALL = 0.05


class Call(NamedTuple):
    call: str  # "pay" | "query" | "cancel"
    timeout: float


class Wait(NamedTuple):
    until: float


class Done(NamedTuple):
    code: str  # field 39
    # paid | declined | closed | refunded | reversed | unsent (the pay never left) |
    # open (cancel not acknowledged) | not-found (the wallet knows no such order after a
    # pay that may have reached it: uncertain, a late pay may still land)
    disposition: str
    trade_no: str | None
    uncertain: bool  # the wallet may hold a payment: reverse it later


class Reply(NamedTuple):
    outcome: Outcome | None  # None: no answer, or none we could verify
    trade_no: str | None = None
    sent: bool = True  # False when the request certainly never reached the wallet


class PaymentFlow:
    def __init__(
        self,
        *,
        now: float,
        deadline: float,
        margin: float,
        poll_interval: float,
        cancel_interval: float,
        request_timeout: float,
        phase: str = "pay",
    ):
        self.deadline = deadline
        self.hold_until = deadline - margin
        self.poll_interval = poll_interval
        self.cancel_interval = cancel_interval
        self.request_timeout = request_timeout
        self.phase = phase
        self.next_at = now
        # The wallet said the customer is confirming: the deadline answer is 68, not 91.
        # An order taken over after the fact (sweeper, reversal) was left waiting.
        self.waiting = phase != "pay"
        # The wallet may hold this order (a pay may have reached it).
        self.maybe_sent = phase != "pay"
        self.trade_no: str | None = None
        self.done: Done | None = None

    @classmethod
    def for_reversal(cls, *, now: float, deadline: float, cancel_interval: float,
                     request_timeout: float) -> PaymentFlow:
        return cls(now=now, deadline=deadline, margin=0.0, poll_interval=0.0,
                   cancel_interval=cancel_interval, request_timeout=request_timeout,
                   phase="cancel")

    @classmethod
    def for_order(cls, *, now: float, deadline: float, margin: float, poll_interval: float,
                  cancel_interval: float, request_timeout: float) -> PaymentFlow:
        return cls(now=now, deadline=deadline, margin=margin, poll_interval=poll_interval,
                   cancel_interval=cancel_interval, request_timeout=request_timeout,
                   phase="poll")

    def step(self, now: float) -> Call | Wait | Done:
        if self.done is not None:
            return self.done
        if self.phase == "pay":
            room = self.hold_until - now
            if room < MIN_CALL:
                return self._end(outcomes.WALLET_UNAVAILABLE, "unsent", uncertain=False)
            return Call("pay", min(self.request_timeout, room))
        if self.phase == "poll":
            if self.hold_until - now >= MIN_CALL:
                if now < self.next_at:
                    return Wait(min(self.next_at, self.hold_until))
                return Call("query", min(self.request_timeout, self.hold_until - now))
            self.phase = "cancel"
            self.next_at = now
        room = self.deadline - now
        if room < MIN_CALL:
            return self.abandon()
        if now < self.next_at:
            return Wait(min(self.next_at, self.deadline))
        return Call("cancel", min(self.request_timeout, room))

    def stop_by(self, at: float) -> None:
        """The switch stops at ``at``: hold the customer no later than the margin before it,
        so that the cancel is done by then (an order is not left open at the wallet)."""
        margin = self.deadline - self.hold_until
        self.deadline = min(self.deadline, at)
        self.hold_until = min(self.hold_until, at - margin)

    def withdraw(self, now: float) -> None:
        """The terminal reversed the payment while it is held (spec 6.1): the customer is
        held no longer and the order is cancelled now, so that a confirmation on the phone
        cannot pay what the shop reversed.  A pay not sent yet is never sent; a pay under
        way is followed by the cancel as soon as it is answered (unless it is final)."""
        if self.done is not None or self.phase == "cancel":
            return
        self.hold_until = min(self.hold_until, now)
        if self.phase == "poll":
            self.phase = "cancel"
            self.next_at = now

    def feed(self, call: str, reply: Reply, now: float) -> None:
        if self.done is not None:
            return
        if reply.trade_no:
            self.trade_no = reply.trade_no
        outcome = reply.outcome
        if call == "cancel":
            if outcome is not None and outcome.disposition is Disposition.NOT_FOUND and self.maybe_sent:
                # Not seen *yet*: a pay still on its way or queued at the wallet lands after this
                # answer.  Ended uncertain: the switch's reversal queue repeats the cancel.
                self._end(self._deadline_code(), outcome.disposition.value, uncertain=True)
            elif outcome is not None and outcome.disposition in outcomes.ACKNOWLEDGED:
                self._end(self._deadline_code(), outcome.disposition.value, uncertain=False)
            else:
                self.next_at = now + self.cancel_interval
            return
        if call == "pay":
            if outcome is None and not reply.sent:
                self._end(outcomes.WALLET_UNAVAILABLE, "unsent", uncertain=False)
                return
            self.maybe_sent = True
        disposition = outcome.disposition if outcome is not None else Disposition.UNKNOWN
        if disposition is Disposition.PAID:
            self._end("00", disposition.value, uncertain=False)
        elif disposition is Disposition.DECLINED:
            self._end(outcome.code, disposition.value, uncertain=False)
        else:
            if disposition is Disposition.WAITING:
                self.waiting = True
            self.phase = "poll"
            self.next_at = now + self.poll_interval

    def abandon(self) -> Done:
        """End without an acknowledged cancel (deadline, or the adapter closing)."""
        if not self.maybe_sent:
            return self._end(outcomes.WALLET_UNAVAILABLE, "unsent", uncertain=False)
        return self._end(self._deadline_code(), "open", uncertain=True)

    def _deadline_code(self) -> str:
        return outcomes.NEVER_CONFIRMED if self.waiting else outcomes.WALLET_UNAVAILABLE

    def _end(self, code: str, disposition: str, *, uncertain: bool) -> Done:
        self.done = Done(code, disposition, self.trade_no, uncertain)
        return self.done
