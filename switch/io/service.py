"""The switch on asyncio: the driver of the transaction engine.

Every rule lives in :mod:`switch.core.engine`, which runs each request as a
generator of commands; this module executes them: journal operations (the
journal's futures, awaited), acquirer calls (with the deadline enforced:
an adapter that overruns is abandoned), waits for a request in flight under
the same key.  It also runs the store-and-forward sweeps of
:mod:`switch.core.reversal` and drains in-flight requests on shutdown.
"""
from __future__ import annotations

import asyncio
import logging
import time
from asyncio import current_task  # a module global: read once a purchase
from time import perf_counter  # as are these: twice

import cython

from native.iso8583 import dialect

from switch import config as config_mod
from switch.config_reload import acquirers_changed
from switch.core import refused, session_keys, states
from switch.core.acquirer import order_number
from switch.core.commands import UNANSWERED, Call, Flight, Op, Overrun, Pause, Reverse, Sec, Stopping, Vas, Wait
from switch.core.engine import Engine
from switch.io.backstop import Backstop
from switch.io.loopwatch import LoopWatch, process_stat, thread_stat
from switch.io.role import WorkerRole  # noqa: F401  (imported from here by app and workers)
from switch.journal import JournalError, open_journal
from switch.metrics import Metrics

log = logging.getLogger("payswitch")

_ADAPTER_GRACE = 2.0  # seconds past an adapter's own deadline before we stop waiting
_STOP_RESERVE = 1.0  # seconds of the drain kept after held wallet orders must be done
_CLOSE_WAIT = 1.0  # seconds a drained switch waits for its terminal connections' last answers to leave
ORPHAN_CHECK = 1.0  # seconds between two looks for a dead worker's transactions (the reversal sender)


class Switch:
    """One switch process: the engine, its acquirers, its journal, its reversal sweeps."""

    def __init__(
        self,
        cfg: config_mod.Config,
        *,
        metrics: Metrics | None = None,
        acquirers: dict | None = None,
        acquirer_factory=None,
        key: bytes | None = None,
        clock=time.time,
        worker: "WorkerRole | None" = None,
    ):
        """``acquirers`` (name → adapter), or ``acquirer_factory(a, index, on_state)``
        to build them (default: the registered adapter types); ``key``: the
        journal's PAN-hash key (default: loaded as the configuration says);
        ``worker``: this is one of several worker processes (``serve --workers``)."""
        from switch import wiring  # entry-level: adapters are found through it, never imported here

        self.term = dialect("terminal-87")
        self.metrics = metrics or Metrics()
        self.key = key if key is not None else wiring.load_hmac_key(cfg)
        self.cfg = cfg
        self.acquirer_cfg = {a.name: a for a in cfg.acquirers}
        from switch.io import vas as vas_io  # value-added services, customer-token keys

        self.vas = vas_io.Services(cfg)
        factory = acquirer_factory or wiring.build_acquirer
        self.acquirers = (
            acquirers
            if acquirers is not None
            else {a.name: factory(a, i, self._order_state) for i, a in enumerate(cfg.acquirers)}
        )
        self.engine = Engine(
            cfg,
            key=self.key,
            clock=clock,
            metrics=self.metrics,
            healthy=lambda name: self.acquirers[name].healthy(),
            stan_acquirers={a.name for a in cfg.acquirers if a.type == "card"},
            token_keys=vas_io.load_token_keys(cfg),
        )
        self.engine.on_flight_done = _wake_waiters
        self.engine.reversals.on_queued = self._wake_sweeper
        self.engine.reversals.on_withdraw = self._withdraw
        for name in self.engine.reversals.stan_acquirers:
            use = getattr(self.acquirers.get(name), "use_stan_source", None)
            if use is not None:
                use(lambda name=name: self.engine.reversals.take_stan(name))
            late = getattr(self.acquirers.get(name), "use_late_auth_codes", None)
            if late is not None:
                late(lambda stan, f7, code, ref=None, approved=False, name=name:
                     self._late_auth_code(name, stan, f7, code, ref, approved))
        # Results come back to the loop a batch at a time (one thread hand-off per
        # group commit, not one per write); the journal stays asyncio-free.
        loop = self._loop = asyncio.get_running_loop()
        self.worker = worker
        shared = {} if worker is None else {"writer": "process", "connect": worker.journal_socket}
        self.engine.shared_journal = worker is not None
        self.journal = open_journal(
            cfg.journal.url, hmac_key=self.key, future=loop.create_future, deliver=loop.call_soon_threadsafe,
            **{"writer": cfg.journal.writer, "loop": loop, **shared},
        )
        self._backstop = Backstop(loop)  # the switch's own deadline on acquirer calls
        self._loopwatch = LoopWatch(self.metrics.loop_lag, self._writer_stat)  # lag and CPU metrics
        self._sweep_wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        self._late_tasks: set[asyncio.Task] = set()  # late answers' auth codes on their way to the journal
        self._jobs: set[asyncio.Task] = set()
        self._held: dict[str, str] = {}  # wallet orders waiting for their customer → acquirer
        self._idle = asyncio.Event()
        self._cutting = False  # cut(): acquirer calls given up are Stopping, not Overrun
        self.draining = False  # drain() began: the listeners are closed, /readyz says 503
        self.connections: set = set()  # open terminal connections (switch.io.server.TerminalProtocol)
        self._handling = 0  # requests in handle(), those answered without a flight included
        self._idle.set()
        self.started = time.time()
        self.security_module = None  # spec 8: opened by start() as cfg.security.module says

    async def _open_security(self) -> None:
        from switch.io.hsm import open_module  # only a switch with a [security.module] needs it

        self.security_module = open_module(self.cfg.security)
        if self.security_module is not None:
            try:
                info = await self.security_module.diagnostics()
            except Exception as e:  # an HSM that is down now may be up for the first request
                log.error("security module: diagnostics failed: %s", e)
                return
            log.info("security module: %s, %d keys%s", info.module, info.keys, f" ({info.detail})" if info.detail else "")

    @property
    def inflight(self) -> dict:
        return self.engine.inflight

    @property
    def router(self):
        return self.engine.router

    # -- configuration ---------------------------------------------------------------

    def reload(self, cfg: config_mod.Config) -> None:
        """Swap routes, terminals, merchants and timeouts without dropping connections.

        Adding or removing acquirers, their endpoints and credentials, listeners
        and the journal need a restart.
        """
        why = acquirers_changed(set(self.acquirer_cfg), cfg)
        if why:
            raise config_mod.ConfigError(why)
        self.engine.apply(cfg)
        self.cfg = cfg
        self.acquirer_cfg = {a.name: a for a in cfg.acquirers}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.security_module is None:
            await self._open_security()
        for acquirer in self.acquirers.values():
            # Adapters that use the security module (card host-link MACs) get it before they start.
            use = getattr(acquirer, "use_security_module", None)
            if use is not None:
                use(self.security_module)
        if self.security_module is not None:
            # Spec 8: session keys given before a restart (kept in the journal, never in clear).
            restored = await self.run(session_keys.restore())
            if restored:
                log.info("security module: session keys of %d key set(s) restored from the journal", restored)
        await self.run(self.engine.reversals.prefill())  # host STANs before any sign-on
        await asyncio.gather(*(a.start() for a in self.acquirers.values()))
        worker = self.worker
        if worker is None or worker.recover_all:
            # Everything "sent" is from a run that is over: with workers, the
            # supervisor starts the others only after this one is ready.
            await self.run(self.engine.reversals.recover())
        if worker is not None and worker.sender:
            await self.adopt_orphans()
            self._tasks.append(asyncio.create_task(self._orphan_watch(), name="orphan-watch"))
        self._tasks.append(asyncio.create_task(self._sweeper(), name="reversal-sweeper"))
        self._wake_sweeper()
        self._loopwatch.start(asyncio.get_running_loop())
        self.metrics.cpu_source = self._loopwatch.cpu

    def _writer_stat(self) -> str | None:
        """The journal writer's /proc stat file (thread or process of ours), if any."""
        identify = getattr(self.journal, "writer_identity", None)
        who = identify() if identify is not None else None
        if who is None:
            return None
        return thread_stat(who[1]) if who[0] == "thread" else process_stat(who[1])

    async def drain(self, budget: float | None = None) -> bool:
        """Wait until no request is in flight (True) or ``budget`` seconds pass (False).

        Stop accepting first (close the listeners): requests already taken,
        wallet customers still confirming included, are answered, not cut off.
        Nothing new is started meanwhile (new requests on connections still
        open are answered 91: :mod:`switch.core.drain`), idle connections are
        closed at once and the others after their last answer, so the drain
        ends with the last request in flight however busy its terminals are.
        Adapters that hold requests (wallet orders waiting for their customer)
        are told when the drain ends, so that they cancel them at the wallet
        and answer within it rather than be given up by :meth:`cut` with the
        order left open there.
        """
        budget = self.cfg.drain_budget if budget is None else budget
        if not self.draining:
            within = max(0.0, budget - min(_STOP_RESERVE, budget / 4))
            for acquirer in self.acquirers.values():
                stopping = getattr(acquirer, "stopping", None)
                if stopping is not None:
                    stopping(within)
            # New requests are not started (switch.core.drain); each connection
            # closes once it has nothing in flight, idle ones now.
            self.engine.draining = True
            self.draining = True
            idle = sum(conn.drain() for conn in list(self.connections))
            if idle:
                log.info("draining: %d idle terminal connection(s) closed", idle)
        quiet = False
        try:
            async with asyncio.timeout(budget):
                while self.engine.inflight or self._handling:
                    if not self.engine.inflight and not quiet:
                        # Nothing left to wait for but answers from the journal
                        # and refusals: read no more requests, let those finish.
                        quiet = True
                        for conn in list(self.connections):
                            conn.quiet()
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            log.warning("drain: %d request(s) still in flight after %.0f s", len(self.engine.inflight), budget)
            return False
        await self._connections_closed(_CLOSE_WAIT)
        return True

    async def _connections_closed(self, within: float) -> None:
        """Close every terminal connection (all answered) and give last answers still
        buffered ``within`` seconds to leave before the process goes on stopping.

        Without such answers it does not yield: nothing else (a reversal sweep)
        starts between the drain and :meth:`close`."""
        for conn in list(self.connections):
            conn.quiet()
        end = self._loop.time() + within
        while any(conn.unsent() for conn in self.connections) and self._loop.time() < end:
            await asyncio.sleep(0.01)

    async def cut(self, budget: float = 5.0) -> bool:
        """After :meth:`drain` ran out: give up the acquirer calls still in flight.

        Each one ends as an overrun does (68 to its terminal, the payment
        journaled for reversal with its card sealed), while the journal is
        still open; the next start sends the reversals.  Closing the links
        under them instead would leave each request to journal its outcome
        into a closed journal, and its terminal with a 96.  True when every
        request was answered within ``budget`` seconds.
        """
        self._cutting = True
        given_up = self._backstop.expire_all()
        if given_up:
            log.warning("stopping: %d acquirer call(s) still in flight given up; answered 68 and reversed "
                        "at the next start", given_up)
        return await self.drain(budget)

    async def close(self) -> None:
        self._closing = True
        self._sweep_wakeup.set()
        for t in [*self._tasks, *self._jobs]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._jobs, return_exceptions=True)
        await asyncio.gather(*(a.close() for a in self.acquirers.values()), return_exceptions=True)
        close_module = getattr(self.security_module, "close", None)
        if close_module is not None:
            await asyncio.gather(close_module(), return_exceptions=True)
        await self.vas.close()
        self._backstop.close()
        self._loopwatch.close()
        if self.metrics.cpu_source == self._loopwatch.cpu:
            self.metrics.cpu_source = None
        self.journal.close()

    async def _order_state(self, order_no: str, state: str) -> None:
        """Wallet hook: journal the order's state before each wallet call (and its end)."""
        rec = await self.journal.find_by_order(order_no)
        if rec is None:
            log.warning("wallet order %s is not in the journal", order_no)
            return
        # Held: from the first query (the customer is confirming) to the order's end.
        held = self._held
        if state == "query" and order_no not in held:
            held[order_no] = rec.acquirer or "?"
            self.metrics.wallet_held.labels(held[order_no]).inc()
        elif state not in ("pay", "query", "cancel") and order_no in held:
            self.metrics.wallet_held.labels(held.pop(order_no)).dec()
        if state == "query" and rec.state == states.REVERSAL_PENDING:
            # Its terminal's 0400 landed on another worker (serve --workers), which could
            # only queue the reversal in the journal: seen here at the next look at the
            # order, it is withdrawn before the customer can confirm it (spec 6.1).
            self._withdraw_txn(rec.id)
        await self.journal.update(rec.id, order_state=state)

    def _unheld(self, request) -> None:
        """A payment's call ended, however it ended: its wallet order, if it was held for its
        customer, is held no more (an overrun cancels the flow before it says so)."""
        acquirer = self._held.pop(order_number(request.terminal_id, request.transmission_time, request.stan), None)
        if acquirer is not None:
            self.metrics.wallet_held.labels(acquirer).dec()

    def _withdraw(self, flight: Flight) -> None:
        """A terminal reversed a request still at its acquirer (spec 6.1): an adapter that
        holds it (a wallet order waiting for its customer) ends it now, undoing it there."""
        if flight.txn_id is None:
            return  # not journaled yet, so at no acquirer: its authorization sees the reversal
        self._withdraw_txn(flight.txn_id)

    def _withdraw_txn(self, txn_id: int) -> None:
        for acquirer in self.acquirers.values():
            withdraw = getattr(acquirer, "withdraw", None)
            if withdraw is not None and withdraw(txn_id):
                return

    # -- the driver ------------------------------------------------------------------

    async def handle(self, body: bytes, codec=None) -> bytes:
        """Answer one terminal request (the encoded message without framing).

        It executes the engine's commands itself, as :meth:`run` does, and its
        acquirer call as :meth:`_execute` does, rather than awaiting them: every
        suspension of every request (the journal's writes, the acquirer's answer)
        then resumes one or two coroutines fewer."""
        t0 = perf_counter()
        self._handling += 1
        refused = False  # the journal refused a write (a JournalError thrown in)
        gen = self.engine.handle(body, codec or self.term)
        send, throw = gen.send, gen.throw
        journal = self.journal
        value = error = None
        try:
            while True:
                try:
                    command = send(value) if error is None else throw(error)
                except StopIteration as stop:
                    answer = stop.value
                    break
                value = error = None
                kind = type(command)
                try:
                    if kind is Op:
                        value = await _journal_call(journal, command)
                    elif kind is Call:
                        call = cython.cast(Call, command)
                        task = self._call_started(call)
                        try:
                            value = await self.acquirers[call.acquirer].authorize(call.request, call.timeout)
                        except asyncio.CancelledError:
                            self._call_cancelled(call, task)
                            raise
                        finally:
                            self._call_ended(call, task)
                    else:
                        value = await self._execute(command)
                except asyncio.CancelledError:
                    gen.close()
                    raise
                except Exception as e:
                    error = e
                    if isinstance(e, JournalError):
                        refused = True
        finally:
            self._handling -= 1
            if not self.engine.inflight:
                self._idle.set()
        kind, mclass, code, out = answer  # an Answer
        if not out:
            if code == UNANSWERED:  # the journal writer died holding its outcome (Engine._unanswered)
                self.metrics.answered("journal", mclass, UNANSWERED, perf_counter() - t0)
            else:  # a response MTI from a terminal: nothing to send (switch.core.messages.is_request)
                self.metrics.unsolicited_responses.inc()
        else:
            # A 96 given because the journal refused a write is kind "journal", whatever it was
            # paying with: a journal down is told apart from the switch's other 96s.
            if refused and code == "96":
                kind = "journal"
            self.metrics.answered(kind, mclass, code, perf_counter() - t0)
        return out

    def _late_auth_code(self, acquirer: str, stan: str, f7: str, code: str | None,
                        acquirer_ref: str | None = None, approved: bool = False) -> None:
        """A late approval's field 38 (and the amount held, in ``acquirer_ref``, when it is not the
        one requested): into the journal, for the reversal of its payment (``approved``: it
        reopens that reversal if it ended unmatched)."""
        async def keep() -> None:
            try:
                await self.run(self.engine.reversals.late_auth_code(acquirer, stan, f7, code, acquirer_ref,
                                                                    approved))
            except Exception:
                log.exception("%s: the auth code of a late answer could not be journaled", acquirer)

        task = asyncio.create_task(keep(), name="late-auth-code")
        self._late_tasks.add(task)
        task.add_done_callback(self._late_tasks.discard)

    async def close_refused(self, rrn: str):
        """An operator closes the refused reversal of ``rrn`` (``POST /admin/reversals/<rrn>/close``):
        a :class:`switch.core.refused.Closing`.  The reversal sender, which sets
        ``payswitch_reversals_refused``, counts it again at once."""
        sender = self.worker is None or self.worker.sender
        return await self.run(refused.close(rrn, self.metrics if sender else None))

    async def run(self, gen):
        """Execute an engine generator's commands until it returns its value (a terminal's
        request: :meth:`handle`, which does the same inline)."""
        send, throw = gen.send, gen.throw
        value = error = None
        while True:
            try:
                command = send(value) if error is None else throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if type(command) is Op:  # the common command, without a coroutine of its own
                    value = await _journal_call(self.journal, command)
                else:
                    value = await self._execute(command)
            except asyncio.CancelledError:
                gen.close()
                raise
            except Exception as e:
                error = e

    async def _execute(self, command):
        kind = type(command)
        if kind is Op:
            return await _journal_call(self.journal, command)
        if kind is Call or kind is Reverse:
            given = cython.cast(Call, command)
            acq = self.acquirers[given.acquirer]
            call = acq.authorize if kind is Call else acq.reverse
            task = self._call_started(given)
            try:
                return await call(given.request, given.timeout)
            except asyncio.CancelledError:
                self._call_cancelled(given, task)
                raise
            finally:
                self._call_ended(given, task)
        if kind is Sec:
            module = self.security_module
            if module is None:
                from switch.security.module import ModuleUnavailable

                raise ModuleUnavailable("no security module configured (security.module)")
            return await getattr(module, command.method)(*command.args)
        if kind is Vas:
            try:  # each service under its own deadline (switch.io.vas); this one bounds them all
                async with asyncio.timeout(command.deadline + 0.005):
                    return await self.vas.call(command)
            except TimeoutError:
                raise Overrun(f"value-added services overran {command.deadline:.3f} s") from None
        if kind is Pause:
            await asyncio.sleep(command.seconds)
            return None
        if kind is Wait:
            flight = command.flight
            if not flight.done:
                fut = asyncio.get_running_loop().create_future()
                flight.waiters.append(fut)
                await asyncio.shield(fut)
            if flight.error is not None:
                raise flight.error
            return flight.answer
        raise TypeError(f"unknown engine command {command!r}")

    def _call_started(self, command):
        """An acquirer call begins: the backstop watches its task (returned)."""
        task = current_task(self._loop)
        self._backstop.watch(task, command.timeout + _ADAPTER_GRACE)
        return task

    def _call_cancelled(self, command, task) -> None:
        """An acquirer call was cancelled: if by the backstop, the adapter overran (or the
        switch is stopping), raised here for the engine; any other cancel goes on."""
        if self._backstop.expired(task):
            if self._cutting:
                raise Stopping(f"{command.acquirer} given up: the switch is stopping") from None
            raise Overrun(f"{command.acquirer} overran {command.timeout:.1f} s") from None

    def _call_ended(self, command, task) -> None:
        self._backstop.release(task)
        if self._held and type(command) is Call:
            self._unheld(command.request)

    # -- store and forward -----------------------------------------------------------

    def _wake_sweeper(self) -> None:
        self._sweep_wakeup.set()

    async def _sweeper(self) -> None:
        """Reversal sweeps: when one is queued, and every reversal_retry seconds."""
        while not self._closing:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancel that lands as the event fires, and close() would hang.
            try:
                async with asyncio.timeout(self.engine.reversals.next_due()):
                    await self._sweep_wakeup.wait()
            except TimeoutError:
                pass
            if self._closing:
                return
            self._sweep_wakeup.clear()
            try:
                jobs = await self.run(self.engine.reversals.sweep(sender=self.worker is None or self.worker.sender))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.internal_error()
                log.exception("reversal sweep failed")
                self.engine.reversals.failed()  # the next in reversal_retry, not in a loop
                continue
            for name, job in jobs.items():
                task = asyncio.create_task(self._job(job), name=f"reversals:{name}")
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)

    # -- several workers (serve --workers) ----------------------------------------------

    async def adopt_orphans(self) -> int:
        """Reverse what workers that died left "sent" (the shared journal knows whose it was)."""
        ids = await self.journal.orphans()
        found = []
        for txn_id in ids:
            rec = await self.journal.get(txn_id)
            if rec is None or rec.state != states.SENT:
                continue
            # Skipped only if this process handles that very record now.  A retransmission
            # of it here waits for the record to leave "sent" (switch.core.elsewhere): it
            # has no record of its own yet and must not hold the reversal up (nor wait
            # response_timeout for an answer nobody will give).
            flight = self.engine.inflight.get((rec.terminal_id, rec.stan, rec.transmission_time))
            if flight is None or flight.txn_id != rec.id:
                found.append(rec)
        if found:
            log.warning("%d transaction(s) in flight in a worker that died: queueing their reversals", len(found))
            await self.run(self.engine.reversals.recover_records(found))
        return len(found)

    async def _orphan_watch(self) -> None:
        """The reversal sender's round: orphans of dead workers, and a sweep for the
        reversals other workers queued (they cannot wake this process's sweeper)."""
        while not self._closing:
            await asyncio.sleep(ORPHAN_CHECK)
            try:
                await self.adopt_orphans()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.internal_error()
                log.exception("adopting the transactions of a dead worker failed; tried again")
            self._wake_sweeper()

    async def _job(self, job) -> None:
        try:
            await self.run(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.internal_error()
            log.exception("reversal job failed; its reversals stay queued")


@cython.locals(flight=Flight)
def _wake_waiters(flight: Flight) -> None:
    waiters = flight.waiters
    if not waiters:  # no retransmission waited for it: nearly every request
        return
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


def _journal_call(journal, op: Op):
    """``journal.<name>(*args, **kwargs)`` of an Op (looked up on the journal each time: tests
    replace its methods); compiled, its dict of columns is passed as it is, not copied first."""
    kwargs = op.kwargs
    if not kwargs:
        return getattr(journal, op.name)(*op.args)
    if cython.compiled:
        return PyObject_Call(getattr(journal, op.name), op.args, kwargs)  # noqa: F821  (service.pxd)
    return getattr(journal, op.name)(*op.args, **kwargs)
