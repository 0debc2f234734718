"""The transaction engine: every rule of the terminal interface, without I/O.

Like h11's connection object, it is fed events and answers with commands,
here in the shape of a generator per request: :meth:`Engine.handle` returns
a generator that yields commands (:mod:`switch.core.commands`: a journal
operation, a call to an acquirer, a wait for the request in flight under the
same key) and is sent each command's result, until it returns the
:class:`~switch.core.commands.Answer` for the terminal.  The clock is a
parameter.  The asyncio driver (``switch.io.service``) executes the commands
for real; the deterministic simulation executes them against simulated
acquirers and a virtual clock, thousands of seeds at a time, and checks
that nothing is lost or doubled.

Request life (spec sections 3, 6, 6.1): decode → check → key (41, 11, 7)
in flight? → classify and route → journal (as ``sent`` when it goes straight
to its acquirer, with the host STAN and field 7 it will carry) → acquirer(s)
within the terminal's budget → journal the outcome with the exact response →
answer.  Uncertain outcomes are queued for reversal (:mod:`switch.core.reversal`)
before the terminal hears of them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Generator

import cython

from native.iso8583 import DecodeError, build_tlv48, dialect, parse_tlv48

from switch.core import (completion, drain, elsewhere, network, pipeline, refunds, rejections, security, settling,
                         uploads)
from switch.core.acquirer import Request, Result, order_number
from switch.core.commands import UNANSWERED, Answer, Call, Flight, Op, Overrun, Stopping, Wait, new_op
from switch.core.host_stans import NO_REF
from switch.core.limits import TerminalSlots
from switch.core.messages import (BALANCE, REFUND, RRNs, Rejection, base_mti, build_request, build_response,
                                  check_currency, check_original, check_topup, content_digest, is_request, issuer_icc,
                                  original_key, pan_of, payment_kind, token_pan)
from switch.core.network import NetworkAnswers
from switch.core.pipeline import CONFLICT, LATE, REDO, RENEW, SAME, goes_direct, is_inquiry
from switch.core.rejections import screen
from switch.core.reversal import ReversalQueue, about
from switch.core.routing import Router, expand_terminals, luhn_ok
from switch.core.states import RECEIVED, SENT, advance
from switch.core.undelivered import Answering
from switch.core.uploads import key_of as upload_key_of
from switch.core.vas import VasHook
from switch.journal import JournalError, JournalUncertain, StaleState, TxnRecord, digest_key, pan_protect
from switch.journal.reversal_card import seal_in_flight

log = logging.getLogger("payswitch")

_BUDGET_RESERVE = 0.05  # share of response_timeout kept for journaling and answering
_MIN_ATTEMPT = 0.05  # seconds: less than this left, no further acquirer is tried

# MTI digit 2 (message class) → metrics label.
_MCLASS = {"1": "auth", "2": "financial", "4": "reversal", "5": "settlement", "8": "network"}

Gen = Generator[Any, Any, Any]


class NullMetrics:
    """The metrics an engine reports, swallowed (the simulation, unit tests)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class Engine:
    """The switch's rules and shared state: requests in flight, routes, reversals.

    ``healthy(acquirer)`` tells whether an acquirer has a usable link (fallback
    skips those without); ``stan_acquirers`` names the acquirers whose links
    take switch-assigned STANs (card host links).  ``on_flight_done(flight)``
    is called when a request ends, so the driver can wake what waits on it;
    ``on_reversal()`` when a reversal was queued.
    """

    def __init__(
        self,
        cfg,
        *,
        key: bytes,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
        healthy: Callable[[str], bool] = lambda name: True,
        stan_acquirers: frozenset[str] | set[str] = frozenset(),
        token_keys: dict[str, tuple[int, bytes]] | None = None,
    ) -> None:
        self.key = key  # the journal secret: PAN hashes and content digests use keys derived from it
        self.digest_key = digest_key(key)
        self.clock = clock
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.healthy = healthy
        self.rrns = RRNs(clock)
        # The journal keeps every response in terminal-87, whatever the listener
        # spoke: a retransmission may come in on another listener.
        self.term = dialect("terminal-87")
        self.inflight: dict[tuple[str, str, str], Flight] = {}
        # Several worker processes share the journal (serve --workers): a request
        # journaled but in no flight here may be in flight in another one.
        self.shared_journal = False
        self.draining = False  # SIGTERM: new requests are not started (switch.core.drain)
        self.completing: set[int] = set()  # pre-authorizations with a completion in flight
        self.network_answers = NetworkAnswers()  # 0810s for retransmitted 0800s (section 6)
        self.on_flight_done: Callable[[Flight], None] = _ignore
        self.slots = TerminalSlots()  # requests open per terminal ID (issue 8)
        self.reversals = ReversalQueue(self, stan_acquirers)
        self.vas = VasHook(self, token_keys)  # value-added services, customer tokens (switch.core.vas)
        self.answering = Answering()  # MACed answers being given, by key (switch.core.undelivered)
        self.apply(cfg)

    def apply(self, cfg) -> None:
        """Take a (re)loaded configuration: terminals, merchants, routes, timeouts."""
        terminals = {}
        for merchant in cfg.merchants:
            for spec in merchant.terminals:
                for tid in expand_terminals(spec):
                    terminals[tid] = merchant.id
        self.router = Router(cfg.routes)
        self.cfg = cfg
        self.terminal_limit = getattr(cfg, "max_in_flight_per_terminal", 256)
        self.terminals = terminals
        self.merchants = {mc.id: mc for mc in cfg.merchants}
        self.acquirer_cfg = {a.name: a for a in cfg.acquirers}
        self.security = security.TerminalSecurity(cfg.security, getattr(self, "security", None))
        self.vas.apply(cfg)

    # -- a request -------------------------------------------------------------------

    def handle(self, body: bytes, codec) -> Gen:
        """The generator of one terminal request (the message without framing)."""
        refusal = digest = None
        try:
            msg = codec.decode(body)
        except DecodeError as e:
            self.metrics.format_error()
            log.info("format error: %s", e)
            msg = rejections.readable(self, body, codec)  # its key readable: journaled under it
            if msg is None:
                return Answer("unknown", "other", "30", rejections.format_error(self, body, codec))
            refusal = Rejection("30", str(e))
            digest = rejections.raw_digest(self, base_mti(msg.mti), body)
        mti = msg.mti
        if not is_request(mti):  # an answer is never answered (section 3 of the docs)
            log.info("%s from %s is a response, not a request: not answered", mti, msg.get(41))
            return Answer("unknown", "other", "", b"")
        mti = base_mti(mti)
        mclass = _MCLASS.get(mti[1], "other")
        tid = msg.get(41)
        if tid is not None and not self.slots.take(tid, self.terminal_limit):
            self.metrics.terminal_limit()
            return Answer("unknown", mclass, "91", codec.encode(build_response(msg, "91", self.rrns.next())))
        try:
            if refusal is None:
                kind, code, out = yield from self.security.dispatch(self, msg, mti, codec, body)  # spec 8, then _dispatch
            else:
                kind, code, out = yield from self._dispatch(msg, mti, codec, refusal, digest)
        except JournalError as e:
            # Not a bug: the journal cannot record (disk full, I/O error, closed), and
            # nothing unrecorded goes to an acquirer.  One line per request, no traceback.
            log.error("%s from terminal %s answered 96: the journal could not record it: %s"
                      " (runbook: \"Journal failing\")", msg.mti, msg.get(41), e)
            kind, code = "unknown", "96"
            out = codec.encode(build_response(msg, "96", self.rrns.next()))
        except Exception:
            self.metrics.internal_error()
            log.exception("internal error on %s from terminal %s", msg.mti, msg.get(41))
            kind, code = "unknown", "96"
            out = codec.encode(build_response(msg, "96", self.rrns.next()))
        finally:
            if tid is not None:
                self.slots.release(tid)
        return Answer(kind, mclass, code, out)

    def _reply(self, msg, code: str, codec, kind: str = "unknown") -> tuple[str, str, bytes]:
        """An answer the switch gives without journaling it."""
        return kind, code, codec.encode(build_response(msg, code, self.rrns.next()))

    @cython.locals(flight=Flight)
    def _dispatch(self, msg, mti: str, codec, refusal=None, digest: str | None = None) -> Gen:
        """``refusal``, ``digest``: an undecodable request's (switch.core.rejections.readable)."""
        if refusal is None:
            merchant, refusal = screen(self, msg, mti)
        else:
            merchant = self.terminals[msg[41]]
        if refusal is not None and not rejections.journaled(msg, mti, merchant):
            log.info("rejected %s: %s (%s)", msg.mti, refusal.code, refusal.reason)
            if mti == "0800" and merchant is not None:
                return (yield from network.answer(self, msg, refusal.code, codec))
            return self._reply(msg, refusal.code, codec, "network" if mti == "0800" else "unknown")
        if mti == "0800":
            return (yield from network.answer(self, msg, "00", codec))

        key = (msg[41], msg[11], msg[7])
        if self.network_answers.holds(key, self.clock(), self.cfg.retransmission_window):
            self.metrics.retransmission("conflict")  # section 6: the key of an 0800 (switch.core.network)
            return self._reply(msg, "94", codec)
        digest = digest or content_digest(msg, self.digest_key, mti)
        flight = self.inflight.get(key)
        if flight is not None:
            # Sections 6 and 6.1: a retransmission or repeat of a request in flight
            # shares its answer; other content under the same key is a 94.
            if flight.digest != digest or flight.mti != mti:
                self.metrics.retransmission("conflict")
                return self._reply(msg, "94", codec)
            self.metrics.retransmission("same")
            answer = yield Wait(flight)  # in the dialect of the original's listener
            return answer.kind, answer.code, self._as_sent(answer.body, codec, flight.codec)
        if self.draining and drain.refuses(mti):
            return (yield from drain.answer(self, msg, mti, digest, key, codec))
        flight = self.inflight[key] = Flight(key, digest, mti, codec)
        try:
            try:
                result = yield from self._transaction(msg, mti, digest, merchant, flight, codec, refusal)
                if type(result) is not tuple:  # its authorization, run here: one generator fewer on its way
                    result = yield from result
            except Exception:
                yield from self._reversal_left(flight, merchant)
                raise
            yield from self._reversal_left(flight, merchant)
            flight.answer = Answer(result[0], "", result[1], result[2])
            return result
        except BaseException as e:
            flight.error = e if isinstance(e, Exception) else RuntimeError("the original request was abandoned")
            raise
        finally:
            del self.inflight[key]
            if flight.kind is not None:
                self.metrics.request_ended(flight.kind)
            flight.done = True
            self.on_flight_done(flight)

    def _reversal_left(self, flight: Flight, merchant: str) -> Gen:
        """A reversal came while this flight was a retransmission, a rejection, or
        anything but an authorization waiting for its answer: undo what the
        journal holds under its key.

        Returns what to run (``yield from``): nothing, an empty tuple, for
        almost every request, which then costs no generator."""
        if flight.reverse_requested and not flight.reverse_honoured:
            flight.decided = True
            tid, stan, when = flight.key
            return self.reversals.reverse_named(tid, merchant, flight.mti, stan, when)
        return ()

    def _classify(self, msg, tlv) -> tuple[str, Any, str | None]:
        pan = pan_of(msg)
        space = payment_kind(msg, pan, tlv)
        if space == "wallet":
            route = self.router.for_code(tlv["BC"], msg)
            if route is None:
                raise Rejection("12", "no wallet for this payment code")
            if self.acquirer_cfg[route.acquirers[0]].type != "card":
                return "wallet", route, None
            # A card-scheme QR code (e.g. prefix 62) goes to the card network as a token PAN
            # in field 2 (22 says it was scanned): hashed and sealed for its reversal as a card.
            return "wallet", route, token_pan(tlv["BC"])
        if not 8 <= len(pan) <= 19:
            raise Rejection("14", f"a card number has 8 to 19 digits, got {len(pan)}")
        route = self.router.for_pan(pan, msg)
        if route is None:
            raise Rejection("14", "no route for this card number")
        if route.kind == "card" and not luhn_ok(pan):
            raise Rejection("14", "card number fails the Luhn check")
        if route.kind == "citycard" and "CC" not in tlv and msg[3][:2] != BALANCE:
            raise Rejection("30", "city-card payment without field 48 tag CC")
        return route.kind, route, pan

    @cython.locals(flight=Flight, mti=str)
    def _transaction(self, msg, mti: str, digest: str, merchant: str, flight: Flight, codec, rejection=None) -> Gen:
        """Journal the request, then the work of its message type (``rejection``: the
        switch refused it already, switch.core.rejections: its answer is journaled).

        Returns the answer, or the generator of an authorization, for the caller to run."""
        tlv: dict = {}
        kind, route, pan, refund_daily_max = "unknown", None, None, None
        try:
            if rejection is not None:
                raise rejection
            check_currency(msg, mti)  # before routing; a 30 journaled like the rejections below
            if 90 in msg and mti in ("0400", "0220"):
                check_original(msg[90])  # a 30 journaled like the rejections below (section 6)
            if 48 in msg:
                try:
                    tlv = parse_tlv48(msg[48])
                except DecodeError as e:
                    raise Rejection("30", f"field 48: {e}") from None
            by_reference = mti == "0220" and 90 in msg and not pan_of(msg) and "BC" not in tlv
            if mti in ("0100", "0200", "0220") and not by_reference:  # a completion: its pre-authorization's card
                kind, route, pan = completion.classify(self, msg, tlv) if 90 in msg else self._classify(msg, tlv)
                check_topup(msg, kind)
            if mti == "0200" and msg[3][:2] == REFUND:
                refund_daily_max = refunds.daily_max(self, msg, merchant)
        except Rejection as r:
            rejection = r
        if mti == "0400":
            kind = "card"  # until the original says otherwise
        flight.kind = kind
        self.metrics.request_started(kind)
        masked, pan_hash = pan_protect(pan, self.key) if pan else (None, None)
        direct = rejection is None and goes_direct(mti, kind, 90 in msg, route is not None)
        first = route.acquirers[0] if route else None
        ref = self.reversals.stans.at_once(first) if direct else NO_REF
        host_stan, host_t = ref if ref is not None else (yield from self.reversals.host_ref(first))
        fresh = TxnRecord(
            terminal_id=msg[41],
            merchant_id=msg.get(42) or merchant,
            mti=mti,
            stan=msg[11],
            transmission_time=msg[7],
            processing_code=msg.get(3),
            amount=int(msg[4]) if 4 in msg else None,
            currency=msg.get(49),
            kind=kind if kind != "unknown" else "card",
            acquirer=first,
            pan_masked=masked,
            pan_hash=pan_hash,
            content_digest=digest,
            order_ref=order_number(msg[41], msg[7], msg[11]) if kind == "wallet" else None,
            state=SENT if direct else RECEIVED,
            host_stan=host_stan, host_time=host_t,
            local_time=msg.get(12),
            local_date=msg.get(13),
            entry_mode=msg.get(22),
            customer_token=self.vas.token(merchant, kind, pan) if kind in ("card", "citycard") else None,
            # Sealed for the reversal that a crash while it is at the acquirer leads to.
            card_sealed=seal_in_flight(self.key, (msg[41], msg[11], msg[7]), digest, pan)
            if direct and pan and kind != "citycard" else None,
            upload_key=upload_key_of(self.key, msg, mti, kind, pan, tlv) if rejection is None else None,
        )
        if refund_daily_max is None:
            rec, created = yield new_op("insert", (fresh,), {})
        else:
            rec, created, rejection = yield from refunds.insert(self, fresh, refund_daily_max)
        if not created:
            rec, verdict = yield from elsewhere.verdict_of(self, rec, mti, digest)
            if verdict == REDO and refund_daily_max is not None:
                # A refund journaled and never answered counts against the day it is
                # sent in (its record's created_at says another, maybe yesterday):
                # inserted afresh, checked and counted in one journal step.
                verdict = RENEW
            if verdict == RENEW:
                log.info("rrn %s: key used again after its window, as an unconfirmed advice or as a refund "
                         "never answered; new request", rec.rrn, **about(rec))
                yield Op("retire", rec.id)
                if refund_daily_max is None:
                    rec, created = yield Op("insert", fresh)
                else:  # a new refund: counted against the day's limit afresh
                    rec, created, rejection = yield from refunds.insert(self, fresh, refund_daily_max)
                if not created:  # someone else took the key meanwhile
                    verdict = CONFLICT
            if not created:
                if verdict != REDO:
                    return self._retransmission(msg, rec, verdict, codec)
                log.info("rrn %s: %s journaled but never answered; handled again", rec.rrn, msg.mti, **about(rec))
                flight.budget_from = self.clock()
        flight.txn_id = rec.id
        if rejection is not None:
            return (yield from self._answer_self(msg, rec, rejection, codec, kind))
        if mti == "0400":
            return (yield from self._reversal(msg, rec, codec))
        if mti == "0500":
            return (yield from settling.settlement(self, msg, rec, merchant, codec))
        if mti == "0220" and 90 in msg:
            return (yield from completion.complete(self, msg, rec, kind, pan, pan_hash, tlv, flight, codec))
        if mti == "0220" and kind != "citycard":
            refused = Rejection("30", "card 0220 without field 90")
            return (yield from self._answer_self(msg, rec, refused, codec, kind))
        yield from self.vas.before(msg, rec, merchant, kind, tlv, flight)  # coupons: may lower field 4
        request = build_request(msg, txn_id=rec.id, kind=kind, rrn=rec.rrn, pan=pan, tlv=tlv, mti=mti)
        return self._authorize(msg, rec, route.acquirers, request, flight, codec, kind)

    def _retransmission(self, msg, rec: TxnRecord, verdict: str, codec) -> tuple[str, str, bytes]:
        """Sections 6 and 6.1: the original answer, 94, or 96 for one that died in flight."""
        if verdict in (CONFLICT, LATE):
            self.metrics.retransmission("conflict" if verdict == CONFLICT else "late")
            return self._reply(msg, "94", codec, rec.kind)
        self.metrics.retransmission("same")
        if verdict == SAME:
            return rec.kind, rec.response_code or "??", self._as_sent(rec.response, codec)
        return rec.kind, "96", codec.encode(build_response(msg, "96", rec.rrn))

    def _finish(self, rec: TxnRecord, resp: dict, codec, expect: str | None, changes: dict) -> tuple[Op, bytes]:
        """The journal operation of the outcome with the exact response and ``changes``, to yield
        before the terminal sees it (``expect``: only while the record is in that state, else
        StaleState), and the answer in ``codec``.  A C call (engine.pxd), not a generator."""
        body = self.term.encode(resp)
        out = body if codec is self.term else codec.encode(resp)
        columns = {"response": body, "response_code": resp[39]}
        columns.update(changes)
        return new_op("store", (rec.id, expect), columns), out

    def _as_sent(self, body: bytes, codec, spoken=None) -> bytes:
        """A response encoded by ``spoken`` (default terminal-87, as journaled) in the
        dialect of the listener asking."""
        spoken = self.term if spoken is None else spoken
        if codec is spoken or not body:
            return body
        stored = spoken.decode(body)
        return codec.encode({"mti": stored.mti, **stored.fields()})

    def _answer_self(self, msg, rec: TxnRecord, r: Rejection, codec, kind: str) -> Gen:
        log.info("rrn %s: %s %s (%s)", rec.rrn, msg.mti, r.code, r.reason, **about(rec))
        resp = build_response(msg, r.code, rec.rrn)
        op, out = self._finish(rec, resp, codec, None, {"state": advance(rec.state, "reject")})
        yield op
        return kind, r.code, out

    # -- authorization ---------------------------------------------------------------

    def _budget_end(self, rec: TxnRecord, flight: Flight) -> float:
        """When the acquirers must have answered (section 6: the terminal within response_timeout
        of the request, the one being handled: a retransmission handled again starts afresh)."""
        return max(rec.created_at, flight.budget_from) + self.cfg.response_timeout * (1 - _BUDGET_RESERVE)

    @cython.locals(flight=Flight)
    def _authorize(
        self, msg, rec: TxnRecord, acquirers: list[str], request: Request, flight: Flight, codec, pay_kind: str,
        **first_changes: Any,
    ) -> Gen:
        """Send to the acquirers in order; a 91 without sending falls through to the next."""
        state = rec.state
        if state != SENT:
            state = advance(state, "send")
        result: Result | None = None
        used = None
        # Section 6: the terminal is answered within response_timeout of its
        # request, however many acquirers the route falls through.
        budget_end = self._budget_end(rec, flight)
        pin = self.security.pin(msg, request)  # spec 8: field 52 goes to each acquirer under its ZPK
        for index, name in enumerate(acquirers):
            remaining = budget_end - self.clock()
            if result is not None and remaining < _MIN_ATTEMPT:
                break  # no time left to try the next one: answer what we have
            if index + 1 < len(acquirers) and not self.healthy(name):
                continue
            changes, first_changes = first_changes, {}  # first_changes: this call's own dict
            try:
                if name != rec.acquirer or (rec.host_stan is None and name in self.reversals.stan_acquirers):
                    changes["acquirer"] = name
                    changes["host_stan"], changes["host_time"] = yield from self.reversals.host_ref(name)
                if rec.state != state:
                    changes["state"] = state
                    if pay_kind != "citycard" and request.pan and rec.card_sealed is None:
                        changes["card_sealed"] = seal_in_flight(
                            self.key, (rec.terminal_id, rec.stan, rec.transmission_time), rec.content_digest,
                            request.pan,
                        )
                if changes:
                    rec = yield new_op("update", (rec.id,), changes)
            except Exception:
                if result is not None:
                    break  # a fallback we cannot journal is not tried: answer what we have
                if rec.state == SENT:
                    # Journaled as sent, but it never left: record the 96 it gets.
                    yield from self.reversals.strand(rec, rec.acquirer, None, reverse=False, event="answer")
                raise
            request.host_stan, request.host_time = rec.host_stan, rec.host_time
            used = name
            if pin is not None and (refused := (yield from pin.give(request, name, rec.rrn))) is not None:
                result = refused  # no PIN for this acquirer: 55 (or 96, our configuration), never sent
                break
            timeout = min(self.acquirer_cfg[name].timeout, max(remaining, _MIN_ATTEMPT))
            started = self.clock()
            try:
                result = yield Call(name, request, timeout)
            except Stopping:
                log.warning("%s: rrn %s given up, the switch is stopping; reversing", name, rec.rrn, **about(rec))
                result = Result(response_code="68", uncertain=True)
            except Overrun:
                self.metrics.internal_error()
                log.error("%s overran its %.1f s deadline on rrn %s; reversing", name, timeout, rec.rrn, **about(rec))
                result = Result(response_code="68", uncertain=True)
            except JournalError as e:
                # Not a bug: the adapter journals as it goes (a wallet's order state) and the
                # journal refused; what the acquirer did is not recorded: 96, and reversed.
                log.error("%s: the journal could not record its call on rrn %s: %s; answered 96 and reversing"
                          " (runbook: \"Journal failing\")", name, rec.rrn, e, **about(rec))
                result = Result(response_code="96", uncertain=True)
            except Exception:
                self.metrics.internal_error()
                log.exception("%s failed on rrn %s; reversing", name, rec.rrn, **about(rec))
                result = Result(response_code="96", uncertain=True)
            uncertain, answered = result.uncertain, result.response_code
            self.metrics.acquirer_answered(name, "uncertain" if uncertain else answered, self.clock() - started)
            if not (answered == "91" and not uncertain):
                break
        assert result is not None and used is not None
        if pin is not None:
            pin.forget(request)  # the PIN block is never kept past the call
        offline = pipeline.is_offline_advice(request)  # a module attribute: tests put a bug there
        undo = not offline and not is_inquiry(request.processing_code)  # may have moved money
        uncertain, answered = result.uncertain, result.response_code  # the answer used (a refused PIN's too)
        reverse = uncertain and undo
        code = answered
        flight.reverse_honoured = flight.reverse_requested
        if flight.reverse_requested:
            # Section 6.1: the terminal reversed it while it was at the acquirer:
            # never answered 00, and undone there if it was approved anyway.
            code = "68"
            reverse = undo and (reverse or answered == "00")
        if uncertain and offline:
            log.warning("rrn %s: offline advice not confirmed by %s; the terminal uploads it again "
                        "(the centre counts it once per card and counter)", rec.rrn, used, **about(rec))
        if result.acquirer_code is not None:  # the journal's acquirer_ref keeps the code too
            log.log(logging.WARNING if reverse else logging.INFO, "rrn %s: %s answered %s; the terminal gets %s%s",
                    rec.rrn, used, result.acquirer_reason or result.acquirer_code, code,
                    " and the acquirer a reversal" if reverse else "", **about(rec))
        event = "uncertain" if reverse else "unconfirmed" if uncertain else "answer"
        changes = {"state": advance(state, event), "auth_code": result.auth_code, "acquirer_ref": result.acquirer_ref}
        if rec.card_sealed is not None and not self.cfg.card_retention:
            # The journal keeps an approval's card for a terminal's 0400 that does not
            # repeat it (ReversalQueue.sweep forgets it after card_retention); unless 0.
            changes["card_sealed"] = None
        if reverse:
            changes.update((yield from self.reversals.start_fields(used, rec.id, request.pan)))
        icc = None
        if result.icc and code == answered:  # the issuer's data goes with its own answer only
            try:
                icc = issuer_icc(result.icc)  # section 3: only the issuer's own EMV data
            except ValueError as e:
                log.warning("rrn %s: %s; answered without field 55", rec.rrn, e, **about(rec))
        duplicate = False  # an offline upload sent again under a new STAN: 00, counted once (switch.core.uploads)
        if offline and code == "00" and not reverse:
            result, duplicate = yield from uploads.counted(self, rec, result, used)
            if result.response_code != code:  # 96: the online debit of its card and counter is still undecided
                code, changes["auth_code"] = result.response_code, None
        after = self.vas.after(rec, request, result, code, reverse, flight, not duplicate)
        tlv, token = after if type(after) is tuple else (yield from after)
        if token:
            changes["customer_token"] = token
        flight.decided = True
        try:
            # Inside the try: an acquirer's field 38 or 48 tag that the dialect cannot
            # carry strands the answer like a journal failure does.
            resp = build_response(msg, code, rec.rrn, auth_code=result.auth_code, tlv=tlv, icc=icc,
                                    build_tlv48=build_tlv48)
            # Shared journal: a terminal's 0400 on another worker may have queued its reversal meanwhile.
            expect = SENT if self.shared_journal and state == SENT else None
            op, out = self._finish(rec, resp, codec, expect, changes)
            yield op
        except StaleState:
            card = None if reverse else request.pan  # an uncertain outcome sealed its card already
            return pay_kind, "68", (yield from elsewhere.reversed_meanwhile(self, msg, rec, result, codec, card))
        except Exception as e:
            # Stranded: the acquirer may have moved money, but the outcome is not
            # journaled.  Make sure it is reversed, then answer 96.  The journal's
            # refusal (its writer died, the disk is full) is one line, counted by
            # the driver as kind "journal"; anything else is a bug: its traceback.
            bug = not isinstance(e, JournalError)
            if bug:
                self.metrics.internal_error()
            log.error("rrn %s: cannot build or journal the %s answer from %s: %s", rec.rrn, result.response_code,
                      used, e, exc_info=bug, **about(rec))
            moved = undo and (result.uncertain or result.response_code == "00" or reverse)
            if moved and isinstance(e, JournalUncertain):  # maybe journaled: no 96 over an approval
                return self._unanswered(rec, pay_kind, used)
            yield from self.reversals.strand(rec, used, request.pan, reverse=moved,
                                             event="unconfirmed" if offline else "answer", result=result)
            return pay_kind, "96", codec.encode(build_response(msg, "96", rec.rrn))
        if reverse:
            self.reversals.queued(rec.id, request.pan, "uncertain")
            # An answer that came late while this was journaled goes on the reversal now.
            yield from self.reversals.late.queued(used, rec.host_stan, rec.host_time)
        return pay_kind, code, out

    def _unanswered(self, rec: TxnRecord, pay_kind: str, used: str) -> tuple[str, str, bytes]:
        """The journal writer died holding this answer's write: journaled (an approval kept) or
        not (``sent``: recovery reverses it).  A 96 would be wrong in the first case, the card
        charged for no sale: no answer, and the terminal's 0400 (spec 6) undoes either."""
        log.error("rrn %s: the journal writer died with the answer from %s unconfirmed; not answered: the terminal's"
                  " reversal undoes it after the restart (runbook: \"The journal writer process died\")", rec.rrn, used,
                  **about(rec))
        return pay_kind, UNANSWERED, b""

    # -- reversals (completions: switch.core.completion, settlement: switch.core.settling) --

    def _reversal(self, msg, rec: TxnRecord, codec) -> Gen:
        """Terminal 0400 (sections 6, 6.1): recorded durably and answered 00 at once;
        the acquirer is told in the background.  Idempotent."""
        o_mti, o_stan, o_time = original_key(msg[90])
        # A card number the 0400 carries (field 2 or 35) is the original's field 2 for the host's
        # reversal, once it matches the original's pan_hash.
        original_id, kind = yield from self.reversals.undo(msg[41], rec.merchant_id, o_mti, o_stan, o_time,
                                                           pan=pan_of(msg))
        resp = build_response(msg, "00", rec.rrn)
        op, out = self._finish(rec, resp, codec, None,
                               {"state": advance(rec.state, "handle"), "original_id": original_id, "kind": kind})
        yield op
        return kind, "00", out
