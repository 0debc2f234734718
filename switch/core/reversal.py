"""Reversals, store and forward, without I/O (spec sections 6 and 6.1).

A transaction to be reversed is journaled ``reversal_pending`` together with
the reversal's own host STAN and field 7 (the same on every repeat) and when
it was queued, before anyone hears of it; from then on the journal is the
queue and survives restarts.  :meth:`ReversalQueue.sweep` reads it and hands
the driver one job per acquirer: the acquirer's due reversals in the order
they were queued, one at a time (the first try goes as 0420, repeats as
0421), with a doubling back-off between the tries of each.  An acquirer that
answers 25 ("no such original") may just not have seen a slow original yet:
the reversal is repeated for ``reversal_not_found_window`` seconds before it
counts as nothing to reverse (state ``unmatched``, never ``reversed``).  An
acquirer that refuses it with a code no repeat can change (12, 30, 64...: see
:func:`adapters.card.response_codes.reversal_answer`) takes it out of the
queue: state ``reversal_refused``, an ERROR naming its RRN and the code, the
metric ``payswitch_reversals_refused`` and an alert; an operator settles it
with the acquirer (ops/runbook.md).

Host STANs come from per-acquirer blocks reserved in the journal
(:mod:`switch.core.host_stans`), so they stay unique across restarts and
worker processes.

Many hosts match a reversal on the card number and refuse a 0420 without
field 2.  A reversal queued with its PAN known keeps it in memory and, for
whichever process sends it (``serve --workers``: worker 0) or after a
restart, sealed in the journal (:mod:`switch.journal.reversal_card`), written
before the update that queues the reversal.  The sender uses the memory copy
if it has one, else opens the journal's; the sealed copy goes in the journal
operation that ends the reversal.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Generator

from switch.core import pipeline, states
from switch.core.acquirer import NOT_FOUND, REFUSED, REVERSED, Original, Request, reversal_outcome
from switch.core.commands import Op, Pause, Reverse, Wait
from switch.core.host_stans import HostRefs
from switch.core.held import Held, HeldOutcomes
from switch.core.late_answers import LateAnswers, fits_field_38
from switch.core.reversal_said import _no_card, about, acquirer_gone, refused  # noqa: F401 (about: for importers)
from switch.journal import JournalError, StaleState, TxnRecord, reversal_card, same_pan

if TYPE_CHECKING:
    from switch.core.engine import Engine

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

# What a terminal's 0400 may name (spec section 3), and what a 0220 may complete.
REVERSIBLE = ("0100", "0200", "0220")
_NOT_SENT_POLL = 0.05  # seconds between two looks at an original another worker has not sent yet

class ReversalQueue:
    """The engine's reversal side: what to queue, when to try, what an answer means."""

    def __init__(self, engine: "Engine", stan_acquirers) -> None:
        self.engine = engine
        self.stans = HostRefs(stan_acquirers, lambda: engine.clock(), lambda flight: engine.on_flight_done(flight))
        self.stan_acquirers = self.stans.acquirers
        self.stans.on_low = lambda: self.on_queued()  # the sweep refills them
        self.busy: set[str] = set()  # acquirers with a job running
        # Card numbers of reversals queued (or opened) in this process, for hosts
        # that want field 2 repeated; the journal keeps them sealed only.
        self.pans: dict[int, str] = {}
        # Outcomes that could not be journaled (a failing journal after an
        # approval): retried by every sweep; recovery covers a restart.
        # (acquirer, card, reverse, event, the acquirer's references: auth_code, acquirer_ref)
        self.stranded: dict[int, tuple[str, str | None, bool, str, dict]] = {}
        # Terminal reversals answered 00 whose journaling failed: (41, 42, MTI, 11, 7).
        self.named: list[tuple[str, str, str, str, str]] = []
        self.on_queued = lambda: None
        # A terminal's 0400 named a request still at its acquirer: the driver lets an
        # adapter that holds it (a wallet order waiting for its customer) withdraw it now.
        self.on_withdraw = lambda flight: None
        self._next = 0.0  # when the last sweep expects the next one to have work
        self._forget_at = 0.0  # when the next sweep forgets cards past card_retention
        # Late answers, until their reversals take them; a late approval reopens an unmatched one.
        self.late = LateAnswers(lambda rec: self.queued(rec.id, None, "late_approval"), lambda: engine.clock())
        # Reversal outcomes the journal refused to record (switch.core.held): not sent again meanwhile.
        self.held = HeldOutcomes()
        self._depth = (0, None)  # the journal's backlog (count, oldest) at its last answer
        # Reversals pending for an acquirer the configuration no longer has (logged once each).
        self.unconfigured: set[int] = set()

    # -- host STANs ------------------------------------------------------------------

    def host_ref(self, acquirer: str | None) -> Gen:
        """(host STAN, field 7) for a message to ``acquirer`` (:meth:`HostRefs.host_ref`)."""
        return (yield from self.stans.host_ref(acquirer))

    def take_stan(self, acquirer: str) -> str:
        """A host STAN now, without the journal (an adapter's own network message)."""
        return self.stans.take_stan(acquirer)

    def prefill(self) -> Gen:
        """Reserve a block for every acquirer that takes the switch's STANs (at start-up)."""
        yield from self.stans.prefill()

    def start_fields(self, acquirer: str | None, txn_id: int | None = None, pan: str | None = None) -> Gen:
        """The journal columns that queue a reversal at ``acquirer``.

        With the card number known (``pan``), it is sealed into the journal
        first, so that a sender that never saw it finds it as soon as it
        finds the reversal."""
        if pan and txn_id:
            yield from self.keep_card(txn_id, pan)
        stan, when = yield from self.host_ref(acquirer)
        return {"reversal_stan": stan, "reversal_time": when, "reversal_started": float(self.engine.clock()),
                "reversal_attempts": 0}

    def keep_card(self, txn_id: int, pan: str) -> Gen:
        """Seal ``pan`` into the journal for the reversal of ``txn_id``.

        A failure costs only field 2 in another process or after a restart
        (this one keeps its memory copy): logged, never raised, the PAN never quoted."""
        try:
            yield Op("keep_reversal_card", txn_id, reversal_card.seal(self.engine.key, txn_id, pan))
        except Exception as exc:
            log.error("txn %d: the card number for its reversal could not be journaled (%s); only this "
                      "process can repeat field 2", txn_id, type(exc).__name__)

    # -- queueing --------------------------------------------------------------------

    def queued(self, txn_id: int, pan: str | None, trigger: str) -> None:
        if pan:
            self.pans[txn_id] = pan
        self.engine.metrics.reversal(trigger, "queued")
        self.on_queued()

    def strand(self, rec: TxnRecord, acquirer: str, pan: str | None, *, reverse: bool, event: str,
               result: Any = None) -> Gen:
        """The outcome of ``rec`` could not be journaled and the terminal gets 96.

        If money may have moved (``reverse``) its reversal is queued, with the
        acquirer's references from ``result`` (its field 38 and RRN: a strict
        host matches the reversal by them); otherwise the 96 is recorded as
        its answer (``event``: answer, or unconfirmed for an advice).  In the
        journal if it takes the write, else in memory, retried by every sweep
        (and covered by recovery after a restart).
        """
        kept = _references(result)
        try:
            yield Op("update", rec.id,
                     **(yield from self._stranded_changes(rec.id, acquirer, pan, reverse, event, kept)))
        except Exception as e:
            refused = isinstance(e, JournalError)  # the journal's refusal (writer died, disk full): no bug
            log.error("rrn %s: cannot journal that either%s; kept in memory until the journal recovers", rec.rrn,
                      f" ({e})" if refused else "", exc_info=not refused, **about(rec))
            self.stranded[rec.id] = (acquirer, pan, reverse, event, kept)
            self.on_queued()  # a sweep counts it in the backlog and tries again (every reversal_retry)
            return
        if reverse:
            self.queued(rec.id, pan, "stranded")

    def _stranded_changes(self, txn_id: int, acquirer: str, pan: str | None, reverse: bool, event: str,
                          kept: dict) -> Gen:
        if not reverse:
            return {"state": states.advance(states.SENT, event), "response_code": "96"}
        changes = yield from self.start_fields(acquirer, txn_id, pan)
        changes.update(kept, state=states.advance(states.SENT, "uncertain"), acquirer=acquirer)
        return changes

    def reverse_named(self, tid: str, merchant_id: str, mti: str, stan: str, when: str) -> Gen:
        """A terminal's 0400 (already answered) for what (41, 11, 7) names; if the
        journal fails now, kept in memory and retried by every sweep."""
        try:
            yield from self.undo(tid, merchant_id, mti, stan, when, in_flight=False)
        except Exception:
            log.exception("reversal of %s/%s could not be journaled; retried by the next sweep", tid, stan)
            self.named.append((tid, merchant_id, mti, stan, when))
            self.on_queued()

    def undo(self, tid: str, merchant_id: str, o_mti: str, o_stan: str, o_time: str,
             *, in_flight: bool = True, pan: str | None = None) -> Gen:
        """Undo whatever (41, 11, 7) names, in whatever state it is: (its id, its kind).

        ``pan``: the card number the terminal's 0400 carried, if any; kept (sealed)
        for the host's field 2 only when it is the original's card."""
        okey = (tid, o_stan, o_time)
        while True:
            try:
                return (yield from self._named_once(okey, merchant_id, o_mti, in_flight, pan))
            except StaleState:
                continue  # moved on while we looked: look again

    def _named_once(self, okey: tuple[str, str, str], merchant_id: str, o_mti: str, in_flight: bool,
                    pan: str | None = None) -> Gen:
        tid, o_stan, o_time = okey
        orig = None
        while True:
            flight = self.engine.inflight.get(okey) if in_flight else None
            if flight is not None and flight.decided:
                # Its outcome is being journaled this moment: wait for that, then
                # reverse it like any answered one.
                try:
                    yield Wait(flight)
                except Exception:
                    pass  # its own failure is its own answer; the journal tells the rest
                continue
            orig = yield Op("find", *okey)
            flight = self.engine.inflight.get(okey) if in_flight else None
            if flight is None and in_flight and orig is not None and self._not_sent_elsewhere(orig):
                yield Pause(_NOT_SENT_POLL)  # another worker's, not sent yet: once sent, it is reversed (6.1)
                continue
            if flight is None or orig is not None and orig.state not in (states.RECEIVED, states.SENT):
                break  # nothing in flight, or only a retransmission of something answered
            if flight.decided:
                continue
            if flight.kind == "citycard" and flight.mti == "0220":
                log.warning("0400 for %s/%s names a city-card offline upload in flight: not reversed", tid, o_stan)
                return (orig.id if orig else flight.txn_id), "citycard"
            # Being authorized: answered 68 when its answer comes and reversed if
            # approved; if it ends another way, reversed from the journal then
            # (and after a crash, recovery reverses what was sent).
            flight.reverse_requested = True
            log.info("0400 for %s/%s while it is in flight; it will not be answered 00", tid, o_stan)
            self.on_withdraw(flight)
            # Named by the payment's own kind (the 0400's journal record, its metrics), as
            # the journal names a request not classified yet: card.
            return (orig.id if orig else flight.txn_id), (orig.kind if orig else _kind_of(flight))
        if orig is None:
            # Section 6.1: never seen.  The key is void for the retransmission
            # window, so the original, should it come late, is answered 94.
            void = TxnRecord(terminal_id=tid, merchant_id=merchant_id, mti=o_mti, stan=o_stan,
                             transmission_time=o_time, kind="card", state=states.VOID)
            orig, created = yield Op("insert", void)
            if not created and okey in self.engine.inflight:  # it arrived this very moment
                self.engine.inflight[okey].reverse_requested = True
                return orig.id, orig.kind
        if orig.mti == "0220" and orig.kind == "citycard" and orig.original_id is None:
            # An offline upload: the card already paid, so the centre keeps it (README).
            log.warning("0400 for %s/%s names a city-card offline upload: not reversed", tid, o_stan)
            return orig.id, orig.kind
        if orig.mti in REVERSIBLE and orig.acquirer and states.needs_reversal(orig.state, orig.response_code) \
                and not pipeline.is_inquiry(orig.processing_code):  # an inquiry moved no money
            if orig.state != states.REVERSAL_PENDING:
                card = self.card_for(orig, pan)
                changes = yield from self.start_fields(orig.acquirer, orig.id, card)
                yield Op("update_if", orig.id, orig.state, state=states.advance(orig.state, "reverse"), **changes)
                self.queued(orig.id, card, "terminal")
        return orig.id, orig.kind

    def _not_sent_elsewhere(self, orig: TxnRecord) -> bool:
        """Journaled by another worker (serve --workers) and not sent yet, within its deadline:
        answering the 0400 now would queue nothing, and the original would go out after it."""
        engine = self.engine
        return (engine.shared_journal and orig.state == states.RECEIVED
                and engine.clock() < orig.created_at + engine.cfg.response_timeout)

    def card_for(self, orig: TxnRecord, pan: str | None) -> str | None:
        """The card number for the reversal of ``orig``: ``pan`` (what the terminal sent now)
        if it is ``orig``'s card, else the one sealed with its approval, else None."""
        return self._card_of(orig, pan) or self._card_in_flight(orig)

    def _card_of(self, orig: TxnRecord, pan: str | None) -> str | None:
        """``pan`` if it is ``orig``'s card (by its pan_hash), else None (logged, never quoted)."""
        if not pan or orig.kind == "citycard":
            return None
        if orig.pan_hash is None or not pan.isdigit() or not same_pan(pan, orig.pan_hash, self.engine.key):
            log.info("rrn %s: the 0400's card number is not its original's; the reversal goes without field 2",
                     orig.rrn, **about(orig))
            return None
        return pan

    def original_of(self, rec: TxnRecord, pan: str | None = None) -> Original:
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
            host_stan=rec.host_stan,
            host_time=rec.host_time,
            pan=pan or self.pans.get(rec.id),
            local_time=rec.local_time,
            local_date=rec.local_date,
            entry_mode=rec.entry_mode,
        )

    def request_for(self, rec: TxnRecord) -> Request:
        """The reversal of ``rec`` as an adapter takes it (the same on every repeat)."""
        original = self.original_of(rec)
        return Request(
            txn_id=rec.id,
            kind=rec.kind,
            mti="0400",
            processing_code=rec.processing_code or "000000",
            amount=rec.amount,
            currency=rec.currency,
            terminal_id=rec.terminal_id,
            merchant_id=rec.merchant_id,
            stan=rec.stan,
            transmission_time=rec.transmission_time,
            rrn=rec.rrn,
            local_time=rec.local_time,
            local_date=rec.local_date,
            pan=original.pan,
            entry_mode=rec.entry_mode,
            original=original,
            host_stan=rec.reversal_stan,
            host_time=rec.reversal_time,
            attempt=rec.reversal_attempts,
        )

    def late_auth_code(self, acquirer: str, host_stan: str, host_time: str, auth_code: str | None,
                       acquirer_ref: str | None = None, approved: bool = False) -> Gen:
        """An answer came after the switch gave up on it (68 and reversed): its field 38 and
        ``acquirer_ref`` (the amount held, when the acquirer approved another than requested)
        go with its reversal, and an approval (``approved``) reopens one recorded unmatched
        (:mod:`switch.core.late_answers`).  True if the reversal took any of it."""
        return (yield from self.late.tell(acquirer, host_stan, host_time, auth_code, acquirer_ref, approved))

    # -- the store-and-forward sweep -------------------------------------------------

    def sweep(self, limit: int = 10_000, *, sender: bool = True) -> Gen:
        """Read the queue; return ``{acquirer: generator}``, one job per acquirer with
        reversals due and no job running.  Also reports the backlog.

        ``sender=False`` (a worker that is not the reversal sender, ``serve
        --workers``): only journal what this process keeps in memory (stranded
        outcomes, reversals named while the journal failed); another worker
        sends the reversals.

        While the journal refuses (disk full, I/O error), the next sweep comes
        ``reversal_retry`` later, said once per failure burst, and the backlog
        reported is the last the journal told plus what this process holds."""
        try:
            jobs = yield from self._sweep(limit, sender)
        except JournalError as e:
            cfg = self.engine.cfg
            now = self.engine.clock()
            self.held.later(now, cfg.reversal_retry)
            self._next = now + cfg.reversal_retry
            self.held.refused("reversal sweep: the journal refused", e, cfg.reversal_retry)
            # A worker that is not the sender counts only what it holds: the sender counts the journal's.
            count, oldest = self._depth if sender else (0, None)
            self.engine.metrics.reversal_backlog(count + len(self.stranded) + len(self.named), oldest)
            return {}
        if not self.held:
            self.held.recovered()
        return jobs

    def failed(self) -> None:
        """A sweep ended in an error of the switch's own: the next waits reversal_retry, not a loop."""
        self._next = self.engine.clock() + self.engine.cfg.reversal_retry

    def _write_held(self) -> Gen:
        """The held outcomes that are due, into the journal (a refusal propagates: the sweep waits)."""
        for txn_id, held in self.held.due(self.engine.clock()):
            try:
                yield Op(held.op, txn_id, held.expect, **held.changes)
            except StaleState:
                log.info("txn %d moved on while its reversal's outcome was held", txn_id)
            del self.held.outcomes[txn_id]
            if held.event != "retry":
                self.pans.pop(txn_id, None)

    def _sweep(self, limit: int, sender: bool) -> Gen:
        engine = self.engine
        yield from self.stans.refill_low()  # what the links' network messages alone brought low
        named, self.named = self.named, []
        for args in named:
            if (args[0], args[3], args[4]) in engine.inflight:
                self.named.append(args)  # its own flight will see to it
                continue
            yield from self.reverse_named(*args)
        for txn_id, (acquirer, pan, reverse, event, kept) in list(self.stranded.items()):
            try:
                yield Op("update_if", txn_id, states.SENT,
                         **(yield from self._stranded_changes(txn_id, acquirer, pan, reverse, event, kept)))
            except (StaleState, KeyError):
                pass  # someone else settled it meanwhile
            else:
                if reverse:
                    self.queued(txn_id, pan, "stranded")
            del self.stranded[txn_id]
        if not sender:
            # This process never sends a reversal: the sender opens the journal's copies.
            self.pans.clear()
            self._next = engine.clock() + engine.cfg.reversal_backoff_max
            engine.metrics.reversal_backlog(len(self.stranded) + len(self.named), None)
            return {}
        yield from self._write_held()
        now = engine.clock()
        cfg = engine.cfg
        if now >= self._forget_at:
            # Approved payments' cards past card_retention go (the sender alone: one walk of the journal).
            self._forget_at = now + min(cfg.reversal_backoff_max, 60.0)
            yield Op("forget_cards", now - cfg.card_retention)
        count, oldest, refused_count = yield Op("reversal_backlog")
        self._depth = (count, oldest)
        engine.metrics.reversal_backlog(count + len(self.stranded) + len(self.named), oldest)
        engine.metrics.reversals_refused(refused_count)
        # With nothing queued, the next sweep comes when something is (on_queued);
        # the idle period is only a safety net.
        self._next = now + cfg.reversal_backoff_max
        if not count:
            return {}
        pending = yield Op("pending_reversals", limit)
        due: dict[str, list[TxnRecord]] = {}
        unconfigured = set()
        for rec in pending:
            if rec.id in self.held:  # answered; its outcome waits for the journal
                self._next = min(self._next, self.held.next_due(rec.id))
                continue
            if rec.acquirer not in engine.acquirer_cfg:
                unconfigured.add(rec.id)
                if rec.id not in self.unconfigured:
                    acquirer_gone(rec)
                continue
            if rec.acquirer in self.busy:
                self._next = min(self._next, now + cfg.reversal_retry)
                continue
            flight = engine.inflight.get((rec.terminal_id, rec.stan, rec.transmission_time))
            if flight is not None and flight.txn_id in (None, rec.id):
                self._next = min(self._next, now + cfg.reversal_retry)
                continue  # the original is still being answered
            # (A request of a record retired from this key is another one: the
            # terminal's next completion after an uncertain one waits for this reversal.)
            wait = pipeline.reversal_backoff(rec.reversal_attempts, cfg.reversal_retry, cfg.reversal_backoff_max)
            if now < rec.updated_at + wait:
                self._next = min(self._next, rec.updated_at + wait)
                continue
            due.setdefault(rec.acquirer, []).append(rec)
        self.unconfigured = unconfigured
        engine.metrics.reversals_unconfigured(len(unconfigured))
        jobs = {}
        for acquirer, recs in due.items():
            self.busy.add(acquirer)
            jobs[acquirer] = self._reverse_at(acquirer, recs)
        return jobs

    def next_due(self) -> float:
        """Seconds until the next sweep has something to do, as the last one saw it
        (the driver also sweeps at once when a reversal is queued)."""
        return min(max(0.01, self._next - self.engine.clock()), self.engine.cfg.reversal_backoff_max)

    def _reverse_at(self, acquirer: str, recs: list[TxnRecord]) -> Gen:
        """One acquirer's due reversals, in order, one at a time."""
        engine = self.engine
        try:
            for rec in recs:
                acq = engine.acquirer_cfg.get(acquirer)
                if acq is None:
                    continue  # gone since the sweep: the next sweep says so
                if rec.id not in self.pans and rec.pan_hash is not None:
                    yield from self._open_card(rec)
                try:
                    answer = yield Reverse(acquirer, self.request_for(rec), acq.timeout)
                    outcome = reversal_outcome(answer)
                except Exception:
                    log.exception("reversal of txn %d at %s failed", rec.id, acquirer, **about(rec))
                    outcome = "retry"
                now = engine.clock()
                started = rec.reversal_started if rec.reversal_started is not None else rec.created_at
                cfg = engine.cfg
                if outcome == NOT_FOUND and now - started < cfg.reversal_not_found_window:
                    outcome = "retry"  # it may have overtaken its original: ask again later
                elif outcome == REFUSED and outcome.held_unknown and now - started < cfg.reversal_not_found_window:
                    # Refused for an amount we never learnt (no answer in time): a late answer may tell it.
                    log.info("txn %d: %s refused its reversal's amount (%s); tried again", rec.id, acquirer,
                             outcome.code, **about(rec))
                    outcome = "retry"
                event = {REVERSED: "reversed", NOT_FOUND: "not_found", REFUSED: "refused"}.get(outcome, "retry")
                if event == "not_found":
                    log.warning("txn %d (rrn %s): %s still knows no such original after %.0f s; nothing to reverse",
                                rec.id, rec.rrn, acquirer, now - started, **about(rec))
                elif event == "refused":
                    refused(rec, acquirer, outcome)
                if event == "retry":
                    op, changes = "update_if", {"reversal_attempts": rec.reversal_attempts + 1}
                else:  # its sealed card number goes with it; a refusal's code stays for the operator
                    op = "end_reversal"
                    changes = {"reversal_code": getattr(outcome, "code", None)} if event == "refused" else {}
                changes["state"] = states.advance(rec.state, event)
                try:
                    yield Op(op, rec.id, rec.state, **changes)
                except StaleState:
                    log.info("txn %d moved on while its reversal was under way", rec.id)
                except JournalError as e:
                    # Held, not lost and not sent again at once: written by a sweep reversal_retry later.
                    held = Held(op, rec.state, changes, event, now + cfg.reversal_retry)
                    self.held.hold(rec.id, held, e, cfg.reversal_retry)
                    engine.metrics.reversal("queue", str(outcome))
                    continue
                if event != "retry":
                    self.pans.pop(rec.id, None)
                engine.metrics.reversal("queue", str(outcome))
        finally:
            self.busy.discard(acquirer)
            self.on_queued()  # a sweep sees when the ones left are due

    def _open_card(self, rec: TxnRecord) -> Gen:
        """The card number the journal keeps sealed for ``rec``'s reversal, into memory
        (queued in another process, or before a restart).  Without it the
        reversal goes without field 2, as before: logged, never raised."""
        try:
            sealed = yield Op("reversal_card", rec.id)
            if sealed is not None:
                self.pans[rec.id] = reversal_card.open_sealed(self.engine.key, rec.id, sealed)
        except Exception as exc:
            _no_card(rec, exc)

    def _card_in_flight(self, rec: TxnRecord) -> str | None:
        """The card number ``rec`` kept sealed while at its acquirer, for its reversal's field 2.

        None without one; one that does not open is logged, and its reversal
        goes without field 2.
        """
        if rec.card_sealed is None:
            return None
        try:
            return reversal_card.open_in_flight(self.engine.key, rec)
        except Exception as exc:
            _no_card(rec, exc)
            return None

    # -- start-up --------------------------------------------------------------------

    def recover(self) -> Gen:
        """Transactions found "sent" at start-up died with their outcome unknown: reverse them.

        A city-card upload is never reversed (the card already paid): it is
        marked unconfirmed, and the terminal's next upload is forwarded again.
        Then the sealed card numbers of reversals that ended go.
        """
        found = yield Op("in_states", (states.SENT,), limit=1_000_000)
        count = yield from self.recover_records(found)
        yield from self.purge_cards()
        return count

    def recover_records(self, found: list[TxnRecord]) -> Gen:
        """Reverse these "sent" transactions whose process is gone (all of them at
        start-up; with several workers, those of a worker that died)."""
        for rec in found:
            offline = rec.mti == "0220" and rec.kind == "citycard" and rec.original_id is None
            if offline or pipeline.is_inquiry(rec.processing_code):
                # Nothing to undo at the host: the card already paid, or an inquiry moved no money.
                yield Op("update", rec.id, state=states.advance(rec.state, "unconfirmed"), response_code="68")
                if offline:
                    log.warning("txn %d (rrn %s): offline advice in flight at shutdown; the terminal uploads it "
                                "again", rec.id, rec.rrn, **about(rec))
                else:
                    log.info("txn %d (rrn %s): balance inquiry in flight at shutdown; not reversed", rec.id,
                             rec.rrn, **about(rec))
                continue
            pan = self._card_in_flight(rec)
            changes = yield from self.start_fields(rec.acquirer, rec.id, pan)
            try:
                yield Op("update_if", rec.id, states.SENT, state=states.advance(rec.state, "crash_recovery"), **changes)
            except StaleState:
                continue  # answered or reversed meanwhile
            self.queued(rec.id, pan, "recovery")
            log.warning("txn %d (rrn %s) was in flight at shutdown: queued for reversal", rec.id, rec.rrn, **about(rec))
        return len(found)

    def purge_cards(self) -> Gen:
        """Start-up: drop the sealed cards of reversals that ended while their
        card's deletion did not (a crash between the two)."""
        gone = yield Op("purge_reversal_cards")
        if gone:
            log.info("%d sealed card number(s) of reversals no longer pending dropped", gone)
        return gone


def _kind_of(flight: Any) -> str:
    """The journal's kind of a request in flight (``unknown`` before it is classified is card)."""
    return flight.kind if flight.kind not in (None, "unknown") else "card"


def _references(result: Any) -> dict:
    """The journal columns of ``result`` a reversal names its original by: the
    acquirer's field 38 (when a field 38 can carry it: an6) and its references."""
    kept = {}
    auth_code = getattr(result, "auth_code", None)
    if fits_field_38(auth_code):
        kept["auth_code"] = auth_code
    if getattr(result, "acquirer_ref", None) is not None:
        kept["acquirer_ref"] = result.acquirer_ref
    return kept
