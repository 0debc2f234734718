"""0810s kept for the retransmissions of their 0800s (spec section 6).

An 0800 moves no money and is not journaled, but a retransmitted request (same
41, 11 and 7) still gets its original answer, same 37 and 38, and the same key
with other content gets 94.  The answers live here, in memory, for the
retransmission window or until ``capacity`` newer ones push them out; a
restart forgets them (an echo or sign-on answered afresh is harmless).

The 0810s of key exchanges (``switch.core.security``) are kept here too,
session keys under the TMK included: a retransmitted 0800/101 gets the keys
its first 0810 carried, not new ones (spec 6).  After a restart, or on
another worker, such a retransmission is answered as a new 0800/101 (new
pending keys): see docs/terminal-interface.md, section 8.1.

The key space is the terminal's, whatever the MTI: an 0800 under the key of a
payment (in flight, or journaled within the window) is 94, and so is a
payment under the key of an 0800 kept here (``Engine._dispatch``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generator

from switch.core import messages
from switch.core.commands import Op

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

    def holds(self, key: Key, now: float, window: float) -> bool:
        """Whether an 0800 answered under ``key`` within ``window`` is kept."""
        kept = self._answers.get(key)
        return kept is not None and now - kept[1] <= window

    def keep(self, key: Key, content: object, now: float, response: dict) -> None:
        self._answers[key] = (content, now, response)
        self._answers.move_to_end(key)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)


def answer(engine: Any, msg: Any, code: str, codec: Any) -> Generator[Any, Any, tuple[str, str, bytes]]:
    """The 0810 for an 0800 the engine answers ``code`` (section 6): a retransmitted
    0800 gets its first one; the same key with other content gets 94, and so
    does the key of a payment in flight or journaled within the window."""
    first = yield from earlier(engine, msg)
    if first is False:
        return engine._reply(msg, "94", codec, "network")
    if first is not None:
        return "network", first[39], codec.encode(first)
    resp = messages.build_response(msg, code, engine.rrns.next())
    keep(engine, msg, resp)
    return "network", code, codec.encode(resp)


def earlier(engine: Any, msg: Any) -> Generator[Any, Any, dict | None | bool]:
    """What an 0800's key already stands for: the 0810 kept for it (a retransmission,
    answered with it), False when the key is another request's (other content, or
    a payment's: 94), None when the 0800 is new (or carries no key)."""
    key = _key(msg)
    if key is None:
        return None
    first = engine.network_answers.find(key, _content(engine, msg), engine.clock(), engine.cfg.retransmission_window)
    if first is not None and first is not False:
        engine.metrics.retransmission("same")
        return first
    if first is False or (yield from payment_key(engine, key)):
        engine.metrics.retransmission("conflict")
        return False
    return None


def keep(engine: Any, msg: Any, resp: dict) -> None:
    """Keep ``resp`` (unMACed) as the 0810 of ``msg`` for its retransmissions."""
    key = _key(msg)
    if key is not None:
        engine.network_answers.keep(key, _content(engine, msg), engine.clock(), resp)


def _key(msg: Any) -> Key | None:
    key = (msg.get(41), msg.get(11), msg.get(7))
    return None if None in key else key


def _content(engine: Any, msg: Any) -> tuple:
    return (msg.get(70), messages.content_digest(msg, engine.digest_key, "0800"))


def payment_key(engine: Any, key: Key) -> Generator[Any, Any, bool]:
    """Whether a payment uses ``key``: in flight, or journaled within the retransmission window."""
    if key in engine.inflight:
        return True
    rec = yield Op("find", *key)
    return rec is not None and engine.clock() - rec.created_at <= engine.cfg.retransmission_window
