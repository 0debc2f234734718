"""A ``dialect`` setting (listeners, card acquirers) checked the way the switch will load it.

:func:`dialect_problem` gives the line a configuration error carries: the
compiled loader's own message, which names the file (also for one that is
not UTF-8 text, as TOML must be).
"""
from __future__ import annotations

from native.iso8583 import dialect

__all__ = ["dialect_problem"]


def dialect_problem(name_or_path: str) -> str | None:
    """Why the dialect ``name_or_path`` (a shipped name or a file) does not load; None when it does."""
    try:
        dialect(name_or_path)
    except (OSError, ValueError, TypeError) as e:
        return str(e)
    return None
