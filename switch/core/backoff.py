"""How long a link waits before it connects again: exponential back-off with jitter.

One rule for everything that tries again after a failure (the card host
link's slots and the city-card centre's connections reconnecting, a bundled
simulator restarted by ``switch.io.children``, without jitter there): wait ``initial``, then twice as long
after each failure up to ``maximum``, each wait spread by +-``jitter`` so
that connections lost together do not come back in step; :meth:`Backoff.reset`
once a connection is up (the card link: once signed on).  The link sleeps;
this module only says how long.
"""
from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter: initial, doubling, capped, +-jitter."""

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._base = initial

    def next_delay(self) -> float:
        base = self._base
        self._base = min(self.maximum, base * self.factor)
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._base = self.initial
