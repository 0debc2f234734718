"""The switch on asyncio: terminal requests in, acquirers out, the journal between.

Request handling follows DESIGN.md "The job": decode → check → classify and
route → journal → acquirer → journal → answer; uncertain outcomes are queued
for reversal (store and forward) before the terminal is answered.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

from native.iso8583 import DecodeError, EncodeError, build_tlv48, dialect, parse_tlv48

from switch import config as config_mod
from switch.core import messages as m
from switch.core import pipeline
from switch.core import states
from switch.core.acquirer import Original, Request, Result
from switch.core.routing import Router, luhn_ok
from switch.journal import Totals, TxnRecord, open_journal, pan_protect
from switch.metrics import Metrics

log = logging.getLogger("payswitch")

_ADAPTER_GRACE = 2.0  # seconds past an adapter's own deadline before we stop waiting
_REVERSAL_CONCURRENCY = 32
_BUDGET_RESERVE = 0.05  # share of response_timeout kept for journaling and answering
_MIN_ATTEMPT = 0.05  # seconds: less than this left, no further acquirer is tried

# MTI digit 2 (message class) → metrics label.
_MCLASS = {"1": "auth", "2": "financial", "4": "reversal", "5": "settlement", "8": "network"}


def wallet_order_number(msg) -> str:
    """The wallet merchant order number of a terminal request (the adapters' own rule)."""
    from adapters.wallet.acquirer import order_number

    return order_number(SimpleNamespace(terminal_id=msg[41], transmission_time=msg[7], stan=msg[11]))


class RRNs:
    """RRNs for answers the journal never saw (undecodable requests, 0810, 94).

    Journaled transactions get ``%012d`` of their journal id; these start with
    ``N`` so the two can never collide (field 37 is an12).
    """

    def __init__(self):
        self._n = int(time.time() * 1000) % 10**11

    def next(self) -> str:
        self._n = (self._n + 1) % 10**11
        return "N%011d" % self._n


def load_hmac_key(cfg: config_mod.Config) -> bytes:
    """The journal's PAN-hash key: from a file or an environment variable, never from the config text."""
    j = cfg.journal
    if j.hmac_key_env:
        raw = os.environ.get(j.hmac_key_env, "")
        src = f"environment variable {j.hmac_key_env}"
    else:
        if j.hmac_key_file:
            path = Path(j.hmac_key_file)
        else:
            base = j.url.removeprefix("sqlite://") if j.url.startswith("sqlite://") else "payswitch-journal"
            if base == ":memory:":
                base = "payswitch-journal"
            path = Path(base + ".key")
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
                log.info("created journal key file %s (mode 0600)", path)
        try:
            raw = path.read_text()
        except OSError as e:
            raise config_mod.ConfigError(f"{cfg.source}: cannot read journal key file {path}: {e.strerror} - at `$.journal.hmac_key_file`") from None
        src = f"key file {path}"
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise config_mod.ConfigError(f"{cfg.source}: {src} must hold at least 16 bytes as hex - at `$.journal`")
    return key


def _read_key(a: config_mod.Acquirer, key: str, index: int) -> bytes:
    path = getattr(a, key)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise config_mod.ConfigError(
            f"acquirer {a.name!r}: cannot read {key} {path}: {e.strerror} - at `$.acquirers[{index}].{key}`"
        ) from None


def build_acquirer(a: config_mod.Acquirer, index: int = 0, on_state=None):
    """An adapter object for one configured acquirer.

    ``on_state(order_no, state)`` (wallets) is awaited before every call to the
    wallet, so the order's state is journaled first.
    """

    def hostport(ep: str) -> tuple[str, int]:
        host, _, port = ep.rpartition(":")
        return host, int(port)

    if a.type == "card":
        from adapters.card import HostLinkAcquirer

        return HostLinkAcquirer(
            name=a.name,
            endpoints=[hostport(e) for e in a.endpoints],
            acquirer_id=a.acquirer_id,
            connections=a.connections,
            echo_interval=a.echo_interval,
            connect_timeout=2.0,
        )
    if a.type == "citycard":
        from adapters.citycard import CityCardAcquirer

        return CityCardAcquirer(
            name=a.name, endpoints=[hostport(e) for e in a.endpoints], connections=a.connections, connect_timeout=2.0
        )
    if a.type in ("wallet-tradepay", "wallet-micropay"):
        options = dict(
            poll_interval=a.poll_interval,
            cancel_margin=a.cancel_margin,
            on_state=on_state,
            pool_size=max(1, a.connections),
            currency=a.currency,
        )
        if a.type == "wallet-tradepay":
            from adapters.wallet.tradepay import TradePayAcquirer

            return TradePayAcquirer(
                a.name,
                a.endpoints[0],
                app_id=a.app_id or "payswitch",
                merchant_private_key=_read_key(a, "merchant_key_file", index),
                wallet_public_key=_read_key(a, "wallet_public_key_file", index),
                **options,
            )
        from adapters.wallet.micropay import MicroPayAcquirer

        return MicroPayAcquirer(
            a.name,
            a.endpoints[0],
            app_id=a.app_id or "payswitch",
            mch_id=a.mch_id or "1000000001",
            secret=_read_key(a, "secret_file", index),
            **options,
        )
    raise config_mod.ConfigError(f"acquirer {a.name!r}: type {a.type!r} is not available in this build")


class Switch:
    """One switch process: terminals, routes, acquirers, journal, reversal queue."""

    def __init__(self, cfg: config_mod.Config, *, metrics: Metrics | None = None, acquirers: dict | None = None):
        self.term = dialect("terminal-87")
        self.metrics = metrics or Metrics()
        self.rrns = RRNs()
        self.key = load_hmac_key(cfg)
        self._apply(cfg)
        self.acquirer_cfg = {a.name: a for a in cfg.acquirers}
        self.acquirers = (
            acquirers
            if acquirers is not None
            else {a.name: build_acquirer(a, i, self._order_state) for i, a in enumerate(cfg.acquirers)}
        )
        # Results come back to the loop a batch at a time (one thread hand-off per
        # group commit, not one per write); the journal stays asyncio-free.
        loop = asyncio.get_running_loop()
        self.journal = open_journal(
            cfg.journal.url, hmac_key=self.key, future=loop.create_future, deliver=loop.call_soon_threadsafe
        )
        # (terminal, STAN, field 7) → future of the encoded response, for
        # retransmissions that arrive while the original is still in flight.
        self.inflight: dict[tuple[str, str, str], asyncio.Future] = {}
        self._reversal_wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        self.started = time.time()

    # -- configuration ---------------------------------------------------------------

    def _apply(self, cfg: config_mod.Config) -> None:
        terminals = {}
        for merchant in cfg.merchants:
            for spec in merchant.terminals:
                for tid in config_mod.expand_terminals(spec):
                    terminals[tid] = merchant.id
        router = Router(cfg.routes)
        self.cfg = cfg
        self.terminals = terminals
        self.router = router

    def reload(self, cfg: config_mod.Config) -> None:
        """Swap routes, terminals and acquirer timeouts without dropping connections.

        Adding or removing acquirers, their endpoints and credentials, listeners
        and the journal need a restart.
        """
        names = set(self.acquirer_cfg)
        new_names = {a.name for a in cfg.acquirers}
        if new_names != names:
            raise config_mod.ConfigError(
                f"{cfg.source}: acquirers changed ({', '.join(sorted(names ^ new_names))}); that needs a restart"
            )
        self._apply(cfg)
        self.acquirer_cfg = {a.name: a for a in cfg.acquirers}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(a.start() for a in self.acquirers.values()))
        await self._recover()
        self._tasks.append(asyncio.create_task(self._reversal_worker(), name="reversal-worker"))

    async def close(self) -> None:
        self._closing = True
        self._reversal_wakeup.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(a.close() for a in self.acquirers.values()), return_exceptions=True)
        self.journal.close()

    async def _j(self, fut):
        return await asyncio.wrap_future(fut)

    async def _recover(self) -> None:
        """Transactions found "sent" at start-up died with their outcome unknown: reverse them."""
        for rec in await self._j(self.journal.in_states((states.SENT,), limit=100000)):
            await self._j(
                self.journal.update(rec.id, state=states.advance(rec.state, "crash_recovery"))
            )
            log.warning("txn %d (rrn %s) was in flight at shutdown: queued for reversal", rec.id, rec.rrn)
        self._reversal_wakeup.set()

    async def _order_state(self, order_no: str, state: str) -> None:
        """Wallet hook: journal the order's state before each wallet call (and its end)."""
        rec = await self._j(self.journal.find_by_order(order_no))
        if rec is None:
            log.warning("wallet order %s is not in the journal", order_no)
            return
        await self._j(self.journal.update(rec.id, order_state=state))

    # -- request handling ------------------------------------------------------------

    async def handle(self, body: bytes, codec=None) -> bytes:
        """Answer one terminal request (the encoded message without framing) in its listener's codec."""
        t0 = time.perf_counter()
        kind = "unknown"
        term = codec or self.term
        try:
            msg = term.decode(body)
        except DecodeError as e:
            self.metrics.format_errors.inc()
            log.info("format error: %s", e)
            return self._format_error(body, term)
        try:
            kind, resp = await self._dispatch(msg)
        except Exception:
            self.metrics.internal_errors.inc()
            log.exception("internal error on %s from terminal %s", msg.mti, msg.get(41))
            resp = m.build_response(msg, "96", self.rrns.next())
        try:
            out = term.encode(resp)
        except EncodeError:
            self.metrics.internal_errors.inc()
            log.exception("cannot encode response to %s", msg.mti)
            out = term.encode(m.build_response(msg, "96", self.rrns.next()))
        self.metrics.answered(kind, _MCLASS.get(msg.mti[1], "other"), resp.get(39, "??"), time.perf_counter() - t0)
        return out

    def _format_error(self, body: bytes, term) -> bytes:
        """Section 5 code 30 for a message we could not decode, echoing what we can."""
        resp = {**m.salvage_echo(body, term), 37: self.rrns.next(), 39: "30"}
        return term.encode(resp)

    async def _dispatch(self, msg) -> tuple[str, dict]:
        try:
            m.check_request(msg)
            if 55 in msg:
                m.check_icc(msg[55])
            tid = msg[41]
            merchant = self.terminals.get(tid)
            if merchant is None or (42 in msg and msg[42] != merchant):
                raise m.Rejection("03", f"unknown terminal {tid!r} or merchant")
        except m.Rejection as r:
            log.info("rejected %s: %s (%s)", msg.mti, r.code, r.reason)
            return "network" if msg.mti == "0800" else "unknown", m.build_response(
                msg, r.code, self.rrns.next()
            )
        if msg.mti == "0800":
            return "network", m.build_response(msg, "00", self.rrns.next())

        key = (msg[41], msg[11], msg[7])
        digest = m.content_digest(msg, self.key)
        pending = self.inflight.get(key)
        if pending is not None:
            ok_digest, fut = pending
            if ok_digest != digest:
                self.metrics.retransmissions.labels("conflict").inc()
                return "unknown", m.build_response(msg, "94", self.rrns.next())
            self.metrics.retransmissions.labels("same").inc()
            kind, resp = await asyncio.shield(fut)
            return kind, resp
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = (digest, fut)
        try:
            result = await self._transaction(msg, digest)
            fut.set_result(result)
            return result
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved here: a waiting retransmission re-raises it
            raise
        finally:
            del self.inflight[key]

    async def _transaction(self, msg, digest: str) -> tuple[str, dict]:
        """Journal the request, then the work of its message type."""
        tlv = {}
        kind, route, pan, rejection = "unknown", None, None, None
        try:
            if 48 in msg:
                try:
                    tlv = parse_tlv48(msg[48])
                except DecodeError as e:
                    raise m.Rejection("30", f"field 48: {e}") from None
            completion_by_reference = (
                msg.mti == "0220" and 90 in msg and not m.pan_of(msg) and "BC" not in tlv
            )  # field 90 names the pre-authorization, which knows the card
            if msg.mti in ("0100", "0200", "0220") and not completion_by_reference:
                kind, route, pan = self._classify(msg, tlv)
        except m.Rejection as r:
            rejection = r
        masked, pan_hash = pan_protect(pan, self.key) if pan else (None, None)
        # A request bound for its route's acquirer is journaled as "sent" at once:
        # one durable write before it leaves instead of two.  Should the process
        # die before it really left, recovery reverses something the acquirer
        # never saw, which it acknowledges as nothing to do.
        direct = rejection is None and pipeline.goes_direct(msg.mti, kind, 90 in msg, route is not None)
        rec, created = await self._j(
            self.journal.insert(
                TxnRecord(
                    terminal_id=msg[41],
                    merchant_id=msg.get(42) or "",
                    mti=msg.mti,
                    stan=msg[11],
                    transmission_time=msg[7],
                    processing_code=msg.get(3),
                    amount=int(msg[4]) if 4 in msg else None,
                    currency=msg.get(49),
                    kind=kind if kind != "unknown" else "card",
                    acquirer=route.acquirers[0] if route else None,
                    pan_masked=masked,
                    pan_hash=pan_hash,
                    content_digest=digest,
                    order_ref=wallet_order_number(msg) if kind == "wallet" else None,
                    state=states.advance(states.RECEIVED, "send") if direct else states.RECEIVED,
                )
            )
        )
        if not created:
            verdict = pipeline.retransmission(rec.mti, rec.content_digest, rec.response is not None, msg.mti, digest)
            if verdict != pipeline.REDO:
                return kind, self._retransmission(msg, rec, verdict)
            log.info("rrn %s: %s journaled but never answered; handled again (idempotent)", rec.rrn, msg.mti)
        if rejection is not None:
            return kind, await self._answer_self(msg, rec, rejection)
        if msg.mti == "0400":
            return "card", await self._reversal(msg, rec)
        if msg.mti == "0500":
            return "settlement", await self._settlement(msg, rec)
        if msg.mti == "0220" and 90 in msg:
            return kind, await self._completion(msg, rec, kind, route, pan, tlv)
        if msg.mti == "0220" and kind != "citycard":
            return kind, await self._answer_self(msg, rec, m.Rejection("30", "card 0220 without field 90"))
        if kind == "wallet" and self.acquirer_cfg[route.acquirers[0]].type == "card":
            # A card-scheme QR code (e.g. prefix 62) goes to the card network as a
            # token PAN in field 2, with field 22 saying it was scanned.
            pan = tlv["BC"]
        request = m.build_request(msg, txn_id=rec.id, kind=kind, rrn=rec.rrn, pan=pan, tlv=tlv)
        return kind, await self._authorize(msg, rec, route, request)

    def _classify(self, msg, tlv) -> tuple[str, object, str | None]:
        pan = m.pan_of(msg)
        space = m.payment_kind(msg, pan, tlv)
        if space == "wallet":
            route = self.router.for_code(tlv["BC"], msg)
            if route is None:
                raise m.Rejection("12", "no wallet for this payment code")
            return "wallet", route, None
        route = self.router.for_pan(pan, msg)
        if route is None:
            raise m.Rejection("14", "no route for this card number")
        if route.kind == "card" and not luhn_ok(pan):
            raise m.Rejection("14", "card number fails the Luhn check")
        if route.kind == "citycard" and "CC" not in tlv and msg[3][:2] != m.BALANCE:
            raise m.Rejection("30", "city-card payment without field 48 tag CC")
        return route.kind, route, pan

    def _retransmission(self, msg, rec: TxnRecord, verdict: str) -> dict:
        """Section 6: same key and content → the original answer; different content → 94."""
        self.metrics.retransmissions.labels("conflict" if verdict == pipeline.CONFLICT else "same").inc()
        if verdict == pipeline.CONFLICT:
            return m.build_response(msg, "94", self.rrns.next())
        if verdict == pipeline.SAME:
            stored = self.term.decode(rec.response)
            out = stored.fields()
            out["mti"] = stored.mti
            return out
        return m.build_response(msg, "96", rec.rrn)

    async def _finish(self, msg, rec: TxnRecord, resp: dict, **changes) -> dict:
        """Journal the outcome (with the exact response) before the terminal sees it."""
        body = self.term.encode(resp)
        await self._j(self.journal.update(rec.id, response=body, **changes))
        return resp

    async def _answer_self(self, msg, rec: TxnRecord, r: m.Rejection) -> dict:
        log.info("rrn %s: %s %s (%s)", rec.rrn, msg.mti, r.code, r.reason)
        resp = m.build_response(msg, r.code, rec.rrn)
        return await self._finish(
            msg, rec, resp, state=states.advance(rec.state, "reject"), response_code=r.code
        )

    async def _authorize(self, msg, rec: TxnRecord, route, request: Request) -> dict:
        """Send to the route's acquirers in order; a 91 without sending falls through to the next."""
        state = rec.state if rec.state == states.SENT else states.advance(rec.state, "send")
        result: Result | None = None
        used = None
        # Section 6: the terminal is answered within response_timeout of its
        # request, however many acquirers the route falls through.
        budget_end = rec.created_at + self.cfg.response_timeout * (1 - _BUDGET_RESERVE)
        for index, name in enumerate(route.acquirers):
            acq = self.acquirers[name]
            remaining = budget_end - time.time()
            if result is not None and remaining < _MIN_ATTEMPT:
                break  # no time left to try the next one: answer what we have
            if index + 1 < len(route.acquirers) and not acq.healthy():
                continue
            if name != rec.acquirer:
                rec = await self._j(self.journal.update(rec.id, acquirer=name, state=state))
            elif rec.state != state:
                rec = await self._j(self.journal.update(rec.id, state=state))
            used = name
            t0 = time.perf_counter()
            timeout = min(self.acquirer_cfg[name].timeout, max(remaining, _MIN_ATTEMPT))
            result = await self._call_acquirer(acq, request, timeout)
            outcome = "uncertain" if result.uncertain else result.response_code
            self.metrics.acquirer_answered(name, outcome, time.perf_counter() - t0)
            if not (result.response_code == "91" and not result.uncertain):
                break
        assert result is not None and used is not None
        icc = None
        if result.icc:
            try:
                icc = m.issuer_icc(result.icc)
            except ValueError as e:
                log.warning("rrn %s: %s; answered without field 55", rec.rrn, e)
        resp = m.build_response(
            msg,
            result.response_code,
            rec.rrn,
            auth_code=result.auth_code,
            tlv=result.tlv,
            icc=icc,
            build_tlv48=build_tlv48,
        )
        reverse = result.uncertain and not pipeline.is_offline_advice(request)
        if result.uncertain and not reverse:
            log.warning(
                "rrn %s: offline advice not confirmed by %s; the terminal uploads it again "
                "(the centre counts it once per card and counter)", rec.rrn, used,
            )
        event = "uncertain" if reverse else "answer"
        resp = await self._finish(
            msg,
            rec,
            resp,
            state=states.advance(state, event),
            response_code=result.response_code,
            auth_code=result.auth_code,
            acquirer_ref=result.acquirer_ref,
        )
        if reverse:
            self.metrics.reversals.labels("uncertain", "queued").inc()
            self._reversal_wakeup.set()
        return resp

    async def _call_acquirer(self, acq, request: Request, timeout: float) -> Result:
        """The adapter's answer; our safety net when it breaks its own contract.

        Adapters keep their deadline and never raise for an acquirer's
        behaviour.  Should one raise or overrun, the outcome is unknown: the
        terminal gets 96 / 68 and the transaction is reversed.
        """
        try:
            async with asyncio.timeout(timeout + _ADAPTER_GRACE):  # no extra task, unlike wait_for
                return await acq.authorize(request, timeout)
        except TimeoutError:
            self.metrics.internal_errors.inc()
            log.error("%s overran its %.1f s deadline on rrn %s; reversing", acq.name, timeout, request.rrn)
            return Result(response_code="68", uncertain=True)
        except Exception:
            self.metrics.internal_errors.inc()
            log.exception("%s failed on rrn %s; reversing", acq.name, request.rrn)
            return Result(response_code="96", uncertain=True)

    def _original_of(self, rec: TxnRecord) -> Original:
        return Original(
            txn_id=rec.id,
            mti=rec.mti,
            processing_code=rec.processing_code or "000000",
            amount=rec.amount,
            currency=rec.currency,
            stan=rec.stan,
            transmission_time=rec.transmission_time,
            rrn=rec.rrn,
            auth_code=rec.auth_code,
            acquirer_ref=rec.acquirer_ref,
        )

    def _reversal_request(self, orig: TxnRecord, *, txn_id: int, rrn: str, msg=None) -> Request:
        return Request(
            txn_id=txn_id,
            kind=orig.kind,
            mti="0400",
            processing_code=orig.processing_code or "000000",
            amount=orig.amount,
            currency=orig.currency,
            terminal_id=orig.terminal_id,
            merchant_id=orig.merchant_id,
            stan=msg[11] if msg is not None else orig.stan,
            transmission_time=msg[7] if msg is not None else orig.transmission_time,
            rrn=rrn,
            original=self._original_of(orig),
        )

    async def _reversal(self, msg, rec: TxnRecord) -> dict:
        """Terminal 0400 (section 6): idempotent; unknown or already reversed → 00."""
        o_mti, o_stan, o_time = m.original_key(msg[90])
        orig = await self._j(self.journal.find_original(msg[41], (o_mti,), o_stan, o_time))
        if orig is not None:
            pending = self.inflight.get((orig.terminal_id, orig.stan, orig.transmission_time))
            if pending is not None:
                # The terminal gave up before we did: let the original finish, then undo it.
                await asyncio.shield(pending[1])
                orig = await self._j(self.journal.get(orig.id))
        if orig is not None and orig.acquirer and states.needs_reversal(orig.state, orig.response_code):
            if orig.state != states.REVERSAL_PENDING:
                orig = await self._j(self.journal.update(orig.id, state=states.advance(orig.state, "reverse")))
            acked = await self._send_reversal(orig, "terminal", self._reversal_request(orig, txn_id=rec.id, rrn=rec.rrn, msg=msg))
            if not acked:
                self._reversal_wakeup.set()
        resp = m.build_response(msg, "00", rec.rrn)
        return await self._finish(
            msg, rec, resp, state=states.advance(rec.state, "handle"), response_code="00", original_id=orig.id if orig else None
        )

    async def _send_reversal(self, orig: TxnRecord, trigger: str, request: Request) -> bool:
        acq = self.acquirers.get(orig.acquirer)
        if acq is None:
            log.error("txn %d: acquirer %r no longer configured; reversal kept pending", orig.id, orig.acquirer)
            return False
        try:
            acked = await acq.reverse(request, self.acquirer_cfg[orig.acquirer].timeout)
        except Exception:
            log.exception("reversal of txn %d at %s failed", orig.id, orig.acquirer)
            acked = False
        self.metrics.reversals.labels(trigger, "acked" if acked else "retry").inc()
        if acked:
            await self._j(
                self.journal.update(orig.id, state=states.advance(orig.state, "reversed"))
            )
        else:
            await self._j(
                self.journal.update(orig.id, reversal_attempts=orig.reversal_attempts + 1)
            )
        return acked

    async def _reversal_worker(self) -> None:
        """Store and forward: retry pending reversals until each is acknowledged."""
        while not self._closing:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancel that lands as the event fires, and close() would hang.
            try:
                async with asyncio.timeout(self.cfg.reversal_retry):
                    await self._reversal_wakeup.wait()
            except TimeoutError:
                pass
            if self._closing:
                return
            self._reversal_wakeup.clear()
            try:
                pending = await self._j(self.journal.in_states((states.REVERSAL_PENDING,), limit=500))
                self.metrics.reversal_queue.set(len(pending))
                # Concurrently, so one silent acquirer can't hold up the others' reversals.
                limit = asyncio.Semaphore(_REVERSAL_CONCURRENCY)

                async def one(orig: TxnRecord) -> None:
                    async with limit:
                        req = self._reversal_request(orig, txn_id=orig.id, rrn=orig.rrn)
                        await self._send_reversal(orig, "uncertain", req)

                await asyncio.gather(
                    *(
                        one(orig)
                        for orig in pending
                        if (orig.terminal_id, orig.stan, orig.transmission_time) not in self.inflight
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.internal_errors.inc()
                log.exception("reversal worker pass failed")

    async def _completion(self, msg, rec: TxnRecord, kind, route, pan, tlv) -> dict:
        """0220 naming a pre-authorization in field 90: 25 when it can't be found."""
        o_mti, o_stan, o_time = m.original_key(msg[90])
        # Only an approved, still standing pre-authorization (0100) can be completed:
        # "completing" a purchase would charge it twice.
        orig = None
        if o_mti == "0100":
            orig = await self._j(self.journal.find_original(msg[41], ("0100",), o_stan, o_time))
        if (
            orig is None
            or orig.response_code != "00"
            or orig.state in (states.REVERSED, states.REVERSAL_PENDING)
            or not orig.acquirer
        ):
            return await self._answer_self(msg, rec, m.Rejection("25", "no standing pre-authorization to complete"))
        request = m.build_request(
            msg, txn_id=rec.id, kind=orig.kind, rrn=rec.rrn, pan=pan, tlv=tlv, original=self._original_of(orig)
        )
        route = config_mod.Route(name="completion", kind=orig.kind, prefixes=[], acquirers=[orig.acquirer])
        return await self._authorize(msg, rec, route, request)

    async def _settlement(self, msg, rec: TxnRecord) -> dict:
        """0500 (section 3): the terminal's totals against the journal's: 00 or 95."""
        totals: Totals = await self._j(self.journal.totals(msg[41]))
        theirs = (int(msg[74]), int(msg[76]), int(msg[86]), int(msg[88]))
        ours = (totals.credits_count, totals.debits_count, totals.credits_amount, totals.debits_amount)
        code = pipeline.settlement_code(theirs, ours)
        accepted = code == "00"
        await self._j(self.journal.settle(msg[41], totals, accepted))
        if not accepted:
            log.warning("terminal %s totals %s differ from the journal's %s", msg[41], theirs, ours)
        resp = m.build_response(msg, code, rec.rrn)
        return await self._finish(msg, rec, resp, state=states.advance(rec.state, "handle"), response_code=code)
