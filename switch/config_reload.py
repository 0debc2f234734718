"""What a configuration reload applies, and what needs a restart.

A reload (SIGHUP, ``/admin/reload``) hands the whole new configuration to the
running switch (``Switch.reload`` -> ``Engine.apply``); what the switch built
once at its start (listeners, the journal, the acquirers' links, the security
module, the value-added services' clients) keeps running as it was.  The
answer to a reload names both, key path by key path, and must say what the
switch really does: an operator who is told a change needs a restart, when it
has already been taken, restarts for nothing; one told a change was applied,
when it was not, believes a fix is live.
"""
from __future__ import annotations

import msgspec

# Read per request or per pass by the running switch: a reload applies them.
# Read by the engine on every use, so a reload takes them at once.
_RELOADABLE = ("merchants", "routes", "response_timeout", "reversal_retry", "reversal_backoff_max",
               "reversal_not_found_window", "retransmission_window", "drain_timeout", "max_in_flight_per_terminal",
               "card_retention")
_RELOADABLE_ACQUIRER_KEYS = ("timeout",)
# ``security``: the engine builds its terminal security (policies, terminal key
# names, DUKPT bindings, acquirers' zone keys) from every new configuration;
# the security module itself (software key store or HSM link) is opened once.
_SECURITY_AT_START = ("module",)
# ``vas``: which services a merchant's moments call is the engine's, taken at
# once; a service's client (type, URL, keys, its own deadline) is built once.
_RELOADABLE_VAS_KEYS = ("merchants", "moments")
_NOT_KEYS = frozenset({"source", "left_out"})  # Config fields set by the loader, never keys of a file


def _diff(old, new, path: str) -> list[str]:
    """Key paths where ``old`` and ``new`` differ, as deep as both have the same shape."""
    if old == new:
        return []
    if isinstance(old, msgspec.Struct) and type(old) is type(new):
        out = []
        for f in old.__struct_fields__:
            out += _diff(getattr(old, f), getattr(new, f), f"{path}.{f}" if path else f)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += _diff(a, b, f"{path}[{i}]")
        return out
    return [path]


def _key(path: str) -> str:
    """``vas[0].merchants[1]`` -> ``merchants``: a path's key one level below its section."""
    rest = path.split(".", 1)[1] if "." in path else ""
    return rest.split("[", 1)[0].split(".", 1)[0]


def check_files(new) -> None:
    """Raise :class:`switch.config.ConfigError` for a file ``new`` names that is missing,
    unreadable or wrong, as a start would, and for a key file of a bundled simulator
    still missing: the simulators started with the switch and wrote theirs then, so
    a file missing now is no simulator's to write (and the switch keeps running on
    the configuration it has).  A single process and the supervisor of ``--workers``
    both ask this before they take a file."""
    from switch import preflight

    preflight.check_files(new, running=True)


def acquirers_changed(running: set[str] | frozenset[str], new) -> str | None:
    """Why a switch running the acquirers named ``running`` cannot take ``new`` (a
    :class:`switch.config.Config`) by a reload, naming its file; None if it can.

    An acquirer's link, breaker and STAN counter are built once at start: one
    added or removed needs a restart, and the whole reload is refused.  The
    supervisor of ``serve --workers`` asks the same before it accepts a file,
    so it never hands its workers one that each of them would refuse.
    """
    names = {a.name for a in new.acquirers}
    if names == set(running):
        return None
    # An added one by its key path too: the answer to /admin/reload quotes no value of the file.
    changed = [f"{a.name} added at `$.acquirers[{i}]`" for i, a in enumerate(new.acquirers) if a.name not in running]
    changed += [f"{name} removed" for name in sorted(set(running) - names)]
    return f"{new.source}: acquirers changed ({', '.join(changed)}); that needs a restart"


def reload_changes(old, new) -> tuple[list[str], list[str]]:
    """What a reload from ``old`` to ``new`` (two :class:`switch.config.Config`) can apply, and what needs a restart.

    Returns ``(applied, refused)``, both lists of key paths in ``new``
    (``routes[2].prefixes[0]``, ``acquirers[1].endpoints[0]``); a refused
    entry may carry the reason in parentheses (``acquirers[3] (added
    'bank-c')``).  Merchants, routes, response_timeout, reversal_retry,
    acquirer timeouts, the terminals' security (``security.merchants``,
    ``security.acquirers``) and which services a merchant's moments call are
    applied; acquirer endpoints, credentials, types and every other acquirer
    key, acquirers added or removed, listeners, http, the journal, the
    security module, the services themselves, token keys, events and
    simulators need a restart.  A route naming an acquirer that is not
    running yet is refused with it.  Pure: no I/O, nothing changed.
    """
    applied: list[str] = []
    refused: list[str] = []
    old_acq = {a.name: a for a in old.acquirers}
    new_names = {a.name for a in new.acquirers}
    for i, a in enumerate(new.acquirers):
        before = old_acq.get(a.name)
        if before is None:
            refused.append(f"acquirers[{i}] (added {a.name!r})")
            continue
        for path in _diff(before, a, f"acquirers[{i}]"):
            (applied if _key(path) in _RELOADABLE_ACQUIRER_KEYS else refused).append(path)
    for name in old_acq:
        if name not in new_names:
            refused.append(f"acquirers (removed {name!r})")
    for f in new.__struct_fields__:
        if f == "acquirers" or f in _NOT_KEYS:
            continue
        paths = _diff(getattr(old, f), getattr(new, f), f)
        if f == "security":
            for path in paths:
                (refused if path == "security" or _key(path) in _SECURITY_AT_START else applied).append(path)
        elif f == "vas":
            for path in paths:  # "vas" alone: services added or removed
                (applied if path != "vas" and _key(path) in _RELOADABLE_VAS_KEYS else refused).append(path)
        elif f not in _RELOADABLE:
            refused += paths
        elif f == "routes" and paths:
            missing = [
                f"routes[{i}].acquirers[{j}] (acquirer {n!r} is not running)"
                for i, r in enumerate(new.routes)
                for j, n in enumerate(r.acquirers)
                if n not in old_acq
            ]
            if missing:
                refused += missing
            else:
                applied += paths
        else:
            applied += paths
    return applied, refused
