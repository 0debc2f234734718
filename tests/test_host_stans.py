"""Host STANs from journal blocks (switch.core.host_stans), with a scripted journal.

Two workers share one stan_block sequence the way ``serve --workers`` does;
each one's reservations are answered (or failed) when the test says, so a
refill can lag behind any number of requests.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from switch.core.commands import Op, Wait
from switch.core.reversal import ReversalQueue
from switch.journal import JournalError, open_journal

BANK = "bank-a"
BLOCK = 10_000
RESERVE = 100  # the STANs requests leave to the link's network messages


class Sequence:
    """The journal's stan_block row for one acquirer (as ``_reserve_stans`` keeps it)."""

    def __init__(self, next_stan: int = 1) -> None:
        self.next = next_stan

    def reserve(self, count: int) -> int:
        start = self.next
        self.next = (start - 1 + count) % 999_999 + 1
        return start


def block(start: int, count: int = BLOCK) -> set[str]:
    return {f"{(start - 1 + i) % 999_999 + 1:06d}" for i in range(count)}


class Worker:
    """One process's ReversalQueue, its generators stepped by hand.

    Reservations wait in ``refills`` until :meth:`answer_refills`; a Wait is
    resumed when the flight it names is done (as the asyncio driver does)."""

    def __init__(self, sequence: Sequence) -> None:
        self.sequence = sequence
        self.engine = SimpleNamespace(clock=lambda: 1_764_500_000.0, on_flight_done=self._flight_done,
                                      cfg=SimpleNamespace(reversal_backoff_max=60.0),
                                      metrics=SimpleNamespace(reversal_backlog=lambda depth, oldest: None))
        self.queue = ReversalQueue(self.engine, {BANK})
        self.refills: list = []  # generators waiting for reserve_stans
        self.ready: list = []  # (generator, value, error) to resume
        self.results: list = []
        self.errors: list = []
        self.lows = 0
        self.queue.on_queued = self._low

    def _low(self) -> None:
        self.lows += 1

    def _flight_done(self, flight) -> None:
        for gen in flight.waiters:
            self.ready.append((gen, flight.answer, flight.error))
        flight.waiters.clear()

    def start(self, gen) -> None:
        self._step(gen, None, None)
        self._run_ready()

    def _step(self, gen, value, error) -> None:
        try:
            command = gen.send(value) if error is None else gen.throw(error)
        except StopIteration as stop:
            self.results.append(stop.value)
            return
        except Exception as exc:
            self.errors.append(exc)
            return
        if type(command) is Wait:
            flight = command.flight
            if flight.done:
                self.ready.append((gen, flight.answer, flight.error))
            else:
                flight.waiters.append(gen)
        elif type(command) is Op and command.name == "stan_position":  # a sweep: answered at once
            self.ready.append((gen, self.sequence.next, None))
        else:
            assert type(command) is Op and command.name == "reserve_stans", command
            assert command.args == (BANK, BLOCK)
            self.refills.append(gen)

    def _run_ready(self) -> None:
        while self.ready:
            self._step(*self.ready.pop(0))

    def answer_refills(self, error: Exception | None = None) -> None:
        refills, self.refills = self.refills, []
        for gen in refills:
            if error is None:
                self._step(gen, self.sequence.reserve(BLOCK), None)
            else:
                self._step(gen, None, error)
        self._run_ready()

    def requests(self, n: int) -> None:
        for _ in range(n):
            self.start(self.queue.host_ref(BANK))

    def stans(self) -> list[str]:
        return [r[0] for r in self.results if r is not None and r != {}]


def started(sequence: Sequence) -> Worker:
    worker = Worker(sequence)
    worker.start(worker.queue.prefill())
    worker.answer_refills()
    assert worker.results == [None] and not worker.errors
    worker.results.clear()
    return worker


def test_a_worker_never_numbers_past_its_blocks_while_a_refill_lags():
    sequence = Sequence()
    a = started(sequence)  # holds 000001..010000
    a.requests(BLOCK - RESERVE + 50)  # the refill starts at half a block and lags behind all of these
    network, refused = [], []
    for _ in range(2 * RESERVE):  # sign-ons and echoes meanwhile
        try:
            network.append(a.queue.take_stan(BANK))
        except Exception as exc:
            refused.append(exc)
    b = started(sequence)  # another worker reserves the next block meanwhile
    b.requests(10)
    a.answer_refills()  # a's refill at last: the block after b's
    sent_by_a = a.stans() + network
    assert not set(sent_by_a) & set(b.stans())
    assert set(sent_by_a) <= block(1) | block(2 * BLOCK + 1)  # nothing under b's block
    assert len(set(sent_by_a)) == len(sent_by_a)
    assert set(b.stans()) <= block(BLOCK + 1)
    # Requests left the last 100 to the network messages and waited for the refill.
    assert len(network) == RESERVE and all("no host STAN left" in str(e) for e in refused)
    assert not a.errors and len(a.results) == BLOCK - RESERVE + 50
    assert sequence.next == 3 * BLOCK + 1  # one refill for all of them


def test_requests_that_find_no_stan_left_wait_for_one_refill():
    sequence = Sequence()
    a = Worker(sequence)
    a.start(a.queue.prefill())  # the start-up reservation lags
    a.requests(500)
    assert len(a.refills) == 1 and not a.results  # one reservation, not one per request
    a.answer_refills()
    assert sequence.next == BLOCK + 1  # one block taken from the journal
    assert not a.errors and len(set(a.stans())) == 500 and set(a.stans()) <= block(1)


def test_a_failed_refill_ends_the_requests_waiting_for_it_with_its_error():
    sequence = Sequence()
    a = Worker(sequence)
    a.start(a.queue.prefill())
    a.requests(3)
    a.answer_refills(JournalError("disk full"))
    # The prefill and the three requests end with the journal's error (the engine
    # answers 96, before anything is journaled or sent); none has a STAN.
    assert [type(e) for e in a.errors] == [JournalError] * 4 and not a.results
    a.requests(1)  # the next request tries again
    assert len(a.refills) == 1
    a.answer_refills()
    assert a.stans() == ["000001"]


def test_a_refill_that_fails_while_stans_are_left_costs_no_request():
    sequence = Sequence()
    a = started(sequence)
    a.requests(BLOCK // 2 + 2)  # the refill starts with the last of these
    assert len(a.refills) == 1
    a.answer_refills(JournalError("disk full"))
    assert not a.errors and len(a.results) == BLOCK // 2 + 2
    a.requests(1)  # still low: the next request tries again
    assert len(a.refills) == 1


def test_a_block_wraps_past_999999_and_ends_where_it_ends():
    sequence = Sequence(995_001)
    a = started(sequence)
    taken = [a.queue.take_stan(BANK) for _ in range(BLOCK)]
    assert taken[:2] == ["995001", "995002"] and taken[4998:5001] == ["999999", "000001", "000002"]
    assert taken[-1] == "005001" and set(taken) == block(995_001)
    with pytest.raises(Exception, match="no host STAN left"):
        a.queue.take_stan(BANK)
    assert sequence.next == 5002


def test_the_sweep_refills_what_network_messages_alone_brought_low():
    sequence = Sequence()
    a = started(sequence)
    for _ in range(BLOCK // 2):
        a.queue.take_stan(BANK)
    assert a.lows == 0
    a.queue.take_stan(BANK)
    assert a.lows == 1  # the sweeper is woken
    a.start(a.queue.sweep(sender=False))
    assert len(a.refills) == 1
    a.answer_refills()
    assert a.results == [{}] and sequence.next == 2 * BLOCK + 1
    taken = [a.queue.take_stan(BANK) for _ in range(BLOCK)]
    assert taken[-1] == f"{BLOCK + BLOCK // 2 + 1:06d}" and set(taken) <= block(1) | block(BLOCK + 1)


@pytest.mark.parametrize("writer", ["thread"])
def test_the_journal_hands_out_blocks_once_across_restarts_and_past_999999(tmp_path, writer):
    url = f"sqlite://{tmp_path}/journal.sqlite"
    j = open_journal(url, writer=writer)
    assert j.reserve_stans(BANK, BLOCK).result(10) == 1
    assert j.reserve_stans(BANK, 999_999 - BLOCK - 5000).result(10) == BLOCK + 1
    j.close()
    j = open_journal(url, writer=writer)  # the journal restarts: a worker's next block follows
    assert j.reserve_stans(BANK, BLOCK).result(10) == 995_000
    assert j.reserve_stans(BANK, BLOCK).result(10) == 5001  # past 999999: from 000001 on
    j.close()


def test_requests_that_find_no_stan_and_a_failing_refill_are_answered_96_and_never_sent():
    """The engine on the deterministic simulation's journal and acquirers (tests.simulation)."""
    from concurrent.futures import Future

    from tests.simulation import CARDS, SimTerminal, World

    w = World(5, crashes=False)
    w.faults = False
    real, calls = w.journal.reserve_stans, []

    def failing(acquirer, count):
        calls.append(acquirer)
        fut = Future()
        fut.set_exception(JournalError("disk I/O error"))
        return fut

    w.journal.reserve_stans = failing
    term = SimTerminal(w, "SIM00001")
    burst = [term.send(term.financial("0200", "000000", 1000 + i, CARDS[0])) for i in range(5)]
    w.run_until(w.now + 5.0)
    assert [r["answers"][0][2] for r in burst] == ["96"] * 5
    assert calls == ["bank-a"]  # one reservation for the burst
    assert not any(acq.seen or acq.items for acq in w.acquirers.values())  # nothing reached an acquirer
    assert w.journal._conn.execute("SELECT count(*) FROM txn").fetchone()[0] == 0  # nor the journal
    w.journal.reserve_stans = real
    again = term.send(term.financial("0200", "000000", 1100, CARDS[0]))
    w.run_until(w.now + 5.0)
    assert again["answers"][0][2] == "00" and w.acquirers["bank-a"].items  # this one went


def test_at_once_numbers_as_host_ref_does_and_leaves_the_waits_and_refills_to_it():
    sequence = Sequence()
    a = Worker(sequence)
    stans = a.queue.stans
    assert stans.at_once("no-stan-acquirer") == (None, None)  # takes no switch STANs: never waits
    assert stans.at_once(BANK) is None  # nothing reserved yet: host_ref waits for the refill
    a.start(a.queue.prefill())
    a.answer_refills()
    taken = [stans.at_once(BANK) for _ in range(BLOCK // 2 + 1)]  # the last leaves fewer than half a block
    assert [t[0] for t in taken[:2]] == ["000001", "000002"] and len({t[0] for t in taken}) == BLOCK // 2 + 1
    assert taken[0][1] == "1130105320"  # field 7 of the clock's time, UTC MMDDhhmmss
    assert stans.at_once(BANK) is None and not a.refills  # low: host_ref starts the refill, not at_once
    a.requests(1)
    assert len(a.refills) == 1 and not a.stans()  # this request waits for the refill it started
    a.answer_refills()
    assert a.stans() == [f"{BLOCK // 2 + 2:06d}"]
    assert stans.at_once(BANK)[0] == f"{BLOCK // 2 + 3:06d}"  # no longer low: at once again
    assert stans._stans[BANK].left() == 2 * BLOCK - (BLOCK // 2 + 3)


@pytest.mark.parametrize("start", [1, 999, 1000, 1001, 99_999, 100_000, 123_456, 999_990])
def test_a_stan_is_its_number_in_six_digits_across_the_wrap(start):
    from switch.core.host_stans import HostStans

    seq = HostStans()
    seq.add_block(start, 12)
    assert [seq.take() for _ in range(12)] == [f"{(start - 1 + i) % 999_999 + 1:06d}" for i in range(12)]
    assert seq.take() is None and seq.left() == 0
