"""A security module in software: keys from the encrypted key store, session keys in memory.

For the sandbox and for deployments without an HSM. Clear keys live only
inside this object; what leaves it is a MAC, a translated PIN block, or a
key under a KEK. Session keys made at sign-on leave it only sealed under
the master key (:meth:`SoftwareModule.export_keys`): the switch keeps them
in the journal and gives them back at start-up, so terminals keep their
keys across restarts.
"""
from __future__ import annotations

import os
import secrets

from . import dukpt, keystore, pinblock
from .keys import USAGE, check_key, unwrap, wrap
from .keystore import Entry
from .mac import TerminalMac, kcv as check_value, same_mac
from .module import (
    CheckValueMismatch,
    Diagnostics,
    DukptKey,
    KeyInfo,
    MacKey,
    ModuleKeyError,
    PinKey,
    SessionKeys,
    StoredKey,
    UnknownKey,
    WrongKeyKind,
)

__all__ = ["SoftwareModule"]


class SoftwareModule:
    """:class:`~switch.security.module.SecurityModule` over an in-memory key ring."""

    def __init__(self, entries: dict[str, Entry] | None = None, master: bytes | None = None):
        """``master``: the key store's master key, which seals exported keys. Without one (a
        module made in a test from clear entries) a random one is made: exported keys then
        open only in this instance."""
        self._keys: dict[str, Entry] = dict(entries or {})
        self._macs: dict[str, TerminalMac] = {}  # per TAK name: cipher contexts made once per key
        self._master = master if master is not None else secrets.token_bytes(32)

    def _put(self, entry: Entry) -> None:
        self._keys[entry.name] = entry
        self._macs.pop(entry.name, None)

    @classmethod
    def from_store(cls, path: str | os.PathLike, master: bytes) -> "SoftwareModule":
        return cls(keystore.load(path, master), master)

    def __repr__(self) -> str:
        return f"SoftwareModule({len(self._keys)} keys)"

    # -- key lookup -----------------------------------------------------------

    def _entry(self, name: str, usage: str) -> Entry:
        try:
            entry = self._keys[name]
        except KeyError:
            raise UnknownKey(f"no key named {name!r}") from None
        if entry.kind not in USAGE[usage]:
            raise WrongKeyKind(f"key {name!r} is a {entry.kind}, not usable for {usage}")
        return entry

    def _mac(self, key: MacKey, direction: str) -> TerminalMac:
        if isinstance(key, DukptKey):  # a new key every transaction: nothing to keep
            bdk = self._entry(key.bdk, "dukpt")
            # Section 8: the answer's MAC is under the same key as the request's.
            return TerminalMac(*dukpt.working_key(bdk.key, key.ksn, "mac"))
        mac = self._macs.get(key.name)
        if mac is None:
            entry = self._entry(key.name, "mac")
            mac = self._macs[key.name] = TerminalMac(entry.key, entry.algorithm)
        return mac

    def _pin_key(self, key: PinKey) -> tuple[bytes, str]:
        if isinstance(key, DukptKey):
            bdk = self._entry(key.bdk, "dukpt")
            return dukpt.working_key(bdk.key, key.ksn, "pin")
        entry = self._entry(key.name, "pin-source")
        return entry.key, entry.algorithm

    # -- SecurityModule -------------------------------------------------------

    async def generate_mac(self, key: MacKey, data: bytes) -> bytes:
        return self._mac(key, "response")(data)

    async def verify_mac(self, key: MacKey, data: bytes, mac: bytes) -> bool:
        computed = self._mac(key, "request")(data)
        return len(mac) == 8 and same_mac(computed, mac)

    # Synchronous twins of the two above: the module is in-process, so a caller
    # on an event loop (a host link MACing every message) need not await it.

    def generate_mac_now(self, key: MacKey, data: bytes) -> bytes:
        return self._mac(key, "response")(data)

    def verify_mac_now(self, key: MacKey, data: bytes, mac: bytes) -> bool:
        return len(mac) == 8 and same_mac(self._mac(key, "request")(data), mac)

    async def translate_pin(
        self,
        source: PinKey,
        pin_block: bytes,
        pan: str,
        destination: str,
        destination_format: int,
        accept: tuple[int, ...] = pinblock.FORMATS,
    ) -> bytes:
        source_key, source_algorithm = self._pin_key(source)
        dest = self._entry(destination, "pin-destination")
        return pinblock.translate(
            source_key, source_algorithm, pin_block, pan, dest.key, dest.algorithm, destination_format, accept
        )

    async def generate_session_keys(self, tmk: str, tak: str, tpk: str) -> SessionKeys:
        kek = self._entry(tmk, "session-kek")
        size = 16  # TDES double length or AES-128
        new = {}
        for name, kind in ((tak, "tak"), (tpk, "tpk")):
            key = secrets.token_bytes(size)
            new[kind] = Entry(name, kind, kek.algorithm, check_value(key, kek.algorithm), key)
        for entry in new.values():
            self._put(entry)
        return SessionKeys(
            algorithm=kek.algorithm,
            tak_under_tmk=wrap(kek.key, kek.algorithm, new["tak"].key, kek.algorithm).hex().upper(),
            tak_kcv=new["tak"].kcv,
            tpk_under_tmk=wrap(kek.key, kek.algorithm, new["tpk"].key, kek.algorithm).hex().upper(),
            tpk_kcv=new["tpk"].kcv,
        )

    async def import_key(self, name: str, kind: str, algorithm: str, kek: str, key_under_kek: bytes, kcv: str) -> KeyInfo:
        kek_entry = self._entry(kek, "import-kek")
        try:
            key = unwrap(kek_entry.key, kek_entry.algorithm, key_under_kek, algorithm)
            check_key(key, algorithm, f"key {name!r}")
        except ValueError as e:
            raise CheckValueMismatch(f"key {name!r} under {kek!r}: {e}") from None
        actual = check_value(key, algorithm)
        if actual != kcv.strip().upper():
            raise CheckValueMismatch(f"key {name!r}: check value mismatch, refused")
        self._put(Entry(name, kind, algorithm, actual, key))
        return KeyInfo(name, kind, algorithm, actual)

    async def key_info(self, name: str) -> KeyInfo:
        try:
            e = self._keys[name]
        except KeyError:
            raise UnknownKey(f"no key named {name!r}") from None
        return KeyInfo(e.name, e.kind, e.algorithm, e.kcv)

    async def export_keys(self, names: tuple[str, ...], context: str) -> tuple[StoredKey, ...]:
        out = []
        for name in names:
            try:
                e = self._keys[name]
            except KeyError:
                raise UnknownKey(f"no key named {name!r}") from None
            out.append(StoredKey(e.kind, e.algorithm, e.kcv, keystore.seal_key(self._master, context, e)))
        return tuple(out)

    async def install_keys(self, keys: tuple[tuple[str, StoredKey], ...], context: str) -> None:
        opened = []
        for name, k in keys:
            try:
                opened.append(keystore.open_key(self._master, context, name, k.kind, k.algorithm, k.kcv, k.blob))
            except keystore.KeyStoreError as e:
                raise ModuleKeyError(str(e)) from None
        for entry in opened:
            self._put(entry)

    async def rename_keys(self, renames: tuple[tuple[str, str], ...]) -> None:
        for old, _ in renames:
            if old not in self._keys:
                raise UnknownKey(f"no key named {old!r}")
        for old, new in renames:
            entry = self._keys.pop(old)
            self._macs.pop(old, None)
            self._put(Entry(new, entry.kind, entry.algorithm, entry.kcv, entry.key))

    async def drop_keys(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._keys.pop(name, None)
            self._macs.pop(name, None)

    async def diagnostics(self) -> Diagnostics:
        return Diagnostics(module="software", ok=True, keys=len(self._keys))
