"""Compile the configured routes into the native route tables.

Two number spaces: card numbers (bank cards and city cards share field 2, so
one table decides between them) and bar-code payment codes.  Spec section 7:
no route answers 14 for a card number and 12 for a payment code.
"""
from __future__ import annotations

from native.routing import RouteTable, luhn_ok

from switch.config import Route, prefix_range

__all__ = ["Router", "luhn_ok"]


class Router:
    def __init__(self, routes: list[Route]):
        self.routes = list(routes)
        self._pan = RouteTable()
        self._code = RouteTable()
        for index, route in enumerate(self.routes):
            table = self._code if route.kind == "wallet" else self._pan
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

    def _lookup(self, table, number: str, msg) -> Route | None:
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

    def for_pan(self, pan: str, msg) -> Route | None:
        """The card or city-card route of a PAN (None: answer 14)."""
        return self._lookup(self._pan, pan, msg)

    def for_code(self, code: str, msg) -> Route | None:
        """The wallet route of a scanned payment code (None: answer 12)."""
        return self._lookup(self._code, code, msg)
