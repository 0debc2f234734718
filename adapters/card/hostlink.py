"""Sans-I/O core of the ISO 8583 host link to a bank acquirer.

Nothing here opens a socket, reads a clock or imports asyncio: the I/O layer
(:mod:`adapters.card.link`) passes ``now`` (a monotonic clock, seconds) and
``wall`` (Unix time, for field 7) into every call, writes the messages this
module returns, and feeds it the decoded messages it receives.  The messages
themselves are built in :mod:`adapters.card.messages`.

The switch owns STAN and field 7 on the link: a request carries the host STAN
and field 7 the switch assigned and journaled (``Request.host_stan`` /
``host_time``); when it does not, the :class:`StanAllocator` shared by all
connections to the acquirer picks one (from the switch's ``stan_source`` when
given, so that sign-ons and echoes never take a STAN the switch hands out).
A reversal (0420, repeated as 0421) names its original in field 90 by what
was sent to the acquirer (its STAN and field 7).

The acquirer's own 0800s are honoured: echo, sign-off (no new requests on
that connection until it signs on again, or we do after ``resign_wait``),
sign-on, and key change (reported as :class:`KeyChange`; the owner decides
whether it was installed).
"""
from __future__ import annotations

import enum
from typing import Any, Callable

import cython
import msgspec

from adapters.card.breaker import Breaker, BreakerState  # noqa: F401  (re-exported)
from adapters.card.answers import field_of, mismatch, result_from_answer, reversal_outcome  # noqa: F401
from adapters.card.inflight import GivenUp, Kind, Pending, StanAllocator, StanInUse, new_pending  # noqa: F401
from adapters.card.messages import (  # noqa: F401  (re-exported: the link, the simulator and tests use them)
    ECHO,
    KEY_CHANGE,
    RC_APPROVED,
    RC_INVALID,
    RC_SYSTEM,
    SIGN_OFF,
    SIGN_ON,
    FieldsView,
    Ref,
    acquirer_ref,
    answers,
    fields_view,
    mask_pan,
    network_answer,
    network_fields,
    original_data,
    parse_ref,
    request_fields,
    reversal_fields,
    scrub,
    transmission_time,
    valid_f7,
    valid_stan,
)
from adapters.card.response_codes import APPROVALS, TABLE, UNCERTAIN, amount_held
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Refused, Request, Result
from switch.core.inflight import InFlight
from switch.core.link_metrics import LinkMetrics  # noqa: F401  (re-exported: the link and tests use it)
from switch.core.link_metrics import key as link_key

# Response codes this adapter produces itself (spec section 5).
RC_TOO_LATE = "68"  # no answer before the deadline
RC_INOPERATIVE = "91"  # no connection, or the connection died under the request
RC_MALFUNCTION = "96"  # the acquirer answered without field 39
RC_MAC = "A0"  # our answer to an 0800 of the acquirer whose MAC is missing or wrong

FINANCIAL_MTIS = frozenset({"0100", "0200", "0220"})


# --------------------------------------------------------------------------
# Metrics, without a metrics library: the switch wires these to Prometheus.

# The LinkMetrics (switch.core.link_metrics) counters of a card host link:
# ``requests`` (mti, response_code), ``timeouts`` (mti),
# ``late_answers`` (mti), ``lost_in_flight`` (mti), ``unavailable`` (mti),
# ``unmatched_answers`` (mti), ``reconnects`` (endpoint), ``echoes`` (endpoint),
# ``protocol_errors`` (endpoint), ``sign_on_failures`` (endpoint),
# ``reversals`` (mti 0420/0421, response_code; "timeout" or "lost" when
# unanswered), ``network_requests`` (endpoint, code: 0800s the acquirer sent),
# ``host_codes`` (mti, response_code: the acquirer's code, "other" outside
# the table of adapters.card.response_codes; answered: the terminal's),
# ``key_changes`` (endpoint, response_code), ``breaker_trips`` (endpoint),
# ``stan_collisions`` (mti), ``mac_failures`` (a message of the acquirer
# whose MAC was missing or wrong: by the MTI of the request it answers, else
# its own: 0800, or a late or unmatched answer's).
# Connection and breaker states are gauges: see
# ``HostLinkAcquirer.connection_states()`` and ``breaker_states()``.


# --------------------------------------------------------------------------
# Events the connection core reports to the I/O layer.

class Completed(msgspec.Struct):
    """A request or reversal has its outcome: resolve ``pending.token`` with it.

    ``how``: "answered", "timeout" (no answer by the deadline) or "lost" (the
    connection went away first): what the endpoint's :class:`Breaker` learns."""

    pending: Any
    outcome: Any  # Result for Kind.REQUEST, REVERSED/NOT_FOUND/Refused/RETRY for Kind.REVERSAL
    how: str = "answered"


class Late(msgspec.Struct):
    """An answer arrived after its deadline: logged, counted, dropped (its field 7
    and 38 kept: the reversal of a late approval names the host's auth code).
    ``acquirer_ref``: when it approved another amount than requested (a partial
    approval), the reference that says so (:func:`acquirer_ref` with the amount
    held): a strict host reverses that amount only."""

    mti: str
    stan: str
    response_code: str | None
    f7: str | None = None
    auth_code: str | None = None
    acquirer_ref: str | None = None
    approved: bool = False  # an approval of a request: a reversal recorded unmatched is reopened


class Unmatched(msgspec.Struct):
    """An answer that matches nothing we sent (or recently sent)."""

    mti: str
    stan: str | None
    reason: str


class SignedOn(msgspec.Struct):
    pass


class SignedOffByAcquirer(msgspec.Struct):
    """The acquirer signed off: no new requests on this connection until it
    signs on again, or we sign on ourselves at ``resume_at``."""

    resume_at: float


class KeyChange(msgspec.Struct):
    """The acquirer sent a key change (0800 70=101/16x).  The I/O layer hands
    ``fields`` (new key under the zone master key in 48 or 53/96: never log
    them) to its owner and writes :meth:`HostConnection.key_change_answer`."""

    code: str
    stan: str | None
    fields: dict


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
    SIGNED_OFF = "signed-off"  # by the acquirer: in-flight requests still complete
    SIGNING_OFF = "signing-off"
    CLOSED = "closed"


# The members the request path compares against, as module constants: in Python 3.11
# ``State.READY`` is read through the enum metaclass's ``__getattr__`` hook, several
# hundred instructions a read, where a module constant is a cached global.
_READY = State.READY
_SIGNED_OFF = State.SIGNED_OFF
_REQUEST = Kind.REQUEST
_REVERSAL = Kind.REVERSAL


_requests_keys: dict[str, dict[str, tuple]] = {}  # by request MTI, then response code (a dict: hostlink.pxd)


@cython.cfunc
@cython.locals(by_code=dict)
def _requests_key(mti: str, response_code: str) -> tuple:
    """The LinkMetrics key of ``requests`` (mti, response_code) and its hash (for add_hashed), one
    key object per pair, found by identity in the counters' dicts; kept by MTI, then by code."""
    by_code = _requests_keys.get(mti)
    if by_code is None:
        by_code = _requests_keys[mti] = {}  # the link's own request MTIs: a handful
    kept = by_code.get(response_code)
    if kept is None:
        kept = (key := link_key("requests", mti=mti, response_code=response_code), hash(key))
        if len(by_code) < 256:  # section-5 codes and the acquirer's: a few dozen
            by_code[response_code] = kept
    return kept


class HostConnection:
    """Protocol state of one connection to the acquirer: sign-on, echo,
    requests in flight with their deadlines.

    The I/O layer calls :meth:`connection_made` once the TCP connection is up
    and writes the sign-on it returns; :meth:`request` / :meth:`reversal`
    return the message to write; :meth:`receive` takes a decoded message;
    :meth:`poll` is called at :meth:`next_wakeup` (or any time later);
    :meth:`connection_lost` fails what is in flight.  Every method returns a
    list of events (and/or a message to write).

    ``resign_wait``: after the acquirer signs off, how long to wait for it to
    sign on again before we send our own sign-on on the same connection.
    """

    def __init__(
        self,
        stans: StanAllocator,
        *,
        acquirer_id: str,
        echo_interval: float = 30.0,
        network_timeout: float = 10.0,
        resign_wait: float = 30.0,
        endpoint: str = "",
        metrics: LinkMetrics | None = None,
        given_up: GivenUp | None = None,
    ) -> None:
        self.stans = stans
        self.acquirer_id = acquirer_id
        self.echo_interval = echo_interval
        self.network_timeout = network_timeout
        self.resign_wait = resign_wait
        self.endpoint = endpoint
        self.metrics = metrics if metrics is not None else LinkMetrics()
        self.state = State.CONNECTING
        # Keyed by STAN.  What is given up on goes to ``given_up`` (the link's, shared by its
        # connections: a late answer may come on the next connection), not the mux's memory.
        self.inflight: InFlight[str, Pending] = InFlight(late_memory=0)
        self.given_up = given_up if given_up is not None else GivenUp()
        self.last_received = 0.0
        self.resume_at: float | None = None
        self._echo: Pending | None = None

    # -- helpers -----------------------------------------------------------

    @cython.ccall
    @cython.locals(msg=dict, pending=Pending)
    def _register(self, kind: Kind, msg: dict, now: float, deadline: float,
                  rrn: str = "", terminal_id: str | None = None, token: Any = None) -> Pending:
        pending = new_pending(kind, msg["mti"], msg[11], msg[7], rrn, terminal_id, deadline, now, token,
                              msg.get(4), msg.get(3), msg.get(49), msg.get(42))
        self.inflight.add(pending.stan, pending, deadline)
        return pending

    @cython.ccall
    @cython.locals(pending=Pending)
    def _finish(self, pending: Pending) -> None:
        self.stans.release(pending.stan)
        if pending is self._echo:
            self._echo = None

    @cython.ccall
    def _stan_and_time(self, request: Request, wall: float) -> tuple[str, str]:
        """The switch-assigned host STAN and field 7, else our own."""
        host_stan, host_time = request.host_stan, request.host_time
        if host_stan is not None:
            if not valid_f7(host_time):
                raise ValueError(f"txn {request.txn_id}: host_time {host_time!r} "
                                 "is not MMDDhhmmss (host_stan is set)")
            try:
                return self.stans.claim(host_stan), host_time
            except StanInUse:
                self.metrics.inc("stan_collisions", mti=request.mti)
                raise
        return self.stans.allocate(), transmission_time(wall)

    def _sign_on(self, now: float, wall: float) -> dict:
        self.state = State.SIGNING_ON
        stan = self.stans.allocate()
        msg = network_fields(SIGN_ON, stan=stan, f7=transmission_time(wall))
        self._register(Kind.SIGN_ON, msg, now, now + self.network_timeout)
        return msg

    @property
    def ready(self) -> bool:
        return self.state is _READY

    # -- connection lifecycle ----------------------------------------------

    def connection_made(self, now: float, wall: float) -> dict:
        """The TCP connection is up: returns the sign-on (0800 70=001) to write."""
        if self.state is not State.CONNECTING:
            raise RuntimeError(f"connection_made in state {self.state.value}")
        self.last_received = now
        return self._sign_on(now, wall)

    def sign_off(self, now: float, wall: float) -> dict | None:
        """Start a graceful close: returns the sign-off (0800 70=002) to write,
        or None when not signed on.  New requests are refused from here on."""
        was_signed_on = self.state in (State.READY, State.SIGNED_OFF)
        if self.state is not State.CLOSED:
            self.state = State.SIGNING_OFF
        if not was_signed_on:
            return None
        stan = self.stans.allocate()
        msg = network_fields(SIGN_OFF, stan=stan, f7=transmission_time(wall))
        self._register(Kind.SIGN_OFF, msg, now, now + self.network_timeout)
        return msg

    def connection_lost(self, reason: str = "connection lost") -> list[Completed]:
        """The connection is gone: everything in flight gets an uncertain outcome.

        A request already written may have been approved: it completes with
        91 (acquirer inoperative), uncertain=True, so the switch reverses it.
        A reversal in flight is to be retried.
        """
        self.state = State.CLOSED
        events = []
        for pending in self.inflight.drain():
            self._finish(pending)
            if pending.kind is Kind.REQUEST or pending.kind is Kind.REVERSAL:
                self.given_up.add(pending)  # its answer may yet come, on the next connection
            if pending.kind is Kind.REQUEST:
                self.metrics.inc("lost_in_flight", mti=pending.mti)
                self.metrics.inc("requests", mti=pending.mti, response_code=RC_INOPERATIVE)
                events.append(Completed(pending, Result(
                    response_code=RC_INOPERATIVE, acquirer_ref=pending.ref, uncertain=True), "lost"))
            elif pending.kind is Kind.REVERSAL:
                self.metrics.inc("lost_in_flight", mti=pending.mti)
                self.metrics.inc("reversals", mti=pending.mti, response_code="lost")
                events.append(Completed(pending, RETRY, "lost"))
        self._echo = None
        return events

    # -- outgoing ----------------------------------------------------------

    @cython.ccall
    @cython.locals(msg=dict)
    def request(self, request: Request, now: float, wall: float, timeout: float,
                token: Any = None) -> tuple[dict, Pending]:
        """Register an authorization/financial/advice message; returns it with
        its Pending (cancel with :meth:`cancel` if it could not be written).
        :class:`StanInUse` when the switch-assigned STAN is in flight."""
        if self.state is not _READY:
            raise RuntimeError(f"request on a connection in state {self.state.value}")
        if request.mti not in FINANCIAL_MTIS:
            raise ValueError(f"not a host request MTI: {request.mti}")
        stan, f7 = self._stan_and_time(request, wall)
        msg = request_fields(request, stan, f7, self.acquirer_id)
        # Fields 37 and 41 are the request's RRN and terminal ID: read from the message just built.
        pending = self._register(_REQUEST, msg, now, now + timeout, msg[37], msg[41], token)
        return msg, pending

    def reversal(self, request: Request, *, now: float, wall: float, timeout: float,
                 token: Any = None) -> tuple[dict, Pending]:
        """Register the 0420 (0421 for a repeat) for ``request.original``."""
        if self.state is not State.READY:
            raise RuntimeError(f"reversal on a connection in state {self.state.value}")
        if request.original is None:
            raise ValueError("a reversal needs request.original")
        stan, f7 = self._stan_and_time(request, wall)
        try:
            msg = reversal_fields(request, stan=stan, f7=f7, acquirer_id=self.acquirer_id)
        except Exception:
            self.stans.release(stan)
            raise
        pending = self._register(Kind.REVERSAL, msg, now, now + timeout, msg[37], request.terminal_id, token)
        ref = parse_ref(request.original.acquirer_ref)
        pending.held_known = request.original.auth_code is not None or (ref is not None and ref.approved is not None)
        return msg, pending

    def cancel(self, pending: Pending) -> None:
        """Forget a registered message that was never written."""
        if self.inflight.peek(pending.stan) is pending:
            self.inflight.pop(pending.stan)
            self._finish(pending)

    # -- incoming ----------------------------------------------------------

    @cython.ccall
    def receive(self, msg: Any, now: float, authentic: bool = True) -> list:
        """A decoded message from the acquirer.

        ``authentic=False``: the link MACs its messages and this one's MAC is
        missing or wrong (the I/O layer checked it).  Such a message changes
        nothing it would otherwise: an answer to a request is an uncertain
        outcome, never an approval (91, uncertain, as when the connection
        breaks under the request: the switch reverses); a reversal is to be
        retried; the acquirer's own 0800 is answered A0 and not acted on.
        """
        self.last_received = now
        mti = msg.mti
        if mti == "0800":
            if not authentic:
                self.metrics.inc("mac_failures", mti=mti)
                return [Send(network_answer(msg, RC_MAC))]
            return self._network_request(msg, now)
        events = self._match(msg, mti, authentic)
        if not authentic and events and type(events[0]) in (Late, Unmatched):
            # Late or unmatched as well: counted under its own MTI (it answers nothing in flight).
            self.metrics.inc("mac_failures", mti=mti)
        return events

    @cython.ccall
    @cython.locals(pending=Pending)
    def _match(self, msg: Any, mti: str, authentic: bool) -> list:
        """An answer: to what is in flight (Completed, and the rest), late, or unmatched.

        An answer is a request's when its MTI fits and the fields it repeats
        are the ones sent (:func:`mismatch`); anything else answers nothing we
        sent: logged and counted, and the request still times out (and is
        reversed)."""
        stan = field_of(msg, 11)
        if stan is None:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, None, "no field 11")]
        pending = self.inflight.peek(stan)
        if pending is None:
            return self._late(msg, mti, stan, authentic)
        why = mismatch(pending, msg, mti)
        if why is not None:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, why)]
        # Every field is read before anything changes: a lazily decoded message
        # may raise DecodeError on access, and then the pending stays in flight
        # until the I/O layer closes the connection (and fails it uncertain).
        events = self._answered(pending, msg) if authentic else self._not_authentic(pending)
        self.inflight.pop(stan)
        self._finish(pending)
        return events

    def _late(self, msg: Any, mti: str, stan: str, authentic: bool) -> list:
        """An answer under a STAN with nothing in flight: to a message the link gave up on
        (on this connection or an earlier one), else unmatched.  One with a missing or
        wrong MAC changes nothing: its field 38 and amount are not the acquirer's word,
        and the acquirer's own late answer may still come."""
        late = self.given_up.get(stan)
        if late is None:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, "no request in flight with this STAN")]
        why = mismatch(late, msg, mti)
        if why is not None:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, f"late: {why}")]
        if not authentic:
            self.metrics.inc("unmatched_answers", mti=mti)
            return [Unmatched(mti, stan, "late answer with a missing or wrong MAC: not taken")]
        rc, amount, auth_code, rrn = msg.get(39), msg.get(4), msg.get(38), msg.get(37)
        currency = msg.get(49)
        self.given_up.forget(stan)
        self.metrics.inc("late_answers", mti=late.mti)
        ref = None
        if late.kind is Kind.REQUEST:
            held = amount_held(rc, requested=late.amount, approved=amount, currency=late.currency,
                               host_currency=currency)
            if held is not None:
                ref = acquirer_ref(stan, late.f7, rrn or late.rrn, rc, *held)
        # Field 7 as sent: the answer need not repeat it (and when it does, it is the same).
        approved = late.kind is Kind.REQUEST and rc in APPROVALS and rc not in UNCERTAIN
        return [Late(mti, stan, rc, late.f7, auth_code, ref, approved)]

    def _network_request(self, msg: Any, now: float) -> list:
        """An 0800 the acquirer sent: echo, sign-off, sign-on, key change."""
        code = msg.get(70)
        self.metrics.inc("network_requests", endpoint=self.endpoint, code=str(code))
        if code == ECHO:
            return [Send(network_answer(msg))]
        if code == SIGN_OFF:
            events: list = [Send(network_answer(msg))]
            if self.state in (State.READY, State.SIGNING_ON):
                self.state = State.SIGNED_OFF
                self.resume_at = now + self.resign_wait
                events.append(SignedOffByAcquirer(self.resume_at))
            return events
        if code == SIGN_ON:
            events = [Send(network_answer(msg))]
            if self.state is State.SIGNED_OFF:
                self.state = State.READY
                self.resume_at = None
                events.append(SignedOn())
            return events
        if code in KEY_CHANGE:
            return [KeyChange(code, msg.get(11), dict(msg.fields()))]
        return [Send(network_answer(msg, RC_INVALID))]

    def key_change_answer(self, event: KeyChange, accepted: bool) -> dict:
        """The 0810 to a key change: 00 once the owner installed the key, 96
        otherwise (never 00 for a key nobody took)."""
        rc = RC_APPROVED if accepted else RC_SYSTEM
        self.metrics.inc("key_changes", endpoint=self.endpoint, response_code=rc)
        return network_answer(fields_view({"mti": "0800", **event.fields}), rc)

    def _not_authentic(self, pending: Pending) -> list:
        """The answer to ``pending`` came with a missing or wrong MAC."""
        self.metrics.inc("mac_failures", mti=pending.mti)
        kind = pending.kind
        if kind is Kind.REQUEST:
            self.metrics.inc("requests", mti=pending.mti, response_code=RC_INOPERATIVE)
            return [Completed(pending, Result(response_code=RC_INOPERATIVE, acquirer_ref=pending.ref,
                                              uncertain=True))]
        if kind is Kind.REVERSAL:
            self.metrics.inc("reversals", mti=pending.mti, response_code="mac")
            return [Completed(pending, RETRY)]
        if kind is Kind.SIGN_ON:
            self.metrics.inc("sign_on_failures", endpoint=self.endpoint)
            return [Close("sign-on answered with a missing or wrong MAC")]
        if kind is Kind.SIGN_OFF:
            return [Close("signed off")]
        return []  # an echo: the link is alive, whatever the MAC says

    @cython.ccall
    @cython.locals(pending=Pending, kept=tuple)
    def _answered(self, pending: Pending, msg: Any) -> list:
        rc = field_of(msg, 39)
        kind = pending.kind
        if kind is _REQUEST:
            result = result_from_answer(msg, pending)
            # The code the terminal is answered; the host's own, when another, counted beside it.
            kept = _requests_key(pending.mti, result.response_code)
            self.metrics.add_hashed(kept[0], kept[1], 1)
            if result.acquirer_code is not None:
                self.metrics.inc("host_codes", mti=pending.mti, answered=result.response_code,
                                 response_code=result.acquirer_code if result.acquirer_code in TABLE else "other")
            return [Completed(pending, result)]
        if kind is _REVERSAL:
            self.metrics.inc("requests", mti=pending.mti, response_code=rc or "none")
            self.metrics.inc("reversals", mti=pending.mti, response_code=rc or "none")
            return [Completed(pending, reversal_outcome(rc, pending.held_known, pending.mti))]
        if kind is Kind.SIGN_ON:
            if rc == "00" and self.state is State.SIGNING_ON:
                self.state = State.READY
                self.resume_at = None
                return [SignedOn()]
            if rc == "00" and self.state is State.READY:
                return []  # the acquirer signed on first
            self.metrics.inc("sign_on_failures", endpoint=self.endpoint)
            return [Close(f"sign-on refused with 39={rc}")]
        if kind is Kind.SIGN_OFF:
            return [Close("signed off")]
        return []  # echo answered: last_received already moved on

    # -- time --------------------------------------------------------------

    def poll(self, now: float, wall: float) -> list:
        """Expire what is past its deadline; send an echo when idle; sign on
        again when the acquirer signed off and did not come back."""
        events: list = []
        for pending in self.inflight.expire(now):
            self._finish(pending)
            self.given_up.add(pending)
            kind = pending.kind
            if kind is Kind.REQUEST:
                self.metrics.inc("timeouts", mti=pending.mti)
                self.metrics.inc("requests", mti=pending.mti, response_code=RC_TOO_LATE)
                events.append(Completed(pending, Result(
                    response_code=RC_TOO_LATE, acquirer_ref=pending.ref, uncertain=True), "timeout"))
            elif kind is Kind.REVERSAL:
                self.metrics.inc("timeouts", mti=pending.mti)
                self.metrics.inc("reversals", mti=pending.mti, response_code="timeout")
                events.append(Completed(pending, RETRY, "timeout"))
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
        if closing:
            return events
        # The STAN may come from the switch's stan_source, which can fail: the
        # expired requests above must still reach their callers, so a failure
        # here closes the connection instead of raising.
        try:
            if self.state is State.SIGNED_OFF and self.resume_at is not None and now >= self.resume_at:
                events.append(Send(self._sign_on(now, wall)))
            elif (self.state is State.READY and self._echo is None
                    and now - self.last_received >= self.echo_interval):
                stan = self.stans.allocate()
                msg = network_fields(ECHO, stan=stan, f7=transmission_time(wall))
                self._echo = self._register(Kind.ECHO, msg, now, now + self.network_timeout)
                self.metrics.inc("echoes", endpoint=self.endpoint)
                events.append(Send(msg))
        except Exception as exc:
            events.append(Close(f"no STAN for a network message: {type(exc).__name__}: {exc}"))
        return events

    @cython.ccall
    def next_wakeup(self) -> float | None:
        """When :meth:`poll` has something to do next (None: nothing scheduled)."""
        wake = self.inflight.next_deadline()
        if self.state is _READY and self._echo is None:
            echo_at = self.last_received + self.echo_interval
            wake = echo_at if wake is None or echo_at < wake else wake  # min(), without calling it
        elif self.state is _SIGNED_OFF and self.resume_at is not None:
            wake = self.resume_at if wake is None else min(wake, self.resume_at)
        return wake
