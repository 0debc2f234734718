from collections.abc import Iterable

__all__ = ["RouteTable", "luhn_ok"]

class RouteTable:
    """Longest-prefix route table over card-number / payment-code digits (see native/routing.pyx)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def add(
        self,
        start: str,
        end: str,
        target: int,
        *,
        mti_classes: Iterable[str] | None = None,
        processing_codes: Iterable[str] | None = None,
        merchants: Iterable[str] | None = None,
        currencies: Iterable[str] | None = None,
        min_amount: int | None = None,
        max_amount: int | None = None,
    ) -> None:
        """Add a rule; raises ValueError/TypeError on bad input, RuntimeError after compile()."""
    def compile(self) -> None:
        """Freeze the rules; later add() raises RuntimeError, later compile() does nothing."""
    def lookup(
        self,
        number: str | None,
        mti: str | None,
        processing_code: str | None,
        merchant: str | None,
        currency: str | None,
        amount: int | None,
    ) -> int:
        """Target of the best matching rule, or -1 (also for a number that is not all digits)."""
    def candidates(self, number: str | None) -> list[int]:
        """Targets of rules covering number, best first, whatever their conditions, up to the first unconditional one."""

def luhn_ok(pan: str) -> bool:
    """True when pan is 12..19 ASCII digits with a valid Luhn check digit."""
