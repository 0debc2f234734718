"""Key kinds, what each may be used for, and keys carried under a key-encrypting key.

A key crosses a boundary only encrypted under a KEK (a TMK for a terminal's
session keys, a ZMK for an acquirer's zone keys):

- TDES keys under a TDES KEK: TDES-ECB, block by block (the X9.17 form
  payShield calls scheme ``X``; what POS terminals expect for TMK exchange);
- AES keys under an AES KEK: AES key wrap, RFC 3394 (24 bytes for an AES-128 key).
"""
from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import keywrap

from .ciphers import check_aes_key, check_tdes_key, tdes_decrypt, tdes_encrypt

__all__ = [
    "Algorithm",
    "Kind",
    "KINDS",
    "USAGE",
    "check_key",
    "wrap",
    "unwrap",
    "session_key_names",
    "pending_key_names",
    "previous_key_names",
]

Algorithm = Literal["tdes", "aes"]
Kind = Literal["tmk", "tak", "tpk", "zpk", "zmk", "bdk", "kek", "zak"]
# zak: a zone MAC key, shared with one acquirer, for the MAC of host-link messages.
KINDS: tuple[str, ...] = ("tmk", "tak", "tpk", "zpk", "zmk", "bdk", "kek", "zak")

# Which kinds of key each operation accepts: a key is never used for another purpose.
USAGE: dict[str, frozenset[str]] = {
    "mac": frozenset({"tak", "zak"}),
    "pin-source": frozenset({"tpk", "zpk"}),
    "pin-destination": frozenset({"zpk"}),
    "session-kek": frozenset({"tmk"}),
    "import-kek": frozenset({"zmk", "tmk", "kek"}),
    "dukpt": frozenset({"bdk"}),
}


def check_key(key: bytes, algorithm: str, what: str = "key") -> None:
    if algorithm == "tdes":
        check_tdes_key(key, what)
    elif algorithm == "aes":
        check_aes_key(key, what)
    else:
        raise ValueError(f"{what}: algorithm must be 'tdes' or 'aes', got {algorithm!r}")


def wrap(kek: bytes, kek_algorithm: str, key: bytes, algorithm: str) -> bytes:
    """``key`` encrypted under ``kek`` (same algorithm family only)."""
    check_key(key, algorithm)
    if kek_algorithm != algorithm:
        raise ValueError(f"a {algorithm} key is not carried under a {kek_algorithm} KEK")
    if algorithm == "tdes":
        return tdes_encrypt(kek, key)
    return keywrap.aes_key_wrap(kek, key)


def unwrap(kek: bytes, kek_algorithm: str, wrapped: bytes, algorithm: str) -> bytes:
    if kek_algorithm != algorithm:
        raise ValueError(f"a {algorithm} key is not carried under a {kek_algorithm} KEK")
    if algorithm == "tdes":
        if len(wrapped) not in (16, 24):
            raise ValueError(f"a TDES key under a KEK is 16 or 24 bytes, got {len(wrapped)}")
        return tdes_decrypt(kek, wrapped)
    try:
        return keywrap.aes_key_unwrap(kek, wrapped)
    except (keywrap.InvalidUnwrap, ValueError):
        raise ValueError("AES key wrap integrity check failed (wrong KEK or damaged key)") from None


def session_key_names(terminal_id: str) -> tuple[str, str]:
    """The names under which a terminal's current session keys (TAK, TPK) are kept."""
    return f"{terminal_id}.tak", f"{terminal_id}.tpk"


def pending_key_names(terminal_id: str) -> tuple[str, str]:
    """The names of a terminal's *pending* session keys: given by 0800/101, not yet used.

    They become the current keys (:func:`session_key_names`) when a request
    of the terminal verifies under the pending TAK (spec 8 as this project
    applies it: a stranger's 0800/101 cannot take the real terminal's keys away).
    """
    return f"{terminal_id}.tak.pending", f"{terminal_id}.tpk.pending"


def previous_key_names(terminal_id: str) -> tuple[str, str]:
    """The names of the session keys a terminal had before its pending ones became current.

    Kept by the module of one process only, never journaled, and never tried
    on a request: the MAC of the answer to a request that verified under them
    before the switch-over is made under them (spec 8: the same key).
    """
    return f"{terminal_id}.tak.previous", f"{terminal_id}.tpk.previous"
