"""Configuration checks of terminal IDs across merchants.

Kept beside :mod:`switch.config`, whose ``_check`` calls them after the
merchants' own checks (each terminal ID 1 to 8 characters, in one merchant).
"""
from __future__ import annotations

from typing import Callable

from switch.core.acquirer import order_prefix
from switch.core.routing import expand_terminals


def check_order_prefixes(cfg, fail: Callable[[str, str], None]) -> None:
    """No two terminal IDs whose wallet order numbers would be the same.

    A wallet order number is the terminal's :func:`order_prefix` + field 7 +
    STAN, and the prefix writes every character but a letter or digit as
    ``_``: terminals ``AB_00001``, ``AB 00001`` and ``AB.00001`` (of one merchant or two)
    would send the same order number for the same field 7 and STAN.  The
    journal keeps order numbers unique, so the second payment would fail (96)
    instead of reaching its wallet; the file is refused instead, naming both
    terminals and where each is configured.
    """
    seen: dict[str, tuple[str, str]] = {}  # prefix -> (terminal ID, key path)
    for i, merchant in enumerate(cfg.merchants):
        for j, spec in enumerate(merchant.terminals):
            path = f"merchants[{i}].terminals[{j}]"
            for tid in expand_terminals(spec):
                prefix = order_prefix(tid)
                first = seen.setdefault(prefix, (tid, path))
                if first[0] != tid:
                    fail(path, f"terminal {tid!r} gives the same wallet order numbers as terminal {first[0]!r} "
                               f"at `$.{first[1]}` (prefix {prefix!r}): rename one of them")
