"""Requests open per terminal ID, over all of its connections (issue 8).

A connection's own ``max_in_flight`` only pauses reading on that
connection: a terminal that opens more connections (or reconnects while its
requests are still with the acquirers, which they finish) would get more
open at once.  This count is keyed by field 41 and lives in the engine, so
it holds across connections and reconnects; a request beyond
``max_in_flight_per_terminal`` is answered 91 at once (spec section 5:
"overloaded") and goes no further.  Sans-I/O.
"""
from __future__ import annotations


class TerminalSlots:
    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, tid: str, limit: int) -> bool:
        """Count a request of ``tid`` in; False (nothing counted) when it has ``limit`` open."""
        n = self.open.get(tid, 0)
        if n >= limit:
            return False
        self.open[tid] = n + 1
        return True

    def release(self, tid: str) -> None:
        n = self.open[tid] - 1
        if n:
            self.open[tid] = n
        else:
            del self.open[tid]
