"""Compile the configured routes into the native route tables.

Two number spaces: card numbers (bank cards and city cards share field 2, so
one table decides between them) and bar-code payment codes.  Spec section 7:
no route answers 14 for a card number and 12 for a payment code.
"""
from __future__ import annotations

import re
from typing import Any

from native.panguard import mask_pan
from native.routing import RouteTable, luhn_ok

__all__ = ["Router", "luhn_ok", "prefix_range", "shown_prefix", "expand_terminals"]

_TERMINAL_RANGE = re.compile(r"^([A-Za-z ]*)(\d+)-([A-Za-z ]*)(\d+)$")
_PREFIX = re.compile(r"^\d{1,19}(-\d{1,19})?$")
_CARD_LENGTH_RUN = re.compile(r"\d{13,}")


# Terminal IDs one configuration may name: each is an entry in every process's
# terminal table, and a range is checked before it is expanded, so that a digit
# too many ("T0000001-T9999999") is an error, not gigabytes and minutes.
MAX_TERMINALS = 1_000_000
_TID_LENGTH = 8  # field 41, ans8


def expand_terminals(spec: str, room: int = MAX_TERMINALS) -> list[str]:
    """``"DEMO0001-DEMO0003"`` → ``["DEMO0001", "DEMO0002", "DEMO0003"]``.

    ``room``: how many more terminals the configuration may name (ValueError beyond)."""
    match = _TERMINAL_RANGE.match(spec)
    if not match:
        if "-" in spec:
            raise ValueError(f"terminal range {spec!r} is not STEM0001-STEM0099 (same stem, numeric ends)")
        return [spec]
    stem, lo, stem2, hi = match.groups()
    if stem != stem2:
        raise ValueError(f"terminal range {spec!r} has two different stems")
    if len(lo) != len(hi):
        raise ValueError(f"terminal range {spec!r} has ends of different lengths")
    if int(lo) > int(hi):
        raise ValueError(f"terminal range {spec!r} starts after it ends")
    if len(stem) + len(lo) > _TID_LENGTH:
        raise ValueError(f"terminal ID {stem + lo!r} must be 1 to {_TID_LENGTH} characters")
    count = int(hi) - int(lo) + 1
    if count > room:
        left = "" if room == MAX_TERMINALS else f", more than the {room:,} left of those"
        raise ValueError(f"terminal range {spec!r} names {count:,} terminals: a configuration names at most "
                         f"{MAX_TERMINALS:,}{left}")
    return [f"{stem}{n:0{len(lo)}d}" for n in range(int(lo), int(hi) + 1)]


def shown_prefix(spec: str) -> str:
    """A prefix (or range, or what was written for one) as a message quotes it: each run of 13
    digits or more masked as a card number is (first 6, last 4).  Account-range tables have
    prefixes as long as a PAN, and one may be a PAN pasted by mistake."""
    return _CARD_LENGTH_RUN.sub(lambda m: mask_pan(m.group()), spec)


def prefix_range(spec: str) -> tuple[str, str]:
    """``"4"`` → ``("4", "4")``; ``"25-30"`` → ``("25", "30")``."""
    if not _PREFIX.match(spec):
        raise ValueError(f"prefix {shown_prefix(spec)!r} is not digits or a digits-digits range")
    lo, _, hi = spec.partition("-")
    hi = hi or lo
    if len(lo) != len(hi):
        raise ValueError(f"prefix range {shown_prefix(spec)!r} has ends of different lengths")
    if int(lo) > int(hi):
        raise ValueError(f"prefix range {shown_prefix(spec)!r} starts after it ends")
    return lo, hi


class Router:
    def __init__(self, routes: list[Any]):
        """``routes``: configured routes (``switch.config.Route`` or anything shaped like one)."""
        self.routes = list(routes)
        self._pan = RouteTable()
        self._code = RouteTable()
        # Whether every route of a table is a bare prefix: then the number alone decides,
        # and a lookup reads nothing else of the message.
        self._pan_plain = self._code_plain = True
        for index, route in enumerate(self.routes):
            table = self._code if route.kind == "wallet" else self._pan
            if not _unconditional(route):
                if table is self._pan:
                    self._pan_plain = False
                else:
                    self._code_plain = False
            for prefix in route.prefixes:
                lo, hi = prefix_range(prefix)
                table.add(
                    lo,
                    hi,
                    index,
                    mti_classes=route.mti_classes,
                    processing_codes=route.processing_codes,
                    merchants=route.merchants,
                    currencies=route.currencies,
                    min_amount=route.min_amount,
                    max_amount=route.max_amount,
                )
        self._pan.compile()
        self._code.compile()

    def _lookup(self, table, number: str, msg, plain: bool) -> Any:
        if plain:  # what table.lookup would find with the message's fields: they are no rule's condition
            index = table.lookup(number, None, None, None, None, None)
            return self.routes[index] if index >= 0 else None
        amount = msg.get(4)
        index = table.lookup(
            number,
            msg.mti,
            msg.get(3),
            msg.get(42),
            msg.get(49),
            int(amount) if amount is not None else None,
        )
        return self.routes[index] if index >= 0 else None

    def for_pan(self, pan: str, msg) -> Any:
        """The card or city-card route of a PAN (None: answer 14)."""
        return self._lookup(self._pan, pan, msg, self._pan_plain)

    def for_code(self, code: str, msg) -> Any:
        """The wallet route of a scanned payment code (None: answer 12)."""
        return self._lookup(self._code, code, msg, self._code_plain)


def _unconditional(route: Any) -> bool:
    """Whether ``route`` matches on its prefixes alone (RouteTable.add gets no condition)."""
    return (route.mti_classes is None and route.processing_codes is None and route.merchants is None
            and route.currencies is None and route.min_amount is None and route.max_amount is None)
