"""What is in flight on a host link: STANs, and the messages awaiting an answer.

Sans-I/O like :mod:`adapters.card.hostlink`, which re-exports these names.
The messages awaiting an answer are :class:`Pending` entries of the link's
response mux, :class:`switch.core.inflight.InFlight`, keyed by STAN.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any, Callable

import cython

from adapters.card.messages import acquirer_ref, valid_stan


# --------------------------------------------------------------------------
# STAN allocation.

class StanInUse(RuntimeError):
    """A switch-assigned STAN is already in flight on this link: sending it
    would make two answers indistinguishable.  Nothing was sent."""


class StanAllocator:
    """Acquirer-side STANs 000001..999999, wrapping, never two in flight at once.

    One allocator serves every connection to an acquirer, so a STAN is unique
    on the whole link (the acquirer sees one institution, field 32).  STANs the
    switch assigned are :meth:`claim`-ed; the link's own (sign-on, echo,
    sign-off, requests without a host STAN) are :meth:`allocate`-d, from
    ``source`` (the switch's journaled sequence, a zero-argument callable
    returning a 6-digit STAN) when given, else from a counter.
    """

    LIMIT = 999_999

    def use_source(self, source: Callable[[], str] | None) -> None:
        """Take STANs from ``source`` from now on (the switch's journaled sequence)."""
        self._source = source

    def __init__(self, start: int = 1, source: Callable[[], str] | None = None) -> None:
        if not 1 <= start <= self.LIMIT:
            raise ValueError(f"STAN start must be 1..{self.LIMIT}, got {start}")
        self._next = start
        self._source = source
        self._in_use: set[str] = set()

    def allocate(self) -> str:
        if len(self._in_use) >= self.LIMIT:
            raise RuntimeError("all 999999 STANs are in flight")
        if self._source is not None:
            # The switch's sequence wraps too: skip what is still in flight,
            # but do not spin forever on a source that keeps repeating itself.
            for _ in range(1000):
                stan = self._source()
                if not valid_stan(stan):
                    raise ValueError(f"stan_source returned {stan!r}, expected 6 digits")
                if stan not in self._in_use:
                    self._in_use.add(stan)
                    return stan
            raise StanInUse("stan_source returned 1000 STANs in a row that are in flight")
        while True:
            n = self._next
            self._next = 1 if n >= self.LIMIT else n + 1
            stan = f"{n:06d}"
            if stan not in self._in_use:
                self._in_use.add(stan)
                return stan

    @cython.ccall
    def claim(self, stan: str) -> str:
        """Take a STAN the switch assigned; :class:`StanInUse` if it is in flight."""
        if not valid_stan(stan):
            raise ValueError(f"host STAN {stan!r}: expected 6 digits")
        if stan in self._in_use:
            raise StanInUse(f"host STAN {stan} is already in flight on this link")
        self._in_use.add(stan)
        return stan

    @cython.ccall
    def release(self, stan: str) -> None:
        self._in_use.discard(stan)

    def in_use(self, stan: str) -> bool:
        return stan in self._in_use

    def __len__(self) -> int:
        return len(self._in_use)


# --------------------------------------------------------------------------
# Requests in flight.

class Kind(enum.Enum):
    REQUEST = "request"  # 0100/0200/0220: outcome is a Result
    REVERSAL = "reversal"  # 0420/0421: outcome is REVERSED, NOT_FOUND, Refused or RETRY
    SIGN_ON = "sign-on"
    ECHO = "echo"
    SIGN_OFF = "sign-off"


class Pending:
    """One message written to the acquirer and not yet answered.

    An extension type once compiled (inflight.pxd: one per request, read on
    every answer): its attributes are C fields, which the host link's code
    that declares its variables a Pending reads without a lookup."""

    def __init__(self, kind: Kind, mti: str, stan: str, f7: str, rrn: str,
                 terminal_id: str | None, deadline: float, sent_at: float, token: Any,
                 amount: str | None = None, processing_code: str | None = None,
                 currency: str | None = None, merchant_id: str | None = None) -> None:
        self.kind = kind
        self.mti = mti
        self.stan = stan
        self.f7 = f7
        self.rrn = rrn
        self.terminal_id = terminal_id
        self.deadline = deadline
        self.sent_at = sent_at
        self.token = token  # the I/O layer's handle (e.g. a future); opaque here
        # Fields 4 and 3 as sent: what an approval is checked against (adapters.card.response_codes).
        self.amount = amount
        self.processing_code = processing_code
        # Fields 49 and 42 as sent: an approval in another currency is no approval of this
        # request, an answer naming another merchant no answer to it.
        self.currency = currency
        self.merchant_id = merchant_id
        # A reversal: whether the switch had its original's answer, and so knows the
        # amount the acquirer holds (the answer's 38, or the amount it approved).
        self.held_known = True

    @property
    def ref(self) -> str:
        return acquirer_ref(self.stan, self.f7, self.rrn)

    def __repr__(self) -> str:
        return f"<Pending {self.kind.value} {self.mti} stan={self.stan} deadline={self.deadline:.3f}>"


@cython.ccall
@cython.locals(made=Pending)
def new_pending(kind: Kind, mti: str, stan: str, f7: str, rrn: str, terminal_id: str | None,
                deadline: float, sent_at: float, token: Any, amount: str | None, processing_code: str | None,
                currency: str | None, merchant_id: str | None) -> Pending:
    """``Pending(...)`` with every argument given, made in C once compiled (inflight.pxd): the
    type's allocation and its fields set, not a call through Python that unpacks thirteen
    arguments (one a message the link writes).  Sets every field ``Pending.__init__`` sets
    (tests/test_hostlink_fast_paths.py compares them field by field)."""
    made = Pending.__new__(Pending)
    made.kind = kind
    made.mti = mti
    made.stan = stan
    made.f7 = f7
    made.rrn = rrn
    made.terminal_id = terminal_id
    made.deadline = deadline
    made.sent_at = sent_at
    made.token = token
    made.amount = amount
    made.processing_code = processing_code
    made.currency = currency
    made.merchant_id = merchant_id
    made.held_known = True
    return made


class GivenUp:
    """What a host link gave up on, by STAN: past its deadline, or in flight on a
    connection that went away.  One per link, shared by its connections.

    The acquirer may still answer such a message, on the connection it came
    on or, after a reconnect, on another: that answer is late, not stray, and
    tells the reversal the switch queued meanwhile what the acquirer holds.
    ``memory`` bounds how many are kept (the oldest go first).
    """

    def __init__(self, memory: int = 4096) -> None:
        self._kept: OrderedDict[str, Pending] = OrderedDict()
        self._memory = memory

    def add(self, pending: Pending) -> None:
        kept = self._kept
        kept[pending.stan] = pending
        kept.move_to_end(pending.stan)
        while len(kept) > self._memory:
            kept.popitem(last=False)

    def get(self, stan: str) -> Pending | None:
        return self._kept.get(stan)

    def forget(self, stan: str) -> None:
        """Its late answer came: a second one is stray."""
        self._kept.pop(stan, None)

    def __len__(self) -> int:
        return len(self._kept)
