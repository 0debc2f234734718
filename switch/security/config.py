"""Security configuration: per-merchant policy, key references, the module (spec section 8).

Keys are referred to by name only; clear keys are never in the
configuration. :class:`Security` is ``switch.config.Config.security``, and
the configuration's cross-field checks call :func:`check`.

    [security.module]
    kind = "software"                      # or "hsm"
    key_store = "/etc/payswitch/keys.json"
    master_key_file = "/etc/payswitch/master.key"   # or master_key_env = "PAYSWITCH_MASTER_KEY"

    [[security.merchants]]
    merchant = "SHOP00000000001"
    policy = "mac+pin"                     # none | mac | mac+pin
    [[security.merchants.terminals]]
    terminals = "SHOP0001-SHOP0099"
    tmk = "shop-tmk"                       # session keys (0800/101) under this TMK
    [[security.merchants.terminals]]
    terminals = "SHOP0100-SHOP0101"
    bdk = "shop-bdk"                       # or DUKPT from this BDK (KSN in field 48 tag KS)
    [security.merchants.terminals.dukpt_devices]   # each terminal's PIN pad(s), by initial KSN
    SHOP0100 = "FFFF9876543210E00000"
    SHOP0101 = ["FFFF9876543212E00000", "FFFF9876543214E00000"]

    [[security.acquirers]]
    acquirer = "bank-a"
    zpk = "bank-a-zpk"                     # PIN blocks go to bank-a under this ZPK
    pin_format = 0
"""
from __future__ import annotations

from typing import Literal

import msgspec

from .dukpt import KsnError, device_problem, ksn_device, parse_ksn
from .keys import session_key_names
from .module import DukptKey, SessionKey

__all__ = [
    "SoftwareModuleConfig",
    "HsmModuleConfig",
    "TerminalKeys",
    "MerchantSecurity",
    "AcquirerKeys",
    "Security",
    "UnboundDevice",
    "check",
]

Policy = Literal["none", "mac", "mac+pin"]


class SoftwareModuleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind", tag="software"):
    key_store: str
    master_key_file: str | None = None
    master_key_env: str | None = None


class HsmModuleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind", tag="hsm"):
    endpoints: list[str]  # "host:port", tried in order
    header_length: int = 4  # payShield message header, characters
    key_table: str  # names -> key cryptograms under the LMK (not secret without the LMK)
    timeout: float = 2.0


class TerminalKeys(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    terminals: str  # "SEC00001" or "SEC00001-SEC00099" (same form as merchants' terminals)
    tmk: str | None = None  # session keys under this TMK
    bdk: str | None = None  # or DUKPT from this BDK
    # DUKPT: terminal ID -> the device(s) it may use, each by its initial KSN (counter bits zero).
    # Needed for every terminal of a bdk entry but the sandbox's (check, _check_dukpt_devices).
    dukpt_devices: dict[str, str | list[str]] | None = None
    pin_formats: list[Literal[0, 3, 4]] = msgspec.field(default_factory=lambda: [0, 3, 4])  # accepted from these terminals


class MerchantSecurity(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    merchant: str
    policy: Policy = "none"
    terminals: list[TerminalKeys] = []


class AcquirerKeys(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    acquirer: str
    zpk: str  # the acquirer's zone PIN key, by name in the security module
    # Refused by check(): nothing ever read it, and a key that does nothing
    # would let an operator think it protects something.
    zmk: str | None = None
    pin_format: Literal[0, 3, 4] = 0


class Security(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    module: SoftwareModuleConfig | HsmModuleConfig | None = None
    merchants: list[MerchantSecurity] = []
    acquirers: list[AcquirerKeys] = []

    def policy(self, merchant: str) -> str:
        for own in self.merchants:
            if own.merchant == merchant:
                return own.policy
        return "none"

    def terminal_keys(self, merchant: str, terminal: str) -> TerminalKeys | None:
        for own in self.merchants:
            if own.merchant == merchant:
                for t in own.terminals:
                    if _in_range(terminal, t.terminals):
                        return t
        return None

    def key_refs(self, merchant: str, terminal: str, ksn: str | None = None):
        """(MAC key, PIN key) of a terminal's request for the security module, or None without keys.

        DUKPT terminals need the KSN of field 48 tag KS (KsnError without it)
        naming a device bound to the terminal (UnboundDevice otherwise, but in
        the sandbox's unbound range); the others use the session keys of their
        last sign-on.
        """
        t = self.terminal_keys(merchant, terminal)
        if t is None:
            return None
        if t.bdk is not None:
            if not ksn:
                raise KsnError("field 48 tag KS (the DUKPT key serial number) is missing")
            parse_ksn(ksn)
            if t.dukpt_devices is not None:
                _check_bound(t.dukpt_devices, terminal, ksn)
            ref = DukptKey(t.bdk, ksn)
            return ref, ref
        tak, tpk = session_key_names(terminal)
        return SessionKey(tak), SessionKey(tpk)

    def acquirer_keys(self, acquirer: str) -> AcquirerKeys | None:
        for a in self.acquirers:
            if a.acquirer == acquirer:
                return a
        return None


class UnboundDevice(KsnError):
    """The request's KSN names a DUKPT device that is not bound to its terminal (``dukpt_devices``)."""


def _devices(bound: str | list[str] | None) -> list[str]:
    """A ``dukpt_devices`` value as a list of devices (upper case); [] for a terminal not in the table."""
    if bound is None:
        return []
    return [bound.upper()] if isinstance(bound, str) else [d.upper() for d in bound]


def _shown_device(device: str) -> str:
    """A device as a log names it: the last 6 digits of its ID (before the counter), as reprs keep KSNs short."""
    return "…" + device[:15 if len(device) == 20 else 16][-6:]


def _check_bound(table: dict, terminal: str, ksn: str) -> None:
    """UnboundDevice unless the KSN's device is one ``table`` binds to ``terminal`` (KsnError for an unusable KSN).

    Before the MAC is checked or the device's counter raised: a device of another
    terminal moves no counter and gets no MAC verified.
    """
    device, _ = ksn_device(ksn)
    if device not in _devices(table.get(terminal)):
        raise UnboundDevice(f"device {_shown_device(device)} is not bound to terminal {terminal} (dukpt_devices)")


def _split(spec: str) -> tuple[str, str]:
    lo, sep, hi = spec.partition("-")
    return (lo, hi) if sep else (spec, spec)


def _in_range(terminal: str, spec: str) -> bool:
    lo, hi = _split(spec)
    return len(terminal) == len(lo) and lo <= terminal <= hi


def check(sec: Security, path: str = "security") -> list[tuple[str, str]]:
    """Cross-field problems as ``(key path, message)``: the caller raises with its file name."""
    problems: list[tuple[str, str]] = []
    module = sec.module
    if isinstance(module, SoftwareModuleConfig) and (module.master_key_file is None) == (module.master_key_env is None):
        problems.append((f"{path}.module", "give exactly one of master_key_file or master_key_env"))
    if isinstance(module, HsmModuleConfig) and not module.endpoints:
        problems.append((f"{path}.module.endpoints", "at least one host:port"))
    needs_module = False
    for i, ms in enumerate(sec.merchants):
        if ms.policy != "none":
            needs_module = True
            if not ms.terminals:
                problems.append((f"{path}.merchants[{i}].terminals", f"policy {ms.policy!r} needs terminal keys"))
        for j, t in enumerate(ms.terminals):
            where = f"{path}.merchants[{i}].terminals[{j}]"
            if (t.tmk is None) == (t.bdk is None):
                problems.append((where, "give exactly one of tmk or bdk"))
            lo, hi = _split(t.terminals)
            if len(lo) != len(hi) or lo > hi:
                problems.append((f"{where}.terminals", f"bad terminal range {t.terminals!r}"))
    for i, ak in enumerate(sec.acquirers):
        if ak.zmk is not None:
            problems.append((f"{path}.acquirers[{i}].zmk", "not supported: the switch never reads it (zpk names a key "
                             "already in the security module, no key is exchanged under a ZMK); remove it"))
    if needs_module and module is None:
        problems.append((f"{path}.module", "a merchant policy needs a security module"))
    _check_dukpt_devices(sec, path, problems)
    return problems


def _sandbox_dukpt(merchant: str, t: TerminalKeys) -> bool:
    """Whether ``t`` is (within) the sandbox's DUKPT terminals under its public BDK (spec 7).

    They stay unbound: integrators choose any KSN, and a binding would protect
    nothing, since anyone can derive every device's keys from a public BDK.
    """
    from .sandbox import security_config  # it builds on this module

    lo, hi = _split(t.terminals)
    for ms in security_config().merchants:
        for demo in ms.terminals:
            demo_lo, demo_hi = _split(demo.terminals)
            if (ms.merchant == merchant and demo.bdk is not None and demo.bdk == t.bdk
                    and len(lo) == len(hi) == len(demo_lo) and demo_lo <= lo <= hi <= demo_hi):
                return True
    return False


def _check_dukpt_devices(sec: Security, path: str, problems: list[tuple[str, str]]) -> None:
    """Every DUKPT terminal but the sandbox's binds its device(s), and a device one terminal only.

    With each device bound to one terminal, the device's KSN counter (the
    replay check, kept per BDK and device) is that terminal's, and a device
    whose initial key leaked MACs for its own terminal only.
    """
    from switch.core.routing import expand_terminals  # the merchants' own range rule

    seen: dict[str, tuple[str, str]] = {}  # device -> (terminal, key path)
    for i, ms in enumerate(sec.merchants):
        for j, t in enumerate(ms.terminals):
            where = f"{path}.merchants[{i}].terminals[{j}]"
            if t.bdk is None or t.tmk is not None:
                if t.dukpt_devices is not None and t.tmk is not None:
                    problems.append((f"{where}.dukpt_devices", "binds DUKPT devices, but these terminals use "
                                     "session keys (tmk): remove it"))
                continue
            table = t.dukpt_devices
            if table is None:
                if not _sandbox_dukpt(ms.merchant, t):
                    which = (f"terminals {t.terminals!r} use DUKPT (bdk {t.bdk!r}) but bind" if "-" in t.terminals
                             else f"terminal {t.terminals!r} uses DUKPT (bdk {t.bdk!r}) but binds")
                    problems.append((where, f"{which} no device: add dukpt_devices, each terminal ID = its PIN "
                                     "pad's initial KSN"))
                continue
            try:
                tids = expand_terminals(t.terminals)
            except ValueError as e:
                problems.append((f"{where}.terminals", f"{e}: the terminals of dukpt_devices are checked one by one"))
                tids = []
            lengths = set()
            for tid, bound in table.items():
                key = f"{where}.dukpt_devices.{tid}"
                if not _in_range(tid, t.terminals):
                    problems.append((key, f"terminal {tid!r} is not in this entry's terminals {t.terminals!r}"))
                if not _devices(bound):
                    problems.append((key, "binds no device: name the terminal's device (its initial KSN)"))
                for k, device in enumerate([bound] if isinstance(bound, str) else bound):
                    at = key if isinstance(bound, str) else f"{key}[{k}]"
                    problem = device_problem(device)
                    if problem:
                        problems.append((at, problem))
                        continue
                    device = device.upper()
                    lengths.add(len(device))
                    first = seen.setdefault(device, (tid, at))
                    if first != (tid, at):
                        problems.append((at, f"device {device} is bound to terminal {first[0]!r} already (at "
                                         f"`$.{first[1]}`): a device belongs to one terminal, whose replay counter "
                                         "its KSN counter is"))
            if len(lengths) > 1:
                problems.append((f"{where}.dukpt_devices", "mixes TDES (20 hex digits) and AES (24) devices: "
                                 f"bdk {t.bdk!r} is one or the other"))
            missing = [tid for tid in tids if tid not in table]
            if missing:
                more = f" (nor do {len(missing) - 1} more of {t.terminals!r})" if len(missing) > 1 else ""
                problems.append((f"{where}.dukpt_devices", f"terminal {missing[0]!r} uses DUKPT (bdk {t.bdk!r}) but "
                                 f"binds no device{more}: add it with its PIN pad's initial KSN"))
