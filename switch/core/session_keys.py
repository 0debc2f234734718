"""A terminal's session keys over their life: issued pending, made current by use, kept in the journal.

Spec 8 lets any 0800/101 ask for new keys, without a MAC (a terminal asking
for keys may have none).  If new keys replaced the old ones at once, anyone
who knows a terminal ID could lock the real terminal out by asking for keys
it never receives.  So (a project rule within the contract):

- keys given by 0800/101, or by a sign-on, are the terminal's *pending* set;
  its *current* set stays valid;
- the first request that verifies under the pending TAK makes the pending set
  current and drops the old one; the real terminal, which got the keys,
  moves on, and a stranger's request for keys changes nothing it uses;
- one pending set per terminal: a newer 0800/101 replaces it.

Every set is kept in the journal (``switch.journal.terminal_keys``) as the
security module exported it (sealed under the software module's master key,
or the HSM's cryptograms under its LMK), so keys survive a restart
(:func:`restore`), and processes sharing the journal agree: on a MAC that
verifies under neither set this process holds, the journal's sets are loaded
(another process may have issued or promoted keys) and tried once more.

When the current set is replaced (promoted here, or found replaced in the
journal), the module keeps the old one under the *previous* names
(:func:`~switch.security.keys.previous_key_names`), never tried on a
request: a request that verified under it before the switch-over is
answered MACed under it (spec 8: the same key).  ``switchovers`` (the
caller's, per process) counts each terminal's switch-overs, so that the
caller knows which set a request in flight verified under.

Every function here is a generator of :mod:`switch.core.commands` (``Op`` for
the journal, ``Sec`` for the module), run by the engine's driver.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Generator

from switch.core.commands import Op, Sec
from switch.security.keys import pending_key_names, previous_key_names, session_key_names
from switch.security.module import ModuleKeyError, SessionKey, StoredKey, UnknownKey

__all__ = ["issue", "has_keys", "verify", "refresh", "restore"]

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]
CURRENT, PENDING = "current", "pending"


def _names(terminal_id: str, slot: str) -> tuple[str, str]:
    return session_key_names(terminal_id) if slot == CURRENT else pending_key_names(terminal_id)


def issue(terminal_id: str, tmk: str) -> Gen:
    """New session keys as the terminal's pending set, journaled before they are given: the 0810's SessionKeys."""
    tak, tpk = _names(terminal_id, PENDING)
    new = yield Sec("generate_session_keys", tmk, tak, tpk)
    stored = yield Sec("export_keys", (tak, tpk), terminal_id)
    yield Op("store_terminal_keys", terminal_id, PENDING, tuple((k.kind, k.algorithm, k.kcv, k.blob) for k in stored))
    return new


def has_keys(terminal_id: str) -> Gen:
    """Whether the terminal has a current or pending set (the journal's word: any process may have given it)."""
    return bool((yield Op("terminal_keys", terminal_id)))


def verify(terminal_id: str, check: Callable[[SessionKey], Gen], switchovers: dict[str, int] | None = None) -> Gen:
    """(the current TAK the request's MAC verifies under, or None; the reason when None;
    the terminal's count in ``switchovers`` that the TAK belongs to).

    ``check(key)`` is the generator that verifies the request's MAC under
    ``key`` (a bool; UnknownKey when the module has no such key).
    ``switchovers``: counted up for the terminal when its current set is replaced.
    """
    current, pending = _names(terminal_id, CURRENT), _names(terminal_id, PENDING)
    switchovers = {} if switchovers is None else switchovers
    known = False
    for attempt in (1, 2):
        has_current = False
        for name in (current[0], pending[0]):
            # Read before the check: a switch-over while it runs makes the current key another one.
            count = switchovers.get(terminal_id, 0)
            try:
                ok = yield from check(SessionKey(name))
            except UnknownKey:
                continue
            known = True
            has_current = has_current or name == current[0]
            if not ok:
                continue
            if name == current[0]:
                return SessionKey(name), "", count
            info = yield Sec("key_info", name)
            if (yield Op("promote_terminal_keys", terminal_id, info.kcv)):
                renames = ((pending[0], current[0]), (pending[1], current[1]))
                if has_current:  # kept for the answers of requests in flight under it
                    previous = previous_key_names(terminal_id)
                    renames = ((current[0], previous[0]), (current[1], previous[1])) + renames
                yield Sec("rename_keys", renames)
                switchovers[terminal_id] = switchovers.get(terminal_id, 0) + 1
                log.info("terminal %s: pending session keys now current (TAK check %s)", terminal_id, info.kcv)
                return SessionKey(current[0]), "", switchovers[terminal_id]
            # Replaced meanwhile (a newer 0800/101 in another process): the journal says which is pending.
        if attempt == 2 or not (yield from refresh(terminal_id, switchovers)):
            break
    return None, "wrong MAC" if known else "no session keys: the terminal must sign on (0800/101)", 0


def _kcv(name: str) -> Gen:
    try:
        return (yield Sec("key_info", name)).kcv
    except UnknownKey:
        return None


def refresh(terminal_id: str, switchovers: dict[str, int] | None = None) -> Gen:
    """Make the module's sets of the terminal what the journal holds; whether anything changed.

    A current set replaced is kept under the previous names, and counted in ``switchovers``.
    """
    sets = yield Op("terminal_keys", terminal_id)
    changed = False
    for slot in (CURRENT, PENDING):
        tak, tpk = _names(terminal_id, slot)
        row = sets.get(slot)
        want = (row["tak"][2], row["tpk"][2]) if row else (None, None)
        have = ((yield from _kcv(tak)), (yield from _kcv(tpk)))
        if have == want:
            continue
        if slot == CURRENT and switchovers is not None:
            if None not in have:
                previous = previous_key_names(terminal_id)
                yield Sec("rename_keys", ((tak, previous[0]), (tpk, previous[1])))
                changed = True
            switchovers[terminal_id] = switchovers.get(terminal_id, 0) + 1
        if row is None:
            yield Sec("drop_keys", (tak, tpk))
            changed = True
            continue
        try:
            yield Sec("install_keys", ((tak, StoredKey(*row["tak"])), (tpk, StoredKey(*row["tpk"]))), terminal_id)
        except ModuleKeyError as e:
            log.error("terminal %s: its %s session keys in the journal do not open: %s", terminal_id, slot, e)
            continue
        changed = True
    return changed


def restore() -> Gen:
    """At start-up: every terminal's journaled sets into the module; how many sets were restored.

    A set that does not open (the module's master key or LMK changed) is
    logged and left: that terminal signs on again (spec 8).
    """
    every = yield Op("all_terminal_keys")
    restored = 0
    for terminal_id, sets in every.items():
        for slot, row in sets.items():
            if slot not in (CURRENT, PENDING) or set(row) != {"tak", "tpk"}:
                log.error("terminal %s: incomplete %s session keys in the journal, not restored", terminal_id, slot)
                continue
            tak, tpk = _names(terminal_id, slot)
            try:
                yield Sec("install_keys", ((tak, StoredKey(*row["tak"])), (tpk, StoredKey(*row["tpk"]))), terminal_id)
            except ModuleKeyError as e:
                log.error("terminal %s: %s session keys not restored (%s): it must sign on again", terminal_id, slot, e)
                continue
            restored += 1
    return restored
