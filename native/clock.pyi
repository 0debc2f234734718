"""Types of native/clock.pyx (the calendar check of a terminal's fields 7, 12 and 13)."""

__all__ = ["impossible_clock"]

def impossible_clock(v7: str | None, v12: str | None, v13: str | None) -> int:
    """The first of fields 7, 12, 13 that is not a real date / time (no year: February has a 29th), else 0."""
