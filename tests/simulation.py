"""Deterministic simulation of the transaction engine: money is never lost or doubled.

One seed is one world on a virtual clock: the real engine
(:mod:`switch.core.engine`) and the real journal (SQLite in memory, its
operations run inline), simulated terminals that retransmit, repeat, reverse
(also what the switch never saw, then send it late), complete
pre-authorizations (twice, over the limit), refund and settle; simulated card
acquirers that approve, decline, drop, answer late, disconnect, are
unavailable, answer 25 to a reversal that overtook its original, and whose
adapters sometimes raise or overrun; journal writes that fail; and switch
crashes after which a new engine recovers from the kept journal.  After the
terminals stop, faults stop, the clock runs on until the reversal queue is
at rest, and the invariants of issue "money at the edges" are checked
(:func:`check`).

    python -m tests.simulation --seed 1234 [--trace]      # replay one seed
    python -m tests.simulation --seeds 0-9999 [--jobs 2]  # a range
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import heapq
import logging
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from native.iso8583 import dialect

from switch import config as config_mod
from switch.security import pinblock, terminal
from switch.security import sandbox as sandbox_keys
from switch.security.keys import session_key_names, wrap
from switch.security.mac import kcv
from switch.core import states
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Result
from switch.core.commands import Call, Op, Overrun, Pause, Reverse, Sec, Vas, Wait
from switch.core.engine import Engine
from switch.journal import JournalError
from tests.memory_journal import Answer, MemoryJournal, deliver

TERM = dialect("terminal-87")
KEY = bytes(range(32))
START = 1_800_000_000.0
MERCHANT = "SIMSHOP00000001"
CARDS = ("4761739001010119", "4000000000000002", "5555555555554444", "5105105105105100")

CONFIG = """
sandbox = true
response_timeout = 10.0
reversal_retry = 1.0
reversal_backoff_max = 8.0
reversal_not_found_window = 20.0
retransmission_window = 3600.0

[journal]
url = "sqlite://:memory:"

[[merchants]]
id = "SIMSHOP00000001"
terminals = ["SIM00001-SIM00009"]
refund_max = 50000

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:1"]
timeout = 3.0

[[acquirers]]
name = "bank-b"
type = "card"
endpoints = ["127.0.0.1:2"]
timeout = 3.0

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "mastercard"
kind = "card"
prefixes = ["5"]
acquirers = ["bank-b", "bank-a"]

# A value-added service at both moments (executed by World._vas): it lowers
# amounts, answers late, fails; the payment must not care.
[[vas]]
name = "loyalty"
type = "sim"
merchants = ["SIMSHOP00000001"]
deadline = 0.05
"""

# Spec 8: every simulated terminal MACs its requests (session keys under the
# sandbox's TDES TMK); purchases with an even STAN carry a PIN, which each
# acquirer must receive under its own ZPK.
CONFIG += f"""
[security.module]
kind = "software"
key_store = "{sandbox_keys.STORE}"
master_key_file = "{sandbox_keys.MASTER_KEY_FILE}"

[[security.merchants]]
merchant = "SIMSHOP00000001"
policy = "mac+pin"
[[security.merchants.terminals]]
terminals = "SIM00001-SIM00009"
tmk = "demo-tmk-tdes"

[[security.acquirers]]
acquirer = "bank-a"
zpk = "zpk-bank-a"
[[security.acquirers]]
acquirer = "bank-b"
zpk = "zpk-bank-b"
"""
TMK = bytes.fromhex(sandbox_keys.KEYS["demo-tmk-tdes"][2])

_GRACE = 2.0  # the driver's grace past an adapter's deadline (switch.io.service)


@functools.cache
def _config() -> tuple[config_mod.Config, config_mod.Config]:
    """CONFIG parsed once per process (a tenth of a world's time, parsed anew), and a deep
    copy that :func:`check` compares it with: a world must leave it as it found it."""
    cfg = config_mod.loads(CONFIG, "<simulation>")
    return cfg, copy.deepcopy(cfg)


class World:
    """The event queue, the virtual clock and everything in it."""

    def __init__(self, seed: int, *, trace: bool = False, crashes: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = START
        self.trace = trace
        self._heap: list = []
        self._seq = 0
        self.faults = True
        self.cfg, self._cfg_given = _config()
        self.journal = MemoryJournal(":memory:", inline=True, clock=lambda: self.now, hmac_key=KEY,
                                     future=Answer, deliver=deliver)
        self.acquirers = {a.name: SimAcquirer(a.name, self) for a in self.cfg.acquirers}
        self.epoch = 0
        self.up = True
        self.crashes = 0
        self.journal_faults = 0
        self.security_module = sandbox_keys.module()
        self.engine = self._new_engine()
        self.terminals: list[SimTerminal] = []
        self._sweep_at: float | None = None
        self.crash_enabled = crashes
        self.violations: list[str] = []
        self.vas_calls = 0

    # -- the event queue -------------------------------------------------------------

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn))

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] <= end:
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            fn()
        self.now = max(self.now, end)

    def log(self, text: str) -> None:
        if self.trace:
            print(f"{self.now - START:10.4f} {text}")

    # -- the switch ------------------------------------------------------------------

    def _new_engine(self) -> Engine:
        engine = Engine(
            self.cfg,
            key=KEY,
            clock=lambda: self.now,
            healthy=lambda name: self.acquirers[name].up,
            stan_acquirers={a.name for a in self.cfg.acquirers},
            token_keys={MERCHANT: (1, bytes(range(100, 132)))},
        )
        engine.on_flight_done = self._flight_done
        engine.reversals.on_queued = lambda: self._sweep_soon(0.0)
        return engine

    def run_gen(self, gen, done: Callable[[Any, BaseException | None], None]) -> None:
        epoch = self.epoch
        self._step(gen, epoch, None, None, done)

    def _step(self, gen, epoch: int, value: Any, error: BaseException | None, done) -> None:
        if epoch != self.epoch:
            return  # that switch process is gone
        try:
            command = gen.send(value) if error is None else gen.throw(error)
        except StopIteration as stop:
            done(stop.value, None)
            return
        except Exception as exc:  # the engine's own bug: let the checks see it
            done(None, exc)
            return

        def resume(value: Any = None, error: BaseException | None = None, after: float = 0.0) -> None:
            self.at(self.now + after, lambda: self._step(gen, epoch, value, error, done))

        self._execute(command, resume)

    def _execute(self, command, resume) -> None:
        kind = type(command)
        if self.trace and kind is not Wait and kind is not Sec:
            what = {k: v for k, v in command.kwargs.items() if k in ("state", "reversal_stan", "response_code")} \
                if kind is Op else f"host {command.request.host_stan} attempt {command.request.attempt}"
            self.log(f"  {command!r} {command.args[:1] if kind is Op else ''} {what}")
        if kind is Op:
            if (self.faults and command.name in ("update", "store", "insert")
                    and self.rng.random() < 0.01):
                self.journal_faults += 1
                resume(error=JournalError("simulated journal failure"), after=0.002)
                return
            fut = getattr(self.journal, command.name)(*command.args, **command.kwargs)
            try:
                value = fut.result()
            except Exception as exc:
                resume(error=exc, after=0.001)
                return
            # Mostly a fast disk; now and then a slow fsync that lets others overtake.
            slow = self.rng.random() < 0.05
            resume(value, after=self.rng.uniform(0.05, 0.5) if slow else self.rng.uniform(0.0005, 0.003))
        elif kind is Call:
            self.acquirers[command.acquirer].authorize(command.request, command.timeout, resume)
        elif kind is Reverse:
            self.acquirers[command.acquirer].reverse(command.request, command.timeout, resume)
        elif kind is Sec:
            # The software module never awaits anything: run its coroutine to its end.
            coro = getattr(self.security_module, command.method)(*command.args)
            try:
                coro.send(None)
            except StopIteration as stop:
                resume(stop.value, after=0.0002)
            except Exception as exc:
                resume(error=exc, after=0.0002)
            else:
                coro.close()
                raise RuntimeError(f"security module {command.method} awaited something")
        elif kind is Vas:
            self._vas(command, resume)
        elif kind is Pause:
            resume(None, after=command.seconds)
        elif kind is Wait:
            flight = command.flight
            if flight.done:
                resume(flight.answer, flight.error)
            else:
                flight.waiters.append(resume)
        else:
            raise TypeError(command)

    def session_keys(self, tid: str) -> tuple[bytes, bytes]:
        """A terminal's TAK and TPK, made from its ID (the same every run) and imported under the TMK."""
        keys = []
        for name, kind in zip(session_key_names(tid), ("tak", "tpk")):
            key = hashlib.sha256(f"{tid}/{kind}".encode()).digest()[:16]
            coro = self.security_module.import_key(name, kind, "tdes", "demo-tmk-tdes", wrap(TMK, "tdes", key, "tdes"),
                                                   kcv(key, "tdes"))
            try:
                coro.send(None)
            except StopIteration:
                keys.append(key)
        return keys[0], keys[1]
    def _vas(self, command, resume) -> None:
        """A simulated service: a discount or a receipt line, nothing, a late answer or a failure.

        A late one is abandoned at the deadline like the driver does (its
        answer never counts); the engine must go on without it.
        """
        self.vas_calls += 1
        roll = self.rng.random()
        if roll < 0.1:
            resume(error=Overrun("service overran"), after=command.deadline)
            return
        if roll < 0.15:
            resume({name: ConnectionError("down") for name in command.services}, after=0.001)
            return
        p = command.payload
        if p["moment"] == "before" and roll < 0.5 and p["amount"]:
            answer = {"amount": p["amount"] - max(1, p["amount"] // 10), "line": "COUPON -10%"}
        elif p["moment"] == "after":
            answer = {"line": "+1 PTS"}
        else:
            answer = {}
        resume({name: answer for name in command.services}, after=self.rng.uniform(0.001, command.deadline))

    def _flight_done(self, flight) -> None:
        for resume in flight.waiters:
            resume(flight.answer, flight.error)
        flight.waiters.clear()

    def request(self, body: bytes, reply: Callable[[bytes], None]) -> None:
        if not self.up:
            self.log("request lost: the switch is down")
            return

        def done(answer, error):
            if error is not None:
                self.violations.append(f"engine raised {error!r}")
                return
            reply(answer.body)

        self.run_gen(self.engine.handle(body, TERM), done)

    def _sweep_soon(self, after: float) -> None:
        when = self.now + after
        if self._sweep_at is not None and self._sweep_at <= when:
            return
        self._sweep_at = when
        epoch = self.epoch
        self.at(when, lambda: self._sweep(epoch))

    def _sweep(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self._sweep_at = None

        def done(jobs, error):
            if error is not None:
                self.log(f"sweep failed: {error!r}")
            for job in (jobs or {}).values():
                self.run_gen(job, lambda value, error: error and self.log(f"reversal job failed: {error!r}"))
            self._sweep_soon(self.engine.reversals.next_due())

        self.run_gen(self.engine.reversals.sweep(), done)

    def crash(self) -> None:
        """kill -9: the engine and everything it was waiting for are gone; the journal stays."""
        self.crashes += 1
        self.epoch += 1
        self.up = False
        self._sweep_at = None
        self.log("CRASH")
        self.at(self.now + self.rng.uniform(0.5, 3.0), self.restart)

    def restart(self) -> None:
        self.engine = self._new_engine()
        epoch = self.epoch

        def recovered(value, error):
            if error is not None:
                self.log(f"recovery failed: {error!r}; retrying")
                self.at(self.now + 1.0, lambda: epoch == self.epoch and self.run_gen(self.engine.reversals.recover(), recovered))
                return
            self.up = True
            self.log(f"restarted, {value} recovered")
            self._sweep_soon(0.0)

        self.run_gen(self.engine.reversals.recover(), recovered)


@dataclass
class Item:
    """What an acquirer holds for one message it approved."""

    acquirer: str
    mti: str
    amount: int
    terminal_key: tuple
    original: tuple | None  # a completion: the pre-authorization's (host STAN, field 7)
    reversed: bool = False
    reversal_refs: set = field(default_factory=set)


class SimAcquirer:
    """A strict card acquirer behind its adapter: matches reversals by the
    original's host STAN and field 7 only, answers 25 for an unknown one."""

    def __init__(self, name: str, world: World) -> None:
        self.name = name
        self.world = world
        self.up = True
        self.items: dict[tuple, Item] = {}  # (host STAN, field 7) of an approved message
        self.seen: set[tuple] = set()
        self.zpk = bytes.fromhex(sandbox_keys.ZPKS[name])

    def _delay(self) -> float:
        return self.world.rng.uniform(0.002, 0.05)

    def authorize(self, request, timeout: float, resume) -> None:
        w = self.world
        rng = w.rng
        r = rng.random() if w.faults else 1.0
        deadline = w.now + timeout
        ref = f"{request.host_stan}|{request.host_time}|{request.rrn}"
        if request.pin_block is not None:
            try:
                _, pin = pinblock.decipher(self.zpk, "tdes", request.pin_block, request.pan)
            except pinblock.PinBlockError:
                pin = None
            if pin != sandbox_keys.PIN:
                w.violations.append(f"{self.name}: txn {request.txn_id}: a PIN block not under our ZPK")
        if r < 0.03:
            resume(Result(response_code="91"), after=0.001)  # no link: nothing sent
            return
        if r < 0.04:
            resume(error=RuntimeError("adapter bug"), after=0.001)
            return
        if r < 0.05:
            # The adapter hangs; the driver gives up after its grace.  The
            # message may still reach the acquirer.
            w.at(w.now + self._delay(), lambda: self._arrive(request, approve=rng.random() < 0.5))
            resume(error=Overrun("simulated overrun"), after=timeout + _GRACE)
            return
        arrival = w.now + (rng.uniform(timeout, 2 * timeout) if r < 0.08 else self._delay())  # slow network
        latency = rng.uniform(timeout, timeout * 2) if r < 0.12 else self._delay()  # late answer
        drop = r < 0.16
        cut = r < 0.19  # connection lost after sending
        amount = request.amount or 0
        code = "00"
        if amount % 100 == 51:
            code = "51"
        elif amount % 100 == 5:
            code = "05"

        def arrive():
            self._arrive(request, approve=code == "00")

        w.at(arrival, arrive)
        if cut:
            resume(Result(response_code="91", uncertain=True, acquirer_ref=ref), after=min(arrival - w.now + 0.001, timeout))
        elif drop or arrival + latency > deadline:
            resume(Result(response_code="68", uncertain=True, acquirer_ref=ref), after=timeout)
        else:
            auth = "A%05d" % (int(request.host_stan) % 100000) if code == "00" else None
            resume(Result(response_code=code, auth_code=auth, acquirer_ref=ref), after=arrival + latency - w.now)

    def _arrive(self, request, *, approve: bool) -> None:
        key = (request.host_stan, request.host_time)
        self.world.log(f"{self.name}: {request.mti} host {key} amount {request.amount} {'approved' if approve else 'declined'}")
        if key in self.seen:
            self.world.violations.append(f"{self.name}: host STAN/field 7 {key} used twice")
        self.seen.add(key)
        if not approve:
            return
        original = None
        if request.original is not None:
            original = (request.original.host_stan, request.original.host_time)
        self.items[key] = Item(self.name, request.mti, request.amount or 0,
                               (request.terminal_id, request.stan, request.transmission_time), original)

    def reverse(self, request, timeout: float, resume) -> None:
        w = self.world
        rng = w.rng
        r = rng.random() if w.faults else 1.0
        if r < 0.05:
            resume(error=RuntimeError("adapter bug"), after=0.001)
            return
        arrival = w.now + self._delay()
        original = request.original
        key = (original.host_stan, original.host_time)
        outcome: list[str] = []

        def arrive():
            item = self.items.get(key)
            if item is None:
                outcome.append(NOT_FOUND)
                w.log(f"{self.name}: reversal of {key}: 25")
                return
            item.reversed = True
            item.reversal_refs.add((request.host_stan, request.host_time))
            outcome.append(REVERSED)
            w.log(f"{self.name}: reversal of {key} (attempt {request.attempt}): 00")

        w.at(arrival, arrive)
        if r < 0.15:
            resume(RETRY, after=timeout)  # the answer was lost
        else:
            w.at(arrival + self._delay(), lambda: resume(outcome[0]))


class SimTerminal:
    """A terminal (or one lane of a cash register) with its own habits."""

    def __init__(self, world: World, tid: str) -> None:
        self.world = world
        self.tid = tid
        self.stan = world.rng.randint(1, 999_000)
        self.sent: list[dict] = []  # every message sent, with its answers
        self.tak, self.tpk = world.session_keys(tid)

    def next_stan(self) -> str:
        self.stan = self.stan % 999_999 + 1
        return f"{self.stan:06d}"

    def f7(self) -> str:
        import time

        return time.strftime("%m%d%H%M%S", time.gmtime(self.world.now))

    def send(self, fields: dict, note: str = "") -> dict:
        w = self.world
        body = terminal.encode_signed(TERM, fields, self.tak, "tdes")
        record = {"fields": dict(fields), "body": body, "at": w.now, "answers": [],
                  "up": w.up, "epoch": w.epoch, "note": note, "reversal_sent_at": None}
        self.sent.append(record)
        w.log(f"{self.tid} sends {fields['mti']} stan {fields[11]} {note}")

        def reply(body: bytes) -> None:
            msg = TERM.decode(body)
            record["answers"].append((w.now, msg.mti, msg.get(39), msg.get(37), msg.get(38), body))
            try:
                maced = terminal.verify(body, self.tak, "tdes")
            except terminal.MacFieldError:
                maced = False
            if msg.get(39) == "A0" or not maced:
                w.violations.append(f"{self.tid} stan {msg.get(11)}: answer {msg.get(39)} without the right MAC")
            w.log(f"{self.tid} gets {msg.mti} stan {msg.get(11)} 39={msg.get(39)}")

        w.request(record["body"], reply)
        return record

    def financial(self, mti: str, pcode: str, amount: int, card: str, extra: dict | None = None) -> dict:
        fields = {"mti": mti, 2: card, 3: pcode, 4: f"{amount:012d}", 7: self.f7(), 11: self.next_stan(),
                  12: "120000", 13: "0101", 14: "3012", 22: "051", 41: self.tid, 42: MERCHANT, 49: "156"}
        if mti in ("0100", "0200") and self.stan % 2 == 0:
            fields[52] = terminal.pin_block(sandbox_keys.PIN, card, self.tpk, "tdes")
        fields.update(extra or {})
        return fields

    def reversal_of(self, original: dict) -> dict:
        f = original
        return {"mti": "0400", 3: f[3], 4: f[4], 7: self.f7(), 11: self.next_stan(), 41: self.tid, 42: MERCHANT,
                49: "156", 90: f"{f['mti'][:3]}0{f[11]}{f[7]}" + "0" * 22}

    def give_up_later(self, record: dict, tries: int = 4) -> None:
        """Section 6: no answer in time → send 0400 until an 0410 comes."""
        w = self.world
        budget = w.cfg.response_timeout + 2.0

        def check(left: int) -> None:
            if record["answers"] or left <= 0:
                return
            if "reversal" not in record:
                record["reversal"] = self.reversal_of(record["fields"])
            if record["reversal_sent_at"] is None:
                record["reversal_sent_at"] = w.now
            rev = self.send(dict(record["reversal"]), "(no answer: reversal)")
            w.at(w.now + 3.0, lambda: not rev["answers"] and check(left - 1))

        w.at(w.now + budget, lambda: check(tries))

    def script(self, start: float, actions: int) -> None:
        w = self.world
        rng = w.rng
        t = start
        for _ in range(actions):
            t += rng.uniform(0.0, 4.0)
            w.at(t, self._act)

    def _act(self) -> None:
        w = self.world
        rng = w.rng
        card = rng.choice(CARDS)
        amount = rng.choice((100, 2500, 9951, 12005, 777, 40000, 60000))
        r = rng.random()
        if r < 0.40:
            rec = self.send(self.financial("0200", "000000", amount, card), "purchase")
            self.give_up_later(rec)
            self._maybe_again(rec)
            if rng.random() < 0.15:  # the customer changes their mind
                w.at(w.now + rng.uniform(0.0, 6.0), lambda: self._cancel(rec))
        elif r < 0.50:
            rec = self.send(self.financial("0200", "200000", amount, card), "refund")
            self.give_up_later(rec)
            self._maybe_again(rec)
        elif r < 0.70:
            rec = self.send(self.financial("0100", "000000", amount, card), "pre-authorization")
            self.give_up_later(rec)
            self._maybe_again(rec)
            w.at(w.now + rng.uniform(0.5, 12.0), lambda: self._complete(rec, card))
        elif r < 0.80:
            # A reversal of something the switch never saw, then (maybe) that request, late.
            fields = self.financial("0200", "000000", amount, card)
            self.send(self.reversal_of(fields), "reversal of an unseen request")
            if rng.random() < 0.7:
                w.at(w.now + rng.uniform(0.0, 5.0), lambda: self.give_up_later(self.send(fields, "late original")))
        elif r < 0.85:
            self.send({"mti": "0500", 3: "920000", 7: self.f7(), 11: self.next_stan(), 41: self.tid, 42: MERCHANT,
                       49: "156", 74: "0000000000", 76: "0000000001", 86: "0" * 16, 88: "%016d" % amount},
                      "settlement")
        else:
            rec = self.send(self.financial("0200", "000000", amount, card), "purchase")
            self.give_up_later(rec)
            w.at(w.now + rng.uniform(0.0, 0.2), lambda: self._cancel(rec))

    def _maybe_again(self, rec: dict) -> None:
        """Retransmissions and repeats (section 6.1), sometimes while the original is in flight."""
        w = self.world
        rng = w.rng
        r = rng.random()
        if r < 0.15:
            w.at(w.now + rng.uniform(0.0, 12.0), lambda: self.send(dict(rec["fields"]), "retransmission"))
        elif r < 0.25:
            again = dict(rec["fields"])
            again["mti"] = again["mti"][:3] + "1"
            w.at(w.now + rng.uniform(0.0, 12.0), lambda: self.send(again, "repeat"))
        elif r < 0.33 and rec["fields"]["mti"][:3] in ("010", "020"):
            # The register retries and the cashier cancels, back to back.
            def both():
                self.send(dict(rec["fields"]), "retransmission")
                self._cancel(rec)
            w.at(w.now + rng.uniform(0.0, 12.0), both)
        elif r < 0.36:
            other = dict(rec["fields"])
            other[4] = "%012d" % (int(other[4]) + 1)
            w.at(w.now + rng.uniform(0.0, 3.0), lambda: self.send(other, "same key, other amount"))

    def _cancel(self, rec: dict) -> None:
        rev = self.send(self.reversal_of(rec["fields"]), "cancel")
        if not rec["answers"]:
            rec["reversal_sent_at"] = rec["reversal_sent_at"] or self.world.now
        self._maybe_again(rev)

    def _complete(self, pre: dict, card: str) -> None:
        w = self.world
        rng = w.rng
        if not any(a[2] == "00" for a in pre["answers"]):
            return
        authorized = int(pre["fields"][4])
        amount = authorized - rng.choice((0, 1, 50)) if rng.random() < 0.8 else authorized + 100
        f90 = f"0100{pre['fields'][11]}{pre['fields'][7]}" + "0" * 22
        extra = {90: f90}
        fields = self.financial("0220", "000000", max(amount, 1), card, extra)
        if rng.random() < 0.3:
            del fields[2]  # named by reference only
        rec = self.send(fields, "completion")
        self._maybe_again(rec)
        if rng.random() < 0.2:  # a second completion of the same pre-authorization
            second = self.financial("0220", "000000", max(amount, 1), card, extra)
            w.at(w.now + rng.uniform(0.0, 3.0), lambda: self.send(second, "second completion"))


def simulate(seed: int, *, trace: bool = False) -> World:
    logger = logging.getLogger("payswitch")
    level = logger.level
    logger.setLevel(logging.CRITICAL if not trace else logging.INFO)
    try:
        return _simulate(seed, trace)
    finally:
        logger.setLevel(level)  # tests that run after look at the log


def _simulate(seed: int, trace: bool) -> World:
    w = World(seed, trace=trace)
    rng = w.rng
    w._sweep_soon(0.0)
    for i in range(rng.randint(1, 3)):
        term = SimTerminal(w, f"SIM0000{i + 1}")
        w.terminals.append(term)
        term.script(START + rng.uniform(0.0, 1.0), rng.randint(2, 6))
    busy_end = START + 40.0
    if rng.random() < 0.25:
        w.at(START + rng.uniform(0.5, 30.0), w.crash)
    for name, acq in w.acquirers.items():
        if rng.random() < 0.1:
            # An acquirer link goes down for a while (fallback, 91).
            down = START + rng.uniform(0.0, 30.0)
            w.at(down, lambda acq=acq: setattr(acq, "up", False))
            w.at(down + rng.uniform(1.0, 10.0), lambda acq=acq: setattr(acq, "up", True))
    w.run_until(busy_end)
    # At rest: no more faults; the queue drains.
    w.faults = False
    for acq in w.acquirers.values():
        acq.up = True
    w.run_until(busy_end + 300.0)
    return w


def check(w: World) -> list[str]:
    """The invariants; returns what was violated (empty: none)."""
    out = list(w.violations)
    if w.cfg != w._cfg_given:
        out.append("the engine changed the configuration it was given")
    j = w.journal
    records = j._conn.execute("SELECT id FROM txn").fetchall()
    recs = {rid: j.get(rid).result() for (rid,) in records}
    budget = w.cfg.response_timeout + 0.5
    for term in w.terminals:
        by_key: dict[tuple, list] = {}
        reversed_keys = {(s["fields"][90][4:10], s["fields"][90][10:20]) for s in term.sent
                         if s["fields"]["mti"][:3] == "040" and any(a[2] == "00" for a in s["answers"])}
        for sent in term.sent:
            f = sent["fields"]
            answers = sent["answers"]
            if len(answers) > 1:
                out.append(f"{term.tid} stan {f[11]}: {len(answers)} answers to one send")
            if not answers and sent["up"]:
                # Only a crash may swallow an answer (the terminal then reverses or retransmits).
                if not _crashed_between(w, sent):
                    out.append(f"{term.tid} {f['mti']} stan {f[11]}: no answer ({sent['note']})")
            for when, mti, code, rrn, auth, body in answers:
                if when - sent["at"] > budget:
                    out.append(f"{term.tid} stan {f[11]}: answered after {when - sent['at']:.1f} s")
                if mti != f["mti"][:2] + str(int(f["mti"][2]) + 1) + "0":
                    out.append(f"{term.tid} stan {f[11]}: answer MTI {mti} to {f['mti']}")
                if rrn and rrn.isdigit():
                    rec = recs.get(int(rrn))
                    if rec is None or (rec.terminal_id, rec.transmission_time) != (term.tid, rec.transmission_time):
                        out.append(f"{term.tid} stan {f[11]}: answered with rrn {rrn} that the journal does not hold")
                if mti in ("0110", "0210") and code == "00" and rrn and rrn.isdigit():
                    # Field 4 of an approval is the amount authorized (a service may have lowered it).
                    rec = recs.get(int(rrn))
                    if rec is not None and int(TERM.decode(body)[4]) != rec.amount:
                        out.append(f"{term.tid} stan {f[11]}: approved for {TERM.decode(body)[4]}, "
                                   f"journaled {rec.amount}")
                if f["mti"][:3] in ("010", "020") and code == "00" and (f[11], f[7]) in reversed_keys:
                    # The terminal reversed what it was told was approved: undone at the acquirer.
                    rec = recs.get(int(rrn))
                    if rec is None or rec.state not in (states.REVERSED, states.UNMATCHED):
                        out.append(f"{term.tid} stan {f[11]}: approved, reversed by the terminal, but "
                                   f"{rec.state if rec else 'not journaled'}")
                if f["mti"][:3] in ("010", "020", "022"):
                    # A 96 is the switch's own malfunction (a failing journal); an advice
                    # that was not confirmed is forwarded again (section 6.1).
                    unconfirmed = ("68", "91", "96") if f["mti"][:3] == "022" else ("96",)
                    if code not in unconfirmed and code != "94":
                        by_key.setdefault((f[11], f[7], f[4]), []).append((code, rrn, auth))
        # Retransmissions and repeats with the same content get the same answer.
        for key, answers in by_key.items():
            distinct = set(answers)
            if len(distinct) > 1:
                out.append(f"{term.tid} stan {key[0]}: one request, different answers {sorted(distinct)}")
    # At rest: nothing in flight, nothing waiting for a reversal.
    for rec in recs.values():
        if rec.state in (states.SENT, states.REVERSAL_PENDING, states.RECEIVED) and rec.mti != "0800":
            if rec.state == states.RECEIVED and rec.response is None and rec.mti in ("0400", "0500"):
                continue  # a reversal or settlement cut by a crash: nothing left anywhere
            if rec.state == states.RECEIVED and rec.response is None:
                continue  # never left the switch
            out.append(f"txn {rec.id} ({rec.mti} {rec.terminal_id}/{rec.stan}) still {rec.state} at rest")
    # Per acquirer: what the journal holds as approved and standing equals the acquirer's ledger.
    for name, acq in w.acquirers.items():
        ours = {(r.host_stan, r.host_time): r for r in recs.values()
                if r.acquirer == name and r.response_code == "00" and r.state == states.ANSWERED
                and r.mti in ("0100", "0200", "0220")}
        theirs = {k: i for k, i in acq.items.items() if not i.reversed}
        for k in ours.keys() - theirs.keys():
            out.append(f"{name}: journal says txn {ours[k].id} stands approved, the acquirer does not hold {k}")
        for k in ours.keys() & theirs.keys():
            # A service's discount is what the acquirer was asked for and what the journal holds.
            if theirs[k].amount != ours[k].amount:
                out.append(f"{name}: txn {ours[k].id} journaled {ours[k].amount}, the acquirer holds {theirs[k].amount}")
        for k in theirs.keys() - ours.keys():
            out.append(f"{name}: the acquirer holds {k} ({theirs[k].mti} {theirs[k].amount}) the switch does not")
        # No second debit: one standing authorization per terminal request, one completion per pre-auth.
        per_request: dict[tuple, int] = {}
        per_preauth: dict[tuple, int] = {}
        for i in theirs.values():
            if i.mti in ("0100", "0200"):
                per_request[i.terminal_key] = per_request.get(i.terminal_key, 0) + 1
            elif i.original is not None:
                per_preauth[i.original] = per_preauth.get(i.original, 0) + 1
        out += [f"{name}: request {k} authorized {n} times" for k, n in per_request.items() if n > 1]
        out += [f"{name}: pre-authorization {k} completed {n} times" for k, n in per_preauth.items() if n > 1]
        # Every reversal is one chain: all its tries carry the same host STAN and field 7.
        out += [f"{name}: {k} reversed by {len(i.reversal_refs)} chains" for k, i in acq.items.items()
                if len(i.reversal_refs) > 1]
    return out


def _crashed_between(w: World, sent: dict) -> bool:
    return w.crashes > 0 and sent["epoch"] < w.epoch


def run_seed(seed: int) -> tuple[int, list[str], dict]:
    w = simulate(seed)
    problems = check(w)
    stats = {"requests": sum(len(t.sent) for t in w.terminals), "crashes": w.crashes,
             "journal_faults": w.journal_faults,
             "reversed": sum(1 for a in w.acquirers.values() for i in a.items.values() if i.reversed)}
    w.journal.close()
    return seed, problems, stats


def replay_command(seed: int) -> str:
    return f"python -m tests.simulation --seed {seed} --trace"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", default="0-99", help="A-B, inclusive")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args(argv)
    if args.seed is not None:
        w = simulate(args.seed, trace=args.trace)
        problems = check(w)
        for line in problems:
            print("VIOLATION:", line)
        return 1 if problems else 0
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    failed = 0
    totals: dict[str, int] = {}
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.Pool(args.jobs) as pool:
            results = pool.imap_unordered(run_seed, seeds, chunksize=50)
            for seed, problems, stats in results:
                failed += _report(seed, problems, stats, totals)
    else:
        for seed in seeds:
            failed += _report(*run_seed(seed), totals)
    print(f"{len(seeds)} seeds, {failed} failed; " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    return 1 if failed else 0


def _report(seed: int, problems: list[str], stats: dict, totals: dict) -> int:
    for k, v in stats.items():
        totals[k] = totals.get(k, 0) + v
    if problems:
        print(f"seed {seed}: {problems[0]} (+{len(problems) - 1} more); replay: {replay_command(seed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
