"""Sans-I/O core of the ISO 8583 host link to a bank acquirer.

Nothing here opens a socket, reads a clock or imports asyncio: the I/O layer
(:mod:`adapters.card.link`) passes ``now`` (a monotonic clock, seconds) and
``wall`` (Unix time, for field 7) into every call, writes the messages this
module returns, and feeds it the decoded messages it receives.

Messages go out as plain dicts (``{"mti": "0200", 2: "...", 52: b"..."}``)
that the ``host-87-bcd`` dialect encodes; messages come in as anything with
``.mti`` and ``.get(field)`` (the dialect's lazy Message).

The switch owns STAN and RRN on the link: every message gets an acquirer-side
STAN from one :class:`StanAllocator` shared by all connections to that
acquirer, field 7 is the send time, field 37 the switch's RRN.  A reversal
(0400) names its original by what was *sent to the acquirer* (its STAN and
field 7), which the adapter hands to the switch as ``Result.acquirer_ref``
(see :func:`acquirer_ref`).
"""
from __future__ import annotations

import enum
import heapq
import random
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

import msgspec

from switch.core.acquirer import Original, Request, Result

# Network management information codes (field 70).
SIGN_ON = "001"
SIGN_OFF = "002"
ECHO = "301"

# Response codes this adapter produces itself (spec section 5).
RC_TOO_LATE = "68"  # no answer before the deadline
RC_INOPERATIVE = "91"  # no connection, or the connection died under the request
RC_MALFUNCTION = "96"  # the acquirer answered without field 39

# Answers to a reversal that mean "nothing more to do".
REVERSAL_DONE = ("00", "25")

FINANCIAL_MTIS = ("0100", "0200", "0220")


# --------------------------------------------------------------------------
# Masking: never a full PAN, track 2 or PIN block in a log line or exception.

def mask_pan(pan: str | None) -> str:
    """First 6 and last 4 digits, the rest as '*'."""
    if not pan:
        return ""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


_LONG_DIGITS = re.compile(r"\d{12,19}")


def scrub(text: str) -> str:
    """Mask every run of 12..19 digits in ``text`` (for codec error messages)."""
    return _LONG_DIGITS.sub(lambda m: mask_pan(m.group(0)), text)


# --------------------------------------------------------------------------
# Field formats.

_f7_cache: tuple[int, str] = (-1, "")


def transmission_time(wall: float) -> str:
    """Field 7: UTC MMDDhhmmss of ``wall`` (Unix time)."""
    global _f7_cache
    second = int(wall)
    if _f7_cache[0] != second:
        _f7_cache = (second, time.strftime("%m%d%H%M%S", time.gmtime(second)))
    return _f7_cache[1]


def acquirer_ref(stan: str, f7: str, rrn: str) -> str:
    """What a later reversal or completion needs: the STAN and field 7 as sent
    to the acquirer and the RRN of the transaction there: ``stan|f7|rrn``."""
    return f"{stan}|{f7}|{rrn}"


class Ref(msgspec.Struct, frozen=True):
    stan: str
    f7: str
    rrn: str


def parse_ref(ref: str | None) -> Ref | None:
    """The inverse of :func:`acquirer_ref`; None when absent or malformed."""
    if not ref:
        return None
    parts = ref.split("|")
    if len(parts) != 3:
        return None
    stan, f7, rrn = parts
    if len(stan) != 6 or not stan.isdigit() or len(f7) != 10 or not f7.isdigit():
        return None
    return Ref(stan, f7, rrn)


def original_data(original: Original, acquirer_id: str) -> str:
    """Field 90 naming ``original`` at the acquirer (n42).

    Original MTI (4) + the acquirer-side STAN (6) + the acquirer-side field 7
    (10) + our field 32 right-justified, zero-padded to 11 + 11 zeros.  When
    the original's acquirer_ref is missing (the switch died, or the adapter
    overran, before it learnt what was sent), STAN and field 7 are zeros: the
    original is named by its RRN in field 37, which the switch assigned.  The
    terminal's own STAN and field 7 must never stand in — they come from
    another counter and could name another customer's authorization.
    """
    ref = parse_ref(original.acquirer_ref)
    if ref is not None:
        stan, f7 = ref.stan, ref.f7
    else:
        stan, f7 = "0" * 6, "0" * 10
    return f"{original.mti}{stan}{f7}{acquirer_id.rjust(11, '0')}{'0' * 11}"


def request_fields(request: Request, *, stan: str, f7: str, acquirer_id: str) -> dict:
    """The host message (0100/0200/0220) for a terminal's request."""
    m: dict[Any, Any] = {"mti": request.mti}
    if request.pan:
        m[2] = request.pan
    m[3] = request.processing_code
    if request.amount is not None:
        m[4] = f"{request.amount:012d}"
    m[7] = f7
    m[11] = stan
    if request.local_time:
        m[12] = request.local_time
    if request.local_date:
        m[13] = request.local_date
    if request.expiry:
        m[14] = request.expiry
    if request.entry_mode:
        m[22] = request.entry_mode
    if request.pos_condition:
        m[25] = request.pos_condition
    m[32] = acquirer_id
    if request.track2:
        m[35] = request.track2
    m[37] = request.rrn
    m[41] = request.terminal_id
    m[42] = request.merchant_id
    if request.currency:
        m[49] = request.currency
    if request.pin_block:
        m[52] = request.pin_block
    if request.icc:
        m[55] = request.icc
    original = request.original
    if original is not None:
        # A completion (0220) names the pre-authorization it completes.
        if original.auth_code:
            m[38] = original.auth_code
        m[90] = original_data(original, acquirer_id)
    return m


def reversal_fields(request: Request, *, stan: str, f7: str, acquirer_id: str) -> dict:
    """The 0400 reversing ``request.original``.

    Everything that names the original (3, 4, 37, 49, 90) comes from the
    original, so every retry of the same reversal carries the same content;
    only 7 and 11 are new per attempt.
    """
    original = request.original
    if original is None:
        raise ValueError("a reversal needs request.original")
    ref = parse_ref(original.acquirer_ref)
    m: dict[Any, Any] = {"mti": "0400"}
    if request.pan:
        m[2] = request.pan
    m[3] = original.processing_code
    amount = original.amount if original.amount is not None else request.amount
    if amount is not None:
        m[4] = f"{amount:012d}"
    m[7] = f7
    m[11] = stan
    if request.local_time:
        m[12] = request.local_time
    if request.local_date:
        m[13] = request.local_date
    if request.entry_mode:
        m[22] = request.entry_mode
    if request.pos_condition:
        m[25] = request.pos_condition
    m[32] = acquirer_id
    m[37] = ref.rrn if ref is not None and ref.rrn else original.rrn
    m[41] = request.terminal_id
    m[42] = request.merchant_id
    currency = original.currency or request.currency
    if currency:
        m[49] = currency
    m[90] = original_data(original, acquirer_id)
    return m


def network_fields(code: str, *, stan: str, f7: str) -> dict:
    """0800 network management: sign-on (001), sign-off (002), echo (301)."""
    return {"mti": "0800", 7: f7, 11: stan, 70: code}


def network_answer(msg: Any) -> dict:
    """0810 for an 0800 the acquirer sent us (its own echo or sign-on)."""
    m: dict[Any, Any] = {"mti": "0810"}
    for field in (7, 11, 70):
        value = msg.get(field)
        if value is not None:
            m[field] = value
    m[39] = "00"
    return m


def answer_mti(mti: str) -> str:
    """0200 -> 0210 and so on."""
    return mti[:2] + str(int(mti[2]) + 1) + mti[3]


# --------------------------------------------------------------------------
# STAN allocation.

class StanAllocator:
    """Acquirer-side STANs 000001..999999, wrapping, never two in flight at once.

    One allocator serves every connection to an acquirer, so a STAN is unique
    on the whole link (the acquirer sees one institution, field 32).
    """

    LIMIT = 999_999

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= self.LIMIT:
            raise ValueError(f"STAN start must be 1..{self.LIMIT}, got {start}")
        self._next = start
        self._in_use: set[str] = set()

    def allocate(self) -> str:
        if len(self._in_use) >= self.LIMIT:
            raise RuntimeError("all 999999 STANs are in flight")
        while True:
            n = self._next
            self._next = 1 if n >= self.LIMIT else n + 1
            stan = f"{n:06d}"
            if stan not in self._in_use:
                self._in_use.add(stan)
                return stan

    def release(self, stan: str) -> None:
        self._in_use.discard(stan)

    def in_use(self, stan: str) -> bool:
        return stan in self._in_use

    def __len__(self) -> int:
        return len(self._in_use)


# --------------------------------------------------------------------------
# Reconnect backoff.

class Backoff:
    """Exponential backoff with jitter: initial, doubling, capped, +-jitter."""

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._base = initial

    def next_delay(self) -> float:
        base = self._base
        self._base = min(self.maximum, base * self.factor)
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._base = self.initial


# --------------------------------------------------------------------------
# Metrics, without a metrics library: the switch wires these to Prometheus.

class LinkMetrics:
    """Counters keyed by (name, labels); an optional listener sees every increment.

    Names: ``requests`` (mti, response_code), ``timeouts`` (mti),
    ``late_answers`` (mti), ``lost_in_flight`` (mti), ``unavailable`` (mti),
    ``unmatched_answers`` (mti), ``reconnects`` (endpoint), ``echoes`` (endpoint),
    ``protocol_errors`` (endpoint), ``sign_on_failures`` (endpoint).
    Connection states are a gauge: see ``HostLinkAcquirer.connection_states()``.
    """

    def __init__(self, listener: Callable[[str, dict[str, str], int], None] | None = None) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.listener = listener

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0) + amount
        if self.listener is not None:
            self.listener(name, labels, amount)

    def get(self, name: str, **labels: str) -> int:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)


# --------------------------------------------------------------------------
# Requests in flight.

class Kind(enum.Enum):
    REQUEST = "request"  # 0100/0200/0220: outcome is a Result
    REVERSAL = "reversal"  # 0400: outcome is a bool
    SIGN_ON = "sign-on"
    ECHO = "echo"
    SIGN_OFF = "sign-off"


class Pending:
    """One message written to the acquirer and not yet answered."""

    __slots__ = ("kind", "mti", "stan", "f7", "rrn", "terminal_id", "deadline", "sent_at", "token")

    def __init__(self, kind: Kind, mti: str, stan: str, f7: str, rrn: str,
                 terminal_id: str | None, deadline: float, sent_at: float, token: Any) -> None:
        self.kind = kind
        self.mti = mti
        self.stan = stan
        self.f7 = f7
        self.rrn = rrn
        self.terminal_id = terminal_id
        self.deadline = deadline
        self.sent_at = sent_at
        self.token = token  # the I/O layer's handle (e.g. a future); opaque here

    @property
    def ref(self) -> str:
        return acquirer_ref(self.stan, self.f7, self.rrn)

    def __repr__(self) -> str:
        return f"<Pending {self.kind.value} {self.mti} stan={self.stan} deadline={self.deadline:.3f}>"


class InFlight:
    """Pending messages of one connection, by STAN, with a deadline heap."""

    def __init__(self, late_memory: int = 4096) -> None:
        self._by_stan: dict[str, Pending] = {}
        self._heap: list[tuple[float, int, Pending]] = []
        self._seq = 0
        # STANs that expired recently, to tell a late answer from a stray one.
        self._expired: OrderedDict[str, str] = OrderedDict()
        self._late_memory = late_memory

    def __len__(self) -> int:
        return len(self._by_stan)

    def __contains__(self, stan: str) -> bool:
        return stan in self._by_stan

    def add(self, pending: Pending) -> None:
        if pending.stan in self._by_stan:
            raise RuntimeError(f"STAN {pending.stan} is already in flight")
        self._by_stan[pending.stan] = pending
        self._seq += 1
        heapq.heappush(self._heap, (pending.deadline, self._seq, pending))

    def pop(self, stan: str) -> Pending | None:
        return self._by_stan.pop(stan, None)

    def peek(self, stan: str) -> Pending | None:
        return self._by_stan.get(stan)

    def expired_mti(self, stan: str) -> str | None:
        """The MTI of a message whose deadline passed recently under ``stan``."""
        return self._expired.get(stan)

    def forget_expired(self, stan: str) -> None:
        self._expired.pop(stan, None)

    def expire(self, now: float) -> list[Pending]:
        """Remove and return every pending message whose deadline is <= now."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, pending = heapq.heappop(heap)
            if self._by_stan.get(pending.stan) is pending:
                del self._by_stan[pending.stan]
                self._remember(pending)
                out.append(pending)
        return out

    def _remember(self, pending: Pending) -> None:
        self._expired[pending.stan] = pending.mti
        self._expired.move_to_end(pending.stan)
        while len(self._expired) > self._late_memory:
            self._expired.popitem(last=False)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and self._by_stan.get(heap[0][2].stan) is not heap[0][2]:
            heapq.heappop(heap)  # answered already: drop the stale entry
        return heap[0][0] if heap else None

    def drain(self) -> list[Pending]:
        out = list(self._by_stan.values())
        self._by_stan.clear()
        self._heap.clear()
        return out

    def values(self) -> Iterable[Pending]:
        return self._by_stan.values()


# --------------------------------------------------------------------------
# Events the connection core reports to the I/O layer.

class Completed(msgspec.Struct):
    """A request or reversal has its outcome: resolve ``pending.token`` with it."""

    pending: Any
    outcome: Any  # Result for Kind.REQUEST, bool for Kind.REVERSAL


class Late(msgspec.Struct):
    """An answer arrived after its deadline: logged, counted, dropped."""

    mti: str
    stan: str
    response_code: str | None


class Unmatched(msgspec.Struct):
    """An answer that matches nothing we sent (or recently sent)."""

    mti: str
    stan: str | None
    reason: str


class SignedOn(msgspec.Struct):
    pass


class Close(msgspec.Struct):
    """The connection must be closed (and, unless we are shutting down, reopened)."""

    reason: str


class Send(msgspec.Struct):
    """A message to write now (echo, or an answer to the acquirer's own 0800)."""

    message: dict


class State(enum.Enum):
    CONNECTING = "connecting"
    SIGNING_ON = "signing-on"
    READY = "ready"
    SIGNING_OFF = "signing-off"
    CLOSED = "closed"


class HostConnection:
    """Protocol state of one connection to the acquirer: sign-on, echo,
    requests in flight with their deadlines.

    The I/O layer calls :meth:`connection_made` once the TCP connection is up
    and writes the sign-on it returns; :meth:`request` / :meth:`reversal`
    return the message to write; :meth:`receive` takes a decoded message;
    :meth:`poll` is called at :meth:`next_wakeup` (or any time later);
    :meth:`connection_lost` fails what is in flight.  Every method returns a
    list of events (and/or a message to write).
    """

    def __init__(
        self,
        stans: StanAllocator,
        *,
        acquirer_id: str,
        echo_interval: float = 30.0,
        network_timeout: float = 10.0,
        endpoint: str = "",
        metrics: LinkMetrics | None = None,
    ) -> None:
        self.stans = stans
        self.acquirer_id = acquirer_id
        self.echo_interval = echo_interval
        self.network_timeout = network_timeout
        self.endpoint = endpoint
        self.metrics = metrics if metrics is not None else LinkMetrics()
        self.state = State.CONNECTING
        self.inflight = InFlight()
        self.last_received = 0.0
        self._echo: Pending | None = None

    # -- helpers -----------------------------------------------------------

    def _register(self, kind: Kind, msg: dict, *, now: float, deadline: float,
                  rrn: str = "", terminal_id: str | None = None, token: Any = None) -> Pending:
        pending = Pending(kind, msg["mti"], msg[11], msg[7], rrn, terminal_id, deadline, now, token)
        self.inflight.add(pending)
        return pending

    def _finish(self, pending: Pending) -> None:
        self.stans.release(pending.stan)
        if pending is self._echo:
            self._echo = None

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    # -- connection lifecycle ----------------------------------------------

    def connection_made(self, now: float, wall: float) -> dict:
        """The TCP connection is up: returns the sign-on (0800 70=001) to write."""
        if self.state is not State.CONNECTING:
            raise RuntimeError(f"connection_made in state {self.state.value}")
        self.state = State.SIGNING_ON
        self.last_received = now
        stan = self.stans.allocate()
        msg = network_fields(SIGN_ON, stan=stan, f7=transmission_time(wall))
        self._register(Kind.SIGN_ON, msg, now=now, deadline=now + self.network_timeout)
        return msg

    def sign_off(self, now: float, wall: float) -> dict | None:
        """Start a graceful close: returns the sign-off (0800 70=002) to write,
        or None when not signed on.  New requests are refused from here on."""
        was_ready = self.state is State.READY
        if self.state is not State.CLOSED:
            self.state = State.SIGNING_OFF
        if not was_ready:
            return None
        stan = self.stans.allocate()
        msg = network_fields(SIGN_OFF, stan=stan, f7=transmission_time(wall))
        self._register(Kind.SIGN_OFF, msg, now=now, deadline=now + self.network_timeout)
        return msg

    def connection_lost(self, reason: str = "connection lost") -> list[Completed]:
        """The connection is gone: everything in flight gets an uncertain outcome.

        A request already written may have been approved: it completes with
        91 (acquirer inoperative), uncertain=True, so the switch reverses it.
        """
        self.state = State.CLOSED
        events = []
        for pending in self.inflight.drain():
            self._finish(pending)
            if pending.kind is Kind.REQUEST:
                self.metrics.inc("lost_in_flight", mti=pending.mti)
                self.metrics.inc("requests", mti=pending.mti, response_code=RC_INOPERATIVE)
                events.append(Completed(pending, Result(
                    response_code=RC_INOPERATIVE, acquirer_ref=pending.ref, uncertain=True)))
            elif pending.kind is Kind.REVERSAL:
                self.metrics.inc("lost_in_flight", mti=pending.mti)
                events.append(Completed(pending, False))
        self._echo = None
        return events

    # -- outgoing ----------------------------------------------------------

    def request(self, request: Request, *, now: float, wall: float, timeout: float,
                token: Any = None) -> tuple[dict, Pending]:
        """Register an authorization/financial/advice message; returns it with
        its Pending (cancel with :meth:`cancel` if it could not be written)."""
        if self.state is not State.READY:
            raise RuntimeError(f"request on a connection in state {self.state.value}")
        if request.mti not in FINANCIAL_MTIS:
            raise ValueError(f"not a host request MTI: {request.mti}")
        stan = self.stans.allocate()
        msg = request_fields(request, stan=stan, f7=transmission_time(wall),
                             acquirer_id=self.acquirer_id)
        pending = self._register(Kind.REQUEST, msg, now=now, deadline=now + timeout,
                                 rrn=request.rrn, terminal_id=request.terminal_id, token=token)
        return msg, pending

    def reversal(self, request: Request, *, now: float, wall: float, timeout: float,
                 token: Any = None) -> tuple[dict, Pending]:
        """Register the 0400 for ``request.original``."""
        if self.state is not State.READY:
            raise RuntimeError(f"reversal on a connection in state {self.state.value}")
        stan = self.stans.allocate()
        try:
            msg = reversal_fields(request, stan=stan, f7=transmission_time(wall),
                                  acquirer_id=self.acquirer_id)
        except Exception:
            self.stans.release(stan)
            raise
        pending = self._register(Kind.REVERSAL, msg, now=now, deadline=now + timeout,
                                 rrn=msg[37], terminal_id=request.terminal_id, token=token)
        return msg, pending

    def cancel(self, pending: Pending) -> None:
        """Forget a registered message that was never written."""
        if self.inflight.peek(pending.stan) is pending:
            self.inflight.pop(pending.stan)
            self._finish(pending)

    # -- incoming ----------------------------------------------------------

    def receive(self, msg: Any, now: float) -> list:
        """A decoded message from the acquirer."""
        self.last_received = now
        mti = msg.mti
        if mti == "0800":
            return [Send(network_answer(msg))]
        stan = msg.get(11)
        if stan is None:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, None, "no field 11")]
        pending = self.inflight.peek(stan)
        if pending is None:
            late_mti = self.inflight.expired_mti(stan)
            if late_mti is not None and answer_mti(late_mti) == mti:
                self.inflight.forget_expired(stan)
                self.metrics.inc("late_answers", mti=late_mti)
                return [Late(mti, stan, msg.get(39))]
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, "no request in flight with this STAN")]
        if mti != answer_mti(pending.mti):
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, f"answer MTI does not fit the request {pending.mti}")]
        tid = msg.get(41)
        if tid is not None and pending.terminal_id is not None and tid != pending.terminal_id:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, "field 41 does not match the request")]
        f7 = msg.get(7)
        if f7 is not None and f7 != pending.f7:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, "field 7 does not match the request")]
        # Every field is read before anything changes: a lazily decoded message
        # may raise DecodeError on access, and then the pending stays in flight
        # until the I/O layer closes the connection (and fails it uncertain).
        events = self._answered(pending, msg)
        self.inflight.pop(stan)
        self._finish(pending)
        return events

    def _answered(self, pending: Pending, msg: Any) -> list:
        rc = msg.get(39)
        kind = pending.kind
        if kind is Kind.REQUEST:
            result = result_from_answer(msg, pending)
            self.metrics.inc("requests", mti=pending.mti, response_code=result.response_code)
            return [Completed(pending, result)]
        if kind is Kind.REVERSAL:
            self.metrics.inc("requests", mti=pending.mti, response_code=rc or "none")
            return [Completed(pending, rc in REVERSAL_DONE)]
        if kind is Kind.SIGN_ON:
            if rc == "00" and self.state is State.SIGNING_ON:
                self.state = State.READY
                return [SignedOn()]
            self.metrics.inc("sign_on_failures", endpoint=self.endpoint)
            return [Close(f"sign-on refused with 39={rc}")]
        if kind is Kind.SIGN_OFF:
            return [Close("signed off")]
        return []  # echo answered: last_received already moved on

    # -- time --------------------------------------------------------------

    def poll(self, now: float, wall: float) -> list:
        """Expire what is past its deadline; send an echo when idle."""
        events: list = []
        for pending in self.inflight.expire(now):
            self._finish(pending)
            kind = pending.kind
            if kind is Kind.REQUEST:
                self.metrics.inc("timeouts", mti=pending.mti)
                self.metrics.inc("requests", mti=pending.mti, response_code=RC_TOO_LATE)
                events.append(Completed(pending, Result(
                    response_code=RC_TOO_LATE, acquirer_ref=pending.ref, uncertain=True)))
            elif kind is Kind.REVERSAL:
                self.metrics.inc("timeouts", mti=pending.mti)
                events.append(Completed(pending, False))
            elif kind is Kind.SIGN_ON:
                self.metrics.inc("sign_on_failures", endpoint=self.endpoint)
                events.append(Close("sign-on unanswered"))
            elif kind is Kind.ECHO:
                # Any message received since the echo went out proves the link alive.
                if self.last_received < pending.sent_at:
                    events.append(Close("echo unanswered"))
            elif kind is Kind.SIGN_OFF:
                events.append(Close("sign-off unanswered"))
        closing = any(isinstance(e, Close) for e in events)
        if (self.state is State.READY and self._echo is None and not closing
                and now - self.last_received >= self.echo_interval):
            stan = self.stans.allocate()
            msg = network_fields(ECHO, stan=stan, f7=transmission_time(wall))
            self._echo = self._register(Kind.ECHO, msg, now=now,
                                        deadline=now + self.network_timeout)
            self.metrics.inc("echoes", endpoint=self.endpoint)
            events.append(Send(msg))
        return events

    def next_wakeup(self) -> float | None:
        """When :meth:`poll` has something to do next (None: nothing scheduled)."""
        wake = self.inflight.next_deadline()
        if self.state is State.READY and self._echo is None:
            echo_at = self.last_received + self.echo_interval
            wake = echo_at if wake is None else min(wake, echo_at)
        return wake


def result_from_answer(msg: Any, pending: Pending) -> Result:
    """0110/0210/0230 -> Result: 39, 38, 55; acquirer_ref = stan|f7|rrn."""
    rrn = msg.get(37) or pending.rrn
    ref = acquirer_ref(pending.stan, pending.f7, rrn)
    rc = msg.get(39)
    if rc is None:
        # An answer without a response code tells us nothing: treat as unknown.
        return Result(response_code=RC_MALFUNCTION, acquirer_ref=ref, uncertain=True)
    return Result(response_code=rc, auth_code=msg.get(38), acquirer_ref=ref, icc=msg.get(55))


def fields_view(message: Mapping) -> "FieldsView":
    """Wrap a dict like ``{"mti": ..., 11: ...}`` in the received-message interface."""
    return FieldsView(message)


class FieldsView:
    """A dict as a received message (``.mti``, ``.get(n)``, ``n in msg``): for tests
    and for the simulator's pure decision functions."""

    __slots__ = ("_fields", "mti")

    def __init__(self, message: Mapping) -> None:
        self._fields = message
        self.mti = message["mti"]

    def get(self, field: int, default: Any = None) -> Any:
        return self._fields.get(field, default)

    def __contains__(self, field: int) -> bool:
        return field in self._fields

    def __getitem__(self, field: int) -> Any:
        return self._fields[field]
