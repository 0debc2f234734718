"""Host STANs (field 11 on a card host link), without I/O.

Every process that sends on an acquirer's link numbers its messages from
blocks of STANs it reserved in the journal (``reserve_stans``), so that
several worker processes (``serve --workers``) and restarts never give two
messages in flight the same STAN: the journal hands each block out once, and
a process numbers only inside the blocks it holds.  Past them lies a block
that another worker may hold, so nothing is ever numbered there.

The sequence wraps (past 999999 to 000001), and a worker with little traffic
may still hold a block when the others have gone round: every sweep reads
where the journal's sequence stands (``stan_position``) and drops the blocks
held that the journal hands out again within the next :data:`STALE_MARGIN`
STANs, so that a block is never numbered in by two workers at once.

A refill (one at a time per acquirer) is started while half a block is left.
Requests leave the last :data:`NETWORK_RESERVE` STANs to the link's own
network messages (sign-on, echo, sign-off), which cannot wait for the
journal; a request that finds none left waits for the refill and, should it
fail, ends with its error before anything is journaled or sent (the engine
answers 96).  A network message that finds none left gets
:class:`NoHostStan` (the link treats it as it treats any failed STAN source).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Generator

from switch.core.commands import Flight, Op, Wait

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

STAN_BLOCK = 10_000  # host STANs reserved per journal write
NETWORK_RESERVE = 100  # the held STANs only network messages take
STAN_LIMIT = 999_999
LOW_MARK = STAN_BLOCK // 2  # fewer held than this: a refill is started
# A block held is dropped once the journal hands it out again within this many STANs
# (sweeps come at least every reversal_backoff_max: the fleet would have to reserve
# this many in between for two workers to number in one block).
STALE_MARGIN = 25 * STAN_BLOCK


_THREE: tuple[str, ...] = tuple(f"{i:03d}" for i in range(1000))  # a STAN's halves, formatted once

NO_REF: tuple[None, None] = (None, None)  # the host reference of an acquirer that takes no switch STANs


class NoHostStan(Exception):
    """No STAN is left in the blocks this process holds (the journal's refill is late or failed)."""


class HostStans:
    """One acquirer's STANs: the blocks held, in the order they were reserved."""

    def __init__(self) -> None:
        self._next = 0
        self._left = 0  # in the block being used
        self._blocks: list[tuple[int, int]] = []  # reserved, not yet begun
        self._held = 0  # every STAN left: the block being used and those not yet begun
        # The refill under way; a Flight so that the drivers' Wait serves the
        # requests that find no STAN left.
        self.refill: Flight | None = None

    def add_block(self, start: int, count: int) -> None:
        if not (1 <= start <= STAN_LIMIT and 1 <= count <= STAN_LIMIT):
            raise ValueError(f"host STAN block {start}+{count}: expected 1..{STAN_LIMIT}")
        if self._left > 0:
            self._blocks.append((start, count))
        else:
            self._next, self._left = start, count
        self._held += count

    def left(self) -> int:
        return self._held

    def drop_near(self, position: int, margin: int = STALE_MARGIN) -> int:
        """Drop what is held of the STANs the journal hands out from ``position`` on, within
        ``margin`` of them (the sequence went round while this process held them); how many went."""
        def soon(start: int, count: int) -> bool:
            return (start - position) % STAN_LIMIT < margin or (position - start) % STAN_LIMIT < count

        dropped = 0
        if self._left > 0 and soon(self._next, self._left):
            dropped, self._left = self._left, 0
        kept = [(start, count) for start, count in self._blocks if not soon(start, count)]
        dropped += sum(count for _, count in self._blocks) - sum(count for _, count in kept)
        self._blocks = kept
        self._held -= dropped
        return dropped

    def low(self) -> bool:
        return self._held < LOW_MARK

    def take(self, keep: int = 0) -> str | None:
        """The next STAN held, leaving ``keep`` of them; None if there are no more."""
        if self._held <= keep:  # self.left(), one method call fewer on every request
            return None
        if self._left <= 0:
            self._next, self._left = self._blocks.pop(0)
        n = self._next
        self._next = 1 if n >= STAN_LIMIT else n + 1  # a block may wrap past 999999
        self._left -= 1
        self._held -= 1
        return _THREE[n // 1000] + _THREE[n % 1000]  # f"{n:06d}" without the format machinery


class HostRefs:
    """Every acquirer's :class:`HostStans` in this process.

    ``clock``: wall time for field 7; ``on_refilled(flight)``: wakes the
    requests waiting for a refill (the engine's ``on_flight_done``).
    """

    def __init__(self, acquirers, clock: Callable[[], float], on_refilled: Callable[[Flight], None]) -> None:
        self.acquirers = frozenset(acquirers)
        self.clock = clock
        self.on_refilled = on_refilled
        self.on_low: Callable[[], None] = lambda: None  # a network message found its acquirer's STANs low
        self._stans: dict[str, HostStans] = {}

    def _seq(self, acquirer: str) -> HostStans:
        seq = self._stans.get(acquirer)
        if seq is None:
            seq = self._stans[acquirer] = HostStans()
        return seq

    def at_once(self, acquirer: str | None) -> tuple[str | None, str | None] | None:
        """:meth:`host_ref` without the generator, when it would not wait: (None, None)
        for an acquirer that takes no switch STANs, a STAN while no refill is due,
        else None (the caller goes through :meth:`host_ref`).  Most requests end
        here, which spares the request path a generator and its ``yield from``."""
        if acquirer not in self.acquirers:
            return NO_REF
        seq = self._stans.get(acquirer)
        if seq is None or seq._held < LOW_MARK:  # seq.low(), one method call fewer on every request
            return None
        stan = seq.take(NETWORK_RESERVE)
        return stan, host_time(self.clock())  # never None: more than NETWORK_RESERVE are held

    def host_ref(self, acquirer: str | None) -> Gen:
        """(host STAN, field 7) for a request to ``acquirer``, or (None, None) for
        an acquirer that takes no switch STANs.  Waits for a refill when none is
        left; raises the refill's error if it fails meanwhile."""
        if acquirer not in self.acquirers:
            return None, None
        seq = self._seq(acquirer)
        while True:
            if seq.refill is None and seq.low():
                try:
                    yield from self._refill(acquirer, seq)
                except Exception as exc:
                    if seq.left() <= NETWORK_RESERVE:
                        raise
                    log.warning("%s: host STANs could not be reserved (%s: %s); %d left", acquirer,
                                type(exc).__name__, exc, seq.left())
            stan = seq.take(NETWORK_RESERVE)
            if stan is not None:
                return stan, host_time(self.clock())
            yield Wait(seq.refill)  # another request's refill: its error is raised here

    def take_stan(self, acquirer: str) -> str:
        """A host STAN now, without the journal (a link's own network message)."""
        seq = self._seq(acquirer)
        stan = seq.take()
        if seq.low() and seq.refill is None:
            self.on_low()  # a sweep soon refills it, should no request do so first
        if stan is None:
            raise NoHostStan(f"{acquirer}: no host STAN left in the blocks reserved; the journal has not refilled them")
        return stan

    def prefill(self) -> Gen:
        """Reserve a block for every acquirer (at start-up, before any sign-on)."""
        for acquirer in sorted(self.acquirers):
            seq = self._seq(acquirer)
            if seq.refill is None:
                yield from self._refill(acquirer, seq)

    def refill_low(self) -> Gen:
        """Drop the blocks the journal's sequence came round to, and refill what that or
        network messages alone brought low (a sweep's work); failures are logged."""
        for acquirer, seq in list(self._stans.items()):
            if seq.refill is None and seq.left():
                try:
                    position = yield Op("stan_position", acquirer)
                except Exception as exc:
                    log.warning("%s: where the journal's host STANs stand could not be read (%s: %s)", acquirer,
                                type(exc).__name__, exc)
                else:
                    dropped = seq.drop_near(position)
                    if dropped:
                        log.info("%s: %d host STANs held dropped: the journal's sequence came round to them"
                                 " (at %06d)", acquirer, dropped, position)
            if seq.refill is None and seq.low():
                try:
                    yield from self._refill(acquirer, seq)
                except Exception as exc:
                    log.warning("%s: host STANs could not be reserved (%s: %s); %d left", acquirer,
                                type(exc).__name__, exc, seq.left())

    def _refill(self, acquirer: str, seq: HostStans) -> Gen:
        refill = seq.refill = Flight(("host STANs", acquirer, ""), "", "")
        try:
            start = yield Op("reserve_stans", acquirer, STAN_BLOCK)
            seq.add_block(start, STAN_BLOCK)
        except BaseException as exc:
            refill.error = exc if isinstance(exc, Exception) else NoHostStan(f"{acquirer}: the refill was abandoned")
            raise
        finally:
            seq.refill = None
            refill.done = True
            self.on_refilled(refill)


_f7: list = [-1, ""]  # the last second formatted: every request needs one


def host_time(wall: float) -> str:
    """Field 7 on a host link: UTC MMDDhhmmss."""
    second = int(wall)
    if _f7[0] != second:
        _f7[0], _f7[1] = second, time.strftime("%m%d%H%M%S", time.gmtime(second))
    return _f7[1]
