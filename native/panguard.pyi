"""Types of native/panguard.pyx (the journal's PAN guard in C, and the PAN masker)."""

__all__ = ["luhn_run", "digit_count", "is_pan_hash", "mask_pan", "pan_spans", "holds_pan", "mask_pans"]

def luhn_run(values: tuple[object, ...]) -> tuple[int, int] | None:
    """(index, run length) of the first str value holding 13..19 ASCII digits that pass the Luhn check, else None."""
def digit_count(text: str) -> int:
    """How many characters of text are digits (str.isdigit)."""
def is_pan_hash(text: str) -> bool:
    """Whether text is "v" + 1..3 ASCII digits + ":" + 64 lower-case hex digits."""
def mask_pan(pan: str | None) -> str | None:
    """First 6 + last 4 characters of pan, the rest '*'; shorter than 13: only the last 4; None and "" unchanged."""
def pan_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every card number in text: 13..19 Luhn-valid digits, one run or groups joined by ' ' or '-'."""
def holds_pan(text: object) -> bool:
    """Whether text is a str holding a card number (pan_spans finds one)."""
def mask_pans(text: object) -> object:
    """text with every card number masked (first 6 + last 4 digits, separators kept); non-str unchanged."""
