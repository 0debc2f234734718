"""The software module's key store: one file, every key sealed under a local master key.

The file is JSON (msgspec); each key is sealed with AES-256-GCM under the
master key, with its name, kind, algorithm and check value as associated
data, so a key cannot be renamed or re-purposed by editing the file. A
``master_check`` entry lets a wrong master key be told apart from a damaged
key. On load every key's check value is recomputed and compared.

The master key (32 bytes, 64 hex digits) comes from a file or an
environment variable, never from the configuration; no error quotes it.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from switch.secret_refs import shown

from .keys import KINDS, check_key
from .mac import kcv as check_value

__all__ = ["KeyStoreError", "Entry", "read_master_key", "new_master_key", "load", "create", "add", "seal_key", "open_key"]

FORMAT = "payswitch-keystore/1"
_CHECK_TEXT = b"payswitch key store master check"


class KeyStoreError(ValueError):
    """The key store (or its master key) is unusable; the message names the file and the key."""


class Entry(msgspec.Struct, frozen=True):
    """A clear key in memory, inside the module only."""

    name: str
    kind: str
    algorithm: str
    kcv: str
    key: bytes

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.kind}, {self.algorithm}, kcv={self.kcv})"


class _Sealed(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: str
    algorithm: str
    kcv: str
    sealed: str  # hex: 12-byte nonce + AES-GCM ciphertext and tag


class _File(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    master_check: str
    keys: list[_Sealed] = []


def read_master_key(file: str | os.PathLike | None = None, env: str | None = None) -> bytes:
    """The master key from a file (64 hex digits) or an environment variable, exactly one of them."""
    if (file is None) == (env is None):
        raise KeyStoreError("the master key comes from exactly one of a file or an environment variable")
    if file is not None:
        try:
            text = Path(file).read_text().strip()
        except OSError as e:
            raise KeyStoreError(f"master key file {shown(file, 'file')}: {e.strerror}") from None
        where = f"master key file {shown(file, 'file')}"
    else:
        text = os.environ.get(env, "").strip()
        if not text:
            raise KeyStoreError(f"master key variable {shown(env, 'env')} is not set")
        where = f"master key variable {shown(env, 'env')}"
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyStoreError(f"{where}: expected 64 hex digits") from None
    if len(key) != 32:
        raise KeyStoreError(f"{where}: expected 64 hex digits (32 bytes), got {len(key)} bytes")
    return key


def new_master_key() -> str:
    return secrets.token_hex(32).upper()


def _aad(name: str, kind: str, algorithm: str, kcv: str) -> bytes:
    return f"{name}|{kind}|{algorithm}|{kcv}".encode()


def _seal(master: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = secrets.token_bytes(12)
    return (nonce + AESGCM(master).encrypt(nonce, plaintext, aad)).hex()


def _open(master: bytes, sealed_hex: str, aad: bytes) -> bytes:
    raw = bytes.fromhex(sealed_hex)
    return AESGCM(master).decrypt(raw[:12], raw[12:], aad)


def _read(path: Path) -> _File:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_File)
    except OSError as e:
        raise KeyStoreError(f"key store {path}: {e.strerror}") from None
    except msgspec.ValidationError as e:
        raise KeyStoreError(f"key store {path}: {e}") from None
    except msgspec.DecodeError:
        raise KeyStoreError(f"key store {path}: not a key store file (invalid JSON)") from None


def _write(path: Path, data: _File) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(data)) + b"\n")
    os.replace(tmp, path)


def load(path: str | os.PathLike, master: bytes) -> dict[str, Entry]:
    """Every key of the store, opened and its check value verified."""
    path = Path(path)
    data = _read(path)
    if data.format != FORMAT:
        raise KeyStoreError(f"key store {path}: format {data.format!r}, expected {FORMAT!r}")
    try:
        if _open(master, data.master_check, b"") != _CHECK_TEXT:
            raise InvalidTag
    except (InvalidTag, ValueError):
        raise KeyStoreError(f"key store {path}: the master key does not open this store (wrong master key?)") from None
    keys: dict[str, Entry] = {}
    for i, s in enumerate(data.keys):
        where = f"key store {path}: key {s.name!r} ($.keys[{i}])"
        if s.name in keys:
            raise KeyStoreError(f"{where}: duplicate name")
        if s.kind not in KINDS:
            raise KeyStoreError(f"{where}: kind {s.kind!r} is not one of {', '.join(KINDS)}")
        try:
            key = _open(master, s.sealed, _aad(s.name, s.kind, s.algorithm, s.kcv))
        except (InvalidTag, ValueError):
            raise KeyStoreError(f"{where}: does not open under the master key (damaged or edited)") from None
        try:
            check_key(key, s.algorithm, "key")
        except ValueError as e:
            raise KeyStoreError(f"{where}: {e}") from None
        if check_value(key, s.algorithm) != s.kcv.upper():
            raise KeyStoreError(f"{where}: check value mismatch")
        keys[s.name] = Entry(s.name, s.kind, s.algorithm, s.kcv.upper(), key)
    return keys


def create(path: str | os.PathLike, master: bytes) -> None:
    path = Path(path)
    if path.exists():
        raise KeyStoreError(f"key store {path}: already exists")
    _write(path, _File(format=FORMAT, master_check=_seal(master, _CHECK_TEXT, b"")))


def add(path: str | os.PathLike, master: bytes, name: str, kind: str, algorithm: str, key: bytes, kcv: str) -> Entry:
    """Add (or replace) a clear key, refused unless ``kcv`` is its check value."""
    path = Path(path)
    load(path, master)  # the store opens and every key in it is sound before we touch it
    if kind not in KINDS:
        raise KeyStoreError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if not name or not name.isprintable() or "|" in name:
        raise KeyStoreError("a key name is printable text without '|'")
    try:
        check_key(key, algorithm, f"key {name!r}")
    except ValueError as e:
        raise KeyStoreError(str(e)) from None
    actual = check_value(key, algorithm)
    if actual != kcv.strip().upper():
        raise KeyStoreError(f"key {name!r}: check value mismatch (the key entered gives {actual})")
    data = _read(path)
    sealed = _Sealed(name, kind, algorithm, actual, _seal(master, bytes(key), _aad(name, kind, algorithm, actual)))
    data.keys = [s for s in data.keys if s.name != name] + [sealed]
    _write(path, data)
    return Entry(name, kind, algorithm, actual, bytes(key))


def seal_key(master: bytes, context: str, entry: Entry) -> str:
    """``entry``'s key sealed under ``master`` (hex), bound to ``context`` and to its kind, algorithm and check value.

    For keys kept outside the key store file (the terminals' session keys in
    the journal, :mod:`switch.journal.terminal_keys`): ``context`` names what
    the key belongs to (a terminal ID), so a sealed key copied to another
    terminal's row, or given another kind, no longer opens.
    """
    return _seal(master, bytes(entry.key), _aad(context, entry.kind, entry.algorithm, entry.kcv))


def open_key(master: bytes, context: str, name: str, kind: str, algorithm: str, kcv: str, sealed: str) -> Entry:
    """The key :func:`seal_key` sealed, under the name ``name``; KeyStoreError (naming ``context``) if it does not open."""
    where = f"sealed {kind} of {context}"
    if kind not in KINDS:
        raise KeyStoreError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        key = _open(master, sealed, _aad(context, kind, algorithm, kcv))
        check_key(key, algorithm, "key")
    except (InvalidTag, ValueError):
        raise KeyStoreError(f"{where}: does not open under the master key (another master key, or damaged)") from None
    if check_value(key, algorithm) != kcv.upper():
        raise KeyStoreError(f"{where}: check value mismatch")
    return Entry(name, kind, algorithm, kcv.upper(), key)
