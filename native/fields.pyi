"""Types of native/fields.pyx (several fields of a decoded message read at once)."""
from typing import Any

__all__ = ["answer", "echo", "joined", "number", "values"]

def echo(msg: Any, out: dict, numbers: tuple[int, ...]) -> None:
    """out[n] = msg[n] for each field number n present in msg."""
def values(msg: Any, numbers: tuple[int, ...]) -> tuple[Any, ...]:
    """msg.get(n) for each field number n, as a tuple."""
def joined(msg: Any, head: bytes | str, tags: tuple[tuple[int, bytes], ...]) -> bytes:
    """head, then tag + value (text UTF-8 encoded) of each (n, tag) whose field n is present."""
def number(s: Any) -> int:
    """int(s), read in C for up to 18 ASCII digits."""
def answer(msg: Any, mti: str, numbers: tuple[int, ...]) -> dict:
    """{"mti": mti} and msg[n] for each field number n present in msg, in a dict presized for 16 entries."""
