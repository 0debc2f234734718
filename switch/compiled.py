"""The request path's Python modules, compiled from their own source.

Cython compiles each module below from its ``.py`` file, unchanged (its
pure-Python mode), into an extension beside it, which Python imports before
the source.  Measured under callgrind (``python -m benchmarks.loop_cpu
--instructions --writer process``), it takes 11% of the event loop's
instructions per purchase: the interpreter's dispatch goes, the same calls
on Python objects stay (end to end, the gain was within the noise of a
shared 2-core machine: README, "Benchmarks").

The source stays the one implementation: there is no second, hand-typed
copy to drift.  What compiling changes is that an extension missing or
older than its source runs silently slow or silently old, so in a source
checkout ``serve`` refuses to start on either (:func:`problems`) and the
test suite stops before its first test; ``make build`` (which ``make run``
and ``make test`` run) recompiles what changed.

``setup.py`` reads :data:`MODULES` from this file without importing the
project: keep this module free of project imports.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os

#: Every module a card purchase runs through on the switch's event loop and in
#: its journal writer, from the terminal's bytes to the acquirer's and back.
MODULES = (
    "switch.io.server",
    "switch.io.service",
    "switch.io.backstop",
    "switch.core.engine",
    "switch.core.rejections",
    "switch.core.refunds",
    "switch.core.messages",
    "switch.core.security",
    "switch.core.vas",
    "switch.core.routing",
    "switch.core.pipeline",
    "switch.core.states",
    "switch.core.commands",
    "switch.core.host_stans",
    "switch.core.inflight",
    "switch.core.uploads",
    "switch.core.limits",
    "switch.core.link_metrics",
    "switch.core.reversal",
    "switch.core.reversal_said",
    "switch.core.network",
    "switch.core.currencies",
    "switch.keyed_hash",
    "switch.plain_metrics",
    "switch.metrics",
    "switch.journal.process",
    "switch.journal.reversal_card",
    "switch.journal.groupcommit",
    "switch.journal.writer",
    "switch.journal.sqlite",
    "switch.journal.compiled",
    "switch.journal.pan_guard",
    "adapters.card.link",
    "adapters.card.hostlink",
    "adapters.card.answers",
    "adapters.card.slot",
    "adapters.card.inflight",
    "adapters.card.messages",
    "adapters.card.breaker",
)


def problems(modules=MODULES) -> list[str]:
    """One line per module that would run from its source: not compiled, or compiled
    from an older source.  Imports none of them (their packages only)."""
    found = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            found.append(f"{name}: not found")
            continue
        line = verdict(name, spec.origin)
        if line is not None:
            found.append(line)
    return found


def verdict(name: str, origin: str) -> str | None:
    """What is wrong with module ``name`` loaded from ``origin``, or None."""
    if not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return f"{name} is not compiled ({os.path.relpath(origin)} would run as Python): run `make build`"
    here = os.path.dirname(origin)
    top = here
    for _ in range(name.count(".")):
        top = os.path.dirname(top)
    if not os.path.exists(os.path.join(top, "setup.py")):
        # An installation (a wheel): built from what it holds, and its files'
        # times say only in which order they were unpacked.
        return None
    stem = os.path.join(here, name.rpartition(".")[2])
    try:
        built = os.stat(origin).st_mtime
    except FileNotFoundError:
        return None
    # Its .pxd (the C-level declaration of its classes) is part of its source too.
    for source in (stem + ".py", stem + ".pxd"):
        try:
            changed = os.stat(source).st_mtime > built
        except FileNotFoundError:
            continue
        if changed:
            return f"{name} was compiled before {os.path.relpath(source)} last changed: run `make build`"
    return None
