"""An acquirer link's counters, without a metrics library: the switch exports them.

Every adapter that keeps a link (card host link, city-card clearing centre,
wallet HTTP API) counts what happens on it in a :class:`LinkMetrics`, held as
its ``metrics`` attribute; :meth:`switch.metrics.Metrics.attach_links` hooks a
listener in and exports each counter as ``payswitch_<link>_<name>_total``
labelled by acquirer and the counter's own labels.  An adapter that counts
``n=0`` at construction makes a trouble counter exist (at 0) before any trouble.
"""
from __future__ import annotations

from typing import Callable


class LinkMetrics:
    """Counters keyed by (name, labels); an optional listener sees every increment.

    ``link`` names the family the switch exports them under: ``hostlink`` (card
    acquirers; the names are those of ``switch.metrics.CARD_LINK_COUNTERS``),
    ``citycard`` or ``wallet``.  The names each adapter uses are listed where it
    counts them (``adapters.card.hostlink``, ``adapters.citycard.adapter``,
    ``adapters.wallet.acquirer``).
    """

    def __init__(self, listener: Callable[[str, dict[str, str], int], None] | None = None, *,
                 link: str = "hostlink") -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.listener = listener
        self.link = link

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0) + amount
        if self.listener is not None:
            self.listener(name, labels, amount)

    def get(self, name: str, **labels: str) -> int:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)
