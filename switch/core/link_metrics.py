"""An acquirer link's counters, without a metrics library: the switch exports them.

Every adapter that keeps a link (card host link, city-card clearing centre,
wallet HTTP API) counts what happens on it in a :class:`LinkMetrics`, held as
its ``metrics`` attribute; :meth:`switch.metrics.Metrics.attach_links` hooks a
listener in and exports each counter as ``payswitch_<link>_<name>_total``
labelled by acquirer and the counter's own labels.  An adapter that counts
``n=0`` at construction makes a trouble counter exist (at 0) before any trouble.
"""
from __future__ import annotations

from typing import Any, Callable

import cython

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    """A counter's key: ``(name, ((label, value), ...))``, the pairs sorted by label."""
    return (name, tuple(sorted(labels.items())))


class LinkMetrics:
    """Counters keyed by (name, labels); an optional listener sees every increment.

    ``link`` names the family the switch exports them under: ``hostlink`` (card
    acquirers; the names are those of ``switch.metrics.CARD_LINK_COUNTERS``),
    ``citycard`` or ``wallet``.  The names each adapter uses are listed where it
    counts them (``adapters.card.hostlink``, ``adapters.citycard.adapter``,
    ``adapters.wallet.acquirer``).

    The listener is a callable ``listener(name, labels, amount)``.  One that
    also has ``child(name, labels)``, returning what to ``inc(amount)`` for
    that counter and those labels (the switch's does), is asked once per key
    and its answer kept: a request path that counts every answer pays a dict
    lookup for it, not a call that sorts the labels again.
    """

    def __init__(self, listener: Callable[[str, dict[str, str], int], None] | None = None, *,
                 link: str = "hostlink") -> None:
        self.counters: dict[Key, int] = {}
        self._listener = listener
        self._children: dict[Key, Any] = {}  # the listener's child's inc per key (see the class docstring)
        self.link = link

    @property
    def listener(self) -> Callable[[str, dict[str, str], int], None] | None:
        return self._listener

    @listener.setter
    def listener(self, listener: Callable[[str, dict[str, str], int], None] | None) -> None:
        self._listener = listener
        self._children = {}

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self.add(key(name, **labels), amount)

    @cython.ccall
    def add(self, counter: Key, amount: int = 1) -> None:
        """:meth:`inc` with the key built by the caller: ``(name, ((label, value), ...))``,
        the pairs sorted by label.  For counters bumped on every message: no
        keyword arguments, no sort."""
        self.add_hashed(counter, hash(counter), amount)

    @cython.locals(known=cython.Py_hash_t, counters=dict, children=dict)
    def add_hashed(self, counter: Key, known: int, amount: int) -> None:
        """:meth:`add` of a key whose ``hash(counter)`` the caller kept: compiled, the
        counters' dicts are given it (link_metrics.pxd) instead of hashing the key's
        tuples again for each look-up and store (three an increment)."""
        counters = self.counters
        if cython.compiled:
            payswitch_dict_set_known(counters, counter,  # noqa: F821  (link_metrics.pxd)
                                     payswitch_dict_get_known(counters, counter, known, 0) + amount,  # noqa: F821
                                     known)
        else:
            counters[counter] = counters.get(counter, 0) + amount
        listener = self._listener
        if listener is None:
            return
        children = self._children
        if cython.compiled:
            inc = payswitch_dict_get_known(children, counter, known, None)  # noqa: F821
        else:
            inc = children.get(counter)
        if inc is None:
            name, labels = counter
            resolve = getattr(listener, "child", None)
            if resolve is None:  # a plain function: told every increment
                listener(name, dict(labels), amount)
                return
            inc = self._children[counter] = resolve(name, dict(labels)).inc
        inc(amount)

    def get(self, name: str, **labels: str) -> int:
        return self.counters.get(key(name, **labels), 0)

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)
