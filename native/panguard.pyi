"""Types of native/panguard.pyx (the journal's PAN guard in C, and the PAN masker)."""

__all__ = ["luhn_run", "digit_count", "is_pan_hash", "mask_pan"]

def luhn_run(values: tuple[object, ...]) -> tuple[int, int] | None:
    """(index, run length) of the first str value holding 13..19 ASCII digits that pass the Luhn check, else None."""
def digit_count(text: str) -> int:
    """How many characters of text are digits (str.isdigit)."""
def is_pan_hash(text: str) -> bool:
    """Whether text is "v" + 1..3 ASCII digits + ":" + 64 lower-case hex digits."""
def mask_pan(pan: str | None) -> str | None:
    """First 6 + last 4 characters of pan, the rest '*'; shorter than 13: only the last 4; None and "" unchanged."""
