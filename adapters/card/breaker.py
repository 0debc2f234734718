"""A circuit breaker per acquirer endpoint, without I/O (``now`` is passed in).

An endpoint that signs on and answers echoes but lets transactions time out
would otherwise take every request until the link drops (68 and a reversal
each time).  The breaker watches transaction outcomes on one endpoint::

    CLOSED --(threshold consecutive timeouts)--> OPEN
    OPEN --(cooldown passed, next allow())--> HALF_OPEN (one probe let through)
    HALF_OPEN --(probe answered)--> CLOSED
    HALF_OPEN --(probe timed out)--> OPEN (cool-down starts again)
    HALF_OPEN --(probe ended without a verdict: link lost)--> HALF_OPEN, the next request probes

Any answer (approved or declined: the host is working) resets the count of
consecutive timeouts.  While OPEN, outcomes of requests sent before the trip
change nothing: the cool-down decides when to probe.
"""
from __future__ import annotations

import enum

import cython


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


# The states as module constants: every request asks allow() and every answer
# calls success(), and in Python 3.11 ``BreakerState.CLOSED`` is read through the
# enum metaclass's ``__getattr__`` hook (several hundred instructions a read).
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


class Breaker:
    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        if threshold < 1:
            raise ValueError(f"breaker threshold must be >= 1, got {threshold}")
        if cooldown < 0:
            raise ValueError(f"breaker cooldown must be >= 0, got {cooldown}")
        self.threshold = threshold
        self.cooldown = cooldown
        self._state = _CLOSED
        self.failures = 0  # consecutive timeouts while closed
        self.opened_at = 0.0
        self.trips = 0
        self._probing = False

    @cython.ccall
    def state(self, now: float) -> BreakerState:
        """The state as of ``now`` (an OPEN breaker past its cool-down reads HALF_OPEN)."""
        if self._state is _OPEN and now >= self.opened_at + self.cooldown:
            return _HALF_OPEN
        return self._state

    def is_open(self, now: float) -> bool:
        """No request may go to this endpoint now (open, or half-open with its probe out)."""
        state = self.state(now)
        return state is _OPEN or (state is _HALF_OPEN and self._probing)

    @cython.ccall
    def closed(self) -> bool:
        """Closed: every request may go, whatever the time (:meth:`allow` would say True)."""
        return self._state is _CLOSED

    @cython.ccall
    def allow(self, now: float) -> bool:
        """May one request go now?  In HALF_OPEN this hands out the one probe."""
        state = self.state(now)
        if state is _CLOSED:
            return True
        if state is _OPEN or self._probing:
            return False
        self._state = _HALF_OPEN
        self._probing = True
        return True

    @cython.ccall
    def success(self) -> None:
        """A transaction was answered (any response code)."""
        if self._state is _HALF_OPEN:
            self._state = _CLOSED
            self._probing = False
        if self._state is _CLOSED:
            self.failures = 0

    @cython.ccall
    def failure(self, now: float) -> bool:
        """A transaction timed out.  True when this opened the breaker."""
        if self._state is _CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open(now)
                return True
            return False
        if self._state is _HALF_OPEN:
            self._open(now)
            return True
        return False

    @cython.ccall
    def inconclusive(self, now: float) -> None:
        """A transaction ended without telling whether the host answers (the
        connection dropped, or nothing was sent): a probe is handed out again."""
        if self._state is _HALF_OPEN:
            self._probing = False

    def _open(self, now: float) -> None:
        self._state = _OPEN
        self.opened_at = now
        self.failures = 0
        self._probing = False
        self.trips += 1
