"""A ``dialect`` setting (listeners, card acquirers) checked the way the switch will load it.

:func:`dialect_problem` gives the line a configuration error carries: the
compiled loader's own message (it names the file), or, for a file that is not
text, one naming the file too (TOML is UTF-8; the loader's decoding error
names only the byte).
"""
from __future__ import annotations

from native.iso8583 import dialect

__all__ = ["dialect_problem"]


def dialect_problem(name_or_path: str) -> str | None:
    """Why the dialect ``name_or_path`` (a shipped name or a file) does not load; None when it does."""
    try:
        dialect(name_or_path)
    except UnicodeDecodeError as e:
        return f"dialect file {name_or_path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
    except (OSError, ValueError, TypeError) as e:
        return str(e)
    return None
