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
    terminals = "SHOP0100-SHOP0199"
    bdk = "shop-bdk"                       # or DUKPT from this BDK (KSN in field 48 tag KS)

    [[security.acquirers]]
    acquirer = "bank-a"
    zpk = "bank-a-zpk"                     # PIN blocks go to bank-a under this ZPK
    pin_format = 0
"""
from __future__ import annotations

from typing import Literal

import msgspec

from .dukpt import KsnError, parse_ksn
from .keys import session_key_names
from .module import DukptKey, SessionKey

__all__ = [
    "SoftwareModuleConfig",
    "HsmModuleConfig",
    "TerminalKeys",
    "MerchantSecurity",
    "AcquirerKeys",
    "Security",
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

        DUKPT terminals need the KSN of field 48 tag KS (KsnError without it);
        the others use the session keys of their last sign-on.
        """
        t = self.terminal_keys(merchant, terminal)
        if t is None:
            return None
        if t.bdk is not None:
            if not ksn:
                raise KsnError("field 48 tag KS (the DUKPT key serial number) is missing")
            parse_ksn(ksn)
            ref = DukptKey(t.bdk, ksn)
            return ref, ref
        tak, tpk = session_key_names(terminal)
        return SessionKey(tak), SessionKey(tpk)

    def acquirer_keys(self, acquirer: str) -> AcquirerKeys | None:
        for a in self.acquirers:
            if a.acquirer == acquirer:
                return a
        return None


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
    return problems
