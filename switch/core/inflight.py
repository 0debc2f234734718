"""The response mux of an acquirer link: what was sent and awaits its answer.

Every link that multiplexes requests on one connection matches answers to
requests by a key the answer repeats: the card host link by STAN (field 11),
the city-card centre by request id.  :class:`InFlight` holds the entries of
one connection under that key, with a deadline each, and remembers for a
while the keys whose caller gave up, so that a late answer (the switch has
already answered the terminal, and reverses) is told from a stray one
(nothing was ever sent under that key, or it was answered already).

An entry is whatever the link keeps per message (the card link's ``Pending``,
the city card's future): the mux never looks inside it.  No clock, no I/O:
``now`` is passed in, and a link that enforces its timeouts elsewhere adds
its entries without a deadline.
"""
from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)
E = TypeVar("E")


class InFlight:
    """Entries of one connection by key, with a deadline heap and a memory of
    the keys given up on.

    ``remember(entry)`` is what :meth:`expired` returns for a key given up on
    (the card link keeps the request's MTI, to check that a late answer fits
    it); without it, ``True``.  ``late_memory`` bounds how many keys are kept.
    Keys are ``K``, entries ``E`` (an annotation ``InFlight[str, Pending]`` is
    never evaluated: compiled, this is an extension type, not a generic).
    """

    def __init__(self, late_memory: int = 4096, remember: Callable[[E], Any] | None = None) -> None:
        self._entries: dict[K, E] = {}
        # (deadline, sequence, key, entry): the sequence keeps entries out of the
        # comparison.  An answered entry stays here until it reaches the top.
        self._heap: list[tuple[float, int, K, E]] = []
        self._seq = 0
        self._expired: OrderedDict[K, Any] = OrderedDict()
        self._late_memory = late_memory
        self._remember = remember

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def add(self, key: K, entry: E, deadline: float | None = None) -> None:
        """Register ``entry`` under ``key``; ``deadline=None``: never expires here
        (its owner enforces the timeout and calls :meth:`give_up`)."""
        if key in self._entries:
            raise RuntimeError(f"{key!r} is already in flight")
        self._entries[key] = entry
        if deadline is not None:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, key, entry))

    def pop(self, key: K) -> E | None:
        """Remove the entry under ``key`` (answered, or never written)."""
        return self._entries.pop(key, None)

    def peek(self, key: K) -> E | None:
        return self._entries.get(key)

    def give_up(self, key: K) -> E | None:
        """Remove the entry under ``key`` because its caller stopped waiting:
        an answer arriving later is late, not stray (see :meth:`expired`)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._remember_key(key, entry)
        return entry

    def expired(self, key: K) -> Any:
        """What was remembered of an entry given up on recently under ``key``, else None."""
        return self._expired.get(key)

    def forget_expired(self, key: K) -> None:
        """A late answer under ``key`` was seen: a second one is stray."""
        self._expired.pop(key, None)

    def expire(self, now: float) -> list[E]:
        """Remove and return every entry whose deadline is <= now."""
        out = []
        heap = self._heap
        entries = self._entries
        while heap and heap[0][0] <= now:
            _, _, key, entry = heapq.heappop(heap)
            if entries.get(key) is entry:
                del entries[key]
                self._remember_key(key, entry)
                out.append(entry)
        return out

    def _remember_key(self, key: K, entry: E) -> None:
        expired = self._expired
        expired[key] = self._remember(entry) if self._remember is not None else True
        expired.move_to_end(key)
        while len(expired) > self._late_memory:
            expired.popitem(last=False)

    def next_deadline(self) -> float | None:
        """The earliest deadline of an entry still in flight (None: none)."""
        heap = self._heap
        entries = self._entries
        while heap and entries.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)  # answered already: drop the stale entry
        return heap[0][0] if heap else None

    def drain(self) -> list[E]:
        """Remove and return every entry (the connection is gone)."""
        out = list(self._entries.values())
        self._entries.clear()
        self._heap.clear()
        return out

    def values(self) -> Iterable[E]:
        return self._entries.values()
