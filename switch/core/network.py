"""0810s kept for the retransmissions of their 0800s (spec section 6).

An 0800 moves no money and is not journaled, but a retransmitted request (same
41, 11 and 7) still gets its original answer, same 37 and 38, and the same key
with other content gets 94.  The answers live here, in memory, for the
retransmission window or until ``capacity`` newer ones push them out; a
restart forgets them (an echo or sign-on answered afresh is harmless).
"""
from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, str, str]  # 41, 11, 7


class NetworkAnswers:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[Key, tuple[object, float, dict]] = OrderedDict()

    def find(self, key: Key, content: object, now: float, window: float) -> dict | None | bool:
        """The answer first given under ``key``; False for other content (94); None if none is kept."""
        kept = self._answers.get(key)
        if kept is None:
            return None
        first_content, at, response = kept
        if now - at > window:
            del self._answers[key]
            return None
        return response if first_content == content else False

    def keep(self, key: Key, content: object, now: float, response: dict) -> None:
        self._answers[key] = (content, now, response)
        self._answers.move_to_end(key)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)
