"""The security module interface: all terminal and host cryptography goes through it.

Keys are named; a caller never holds a clear key. A MAC key is either a
named session key (the terminal's TAK) or a DUKPT key (a named BDK and the
request's KSN); a PIN key likewise (TPK / ZPK, or DUKPT). Implementations:
:class:`switch.security.software.SoftwareModule` (keys in an encrypted file)
and the payShield-style HSM client (``switch.io.hsm.HsmModule``); they pass
the same tests.

Errors, and the answer the pipeline gives for each (spec sections 5, 8):

- :class:`~switch.security.pinblock.PinBlockError` — the PIN block is not a
  valid block of an accepted format: 55;
- :class:`~switch.security.dukpt.KsnError` — the KSN cannot be used: A0 for a
  MAC, 55 for a PIN;
- :class:`ModuleKeyError` subclasses (unknown key, wrong kind, check value
  mismatch) and :class:`ModuleUnavailable` — our configuration or our module: 96.

No message of any of them quotes a key, a PIN block, a PIN or a PAN.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

from .dukpt import KsnError
from .pinblock import PinBlockError

__all__ = [
    "SessionKey",
    "DukptKey",
    "MacKey",
    "PinKey",
    "SessionKeys",
    "StoredKey",
    "KeyInfo",
    "Diagnostics",
    "SecurityModule",
    "SecurityModuleError",
    "ModuleKeyError",
    "UnknownKey",
    "WrongKeyKind",
    "CheckValueMismatch",
    "ModuleUnavailable",
    "PinBlockError",
    "KsnError",
]


class SessionKey(msgspec.Struct, frozen=True):
    """A key held by the module under a name (a TAK, TPK or ZPK)."""

    name: str


class DukptKey(msgspec.Struct, frozen=True):
    """The DUKPT working key of one request: the BDK's name and the KSN (field 48 tag KS)."""

    bdk: str
    ksn: str

    def __repr__(self) -> str:  # the KSN is not secret, but keep reprs short
        return f"DukptKey(bdk={self.bdk!r}, ksn=…{self.ksn[-5:]})"


MacKey = SessionKey | DukptKey
PinKey = SessionKey | DukptKey


class SessionKeys(msgspec.Struct, frozen=True):
    """New session keys for a terminal: each under its TMK (hex) with its check value (spec 8, tags TA TP CA CP)."""

    algorithm: str
    tak_under_tmk: str
    tak_kcv: str
    tpk_under_tmk: str
    tpk_kcv: str

    def field48(self) -> dict[str, str]:
        return {"TA": self.tak_under_tmk, "CA": self.tak_kcv, "TP": self.tpk_under_tmk, "CP": self.tpk_kcv}


class StoredKey(msgspec.Struct, frozen=True, array_like=True):
    """A key as kept outside the module (the journal's ``terminal_key`` rows), never in clear.

    ``blob``: for the software module the key sealed under its master key
    (AES-256-GCM, bound to the terminal ID, kind, algorithm and check value);
    for an HSM the key's cryptogram under the LMK. Either is useless without
    the module that made it.
    """

    kind: str
    algorithm: str
    kcv: str
    blob: str

    def __repr__(self) -> str:
        return f"StoredKey({self.kind}, {self.algorithm}, kcv={self.kcv})"


class KeyInfo(msgspec.Struct, frozen=True):
    name: str
    kind: str
    algorithm: str
    kcv: str


class Diagnostics(msgspec.Struct, frozen=True):
    module: str  # "software" or "hsm"
    ok: bool
    keys: int
    detail: str = ""


class SecurityModuleError(Exception):
    """Base of the module's own errors (not the terminal's)."""


class ModuleKeyError(SecurityModuleError):
    """A key problem on our side: unknown, wrong kind or algorithm, bad check value."""


class UnknownKey(ModuleKeyError):
    pass


class WrongKeyKind(ModuleKeyError):
    pass


class CheckValueMismatch(ModuleKeyError):
    pass


class ModuleUnavailable(SecurityModuleError):
    """The module cannot be reached or answered something we cannot use."""


@runtime_checkable
class SecurityModule(Protocol):
    async def generate_mac(self, key: MacKey, data: bytes) -> bytes:
        """The 8-byte MAC of ``data`` (retail MAC for TDES keys, CMAC/8 for AES); for DUKPT the request's MAC key (spec 8)."""
        ...

    async def verify_mac(self, key: MacKey, data: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the 8-byte MAC of ``data`` (for DUKPT: the request MAC key)."""
        ...

    async def translate_pin(
        self,
        source: PinKey,
        pin_block: bytes,
        pan: str,
        destination: str,
        destination_format: int,
        accept: tuple[int, ...] = (0, 3, 4),
    ) -> bytes:
        """The PIN block re-encrypted under the named ZPK, in ``destination_format`` (0, 3 or 4), PAN unchanged.

        Raises PinBlockError when the block does not decrypt to a valid block of a format in ``accept``.
        """
        ...

    async def generate_session_keys(self, tmk: str, tak: str, tpk: str) -> SessionKeys:
        """New TAK and TPK kept under the names ``tak`` and ``tpk``, returned under the TMK with check values."""
        ...

    async def import_key(self, name: str, kind: str, algorithm: str, kek: str, key_under_kek: bytes, kcv: str) -> KeyInfo:
        """Take a key that arrives under a KEK (ZMK, TMK); refused unless its check value is ``kcv``."""
        ...

    async def key_info(self, name: str) -> KeyInfo:
        ...

    async def export_keys(self, names: tuple[str, ...], context: str) -> tuple[StoredKey, ...]:
        """The named keys in a form to keep outside the module (:class:`StoredKey`), bound to ``context``."""
        ...

    async def install_keys(self, keys: tuple[tuple[str, StoredKey], ...], context: str) -> None:
        """Take keys back from :meth:`export_keys` under the names given (replacing keys of those names).

        ModuleKeyError when one does not open (another master key or LMK, a
        damaged row); then none is installed.
        """
        ...

    async def rename_keys(self, renames: tuple[tuple[str, str], ...]) -> None:
        """Move each key to its new name, replacing what was there (pending session keys become current)."""
        ...

    async def drop_keys(self, names: tuple[str, ...]) -> None:
        """Forget the named keys (names unknown are ignored)."""
        ...

    async def diagnostics(self) -> Diagnostics:
        ...
