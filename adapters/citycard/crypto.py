"""City-card key derivation, retail MAC, TAC, MAC1 and MAC2 (terminal interface spec 4.1).

Pure functions over bytes and strings. The retail MAC and the block
operations are the ones terminal security uses (:mod:`switch.security.mac`),
here with padding method 2 as spec 4.1 says.
"""
from __future__ import annotations

import hmac

from switch.security import mac as _mac
from switch.security.ciphers import tdes_encrypt, xor

pad_method2 = _mac.pad_method2

__all__ = [
    "derive_dk",
    "pad_method2",
    "retail_mac",
    "mac_input",
    "tac",
    "mac1",
    "mac2",
    "verify",
]


def _check_key16(key16: bytes, what: str) -> None:
    if not isinstance(key16, (bytes, bytearray)) or len(key16) != 16:
        raise ValueError(f"{what} must be 16 bytes (two-key TDES), got {len(key16)!r} bytes")


def derive_dk(mk: bytes, card_number: str) -> bytes:
    """The card's key DK (16 bytes) from the issuer master key MK (spec 4.1).

    X is the packed BCD of the rightmost 16 digits of the card number, left
    padded with zeros; DK = TDES(MK, X) || TDES(MK, X xor FF..FF).
    """
    _check_key16(mk, "MK")
    if not card_number or not card_number.isdigit() or not card_number.isascii():
        raise ValueError(f"card number must be digits, got {len(card_number)} characters")
    x = bytes.fromhex(card_number[-16:].rjust(16, "0"))
    return tdes_encrypt(mk, x) + tdes_encrypt(mk, xor(x, b"\xff" * 8))


def retail_mac(key16: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 2; the full 8-byte MAC."""
    _check_key16(key16, "MAC key")
    return _mac.retail_mac(key16, data, padding=2)


def mac_input(
    card_number: str, counter: str, amount12: str, serial10: str, terminal_id8: str
) -> bytes:
    """The ASCII bytes the TAC covers: card + counter(5) + amount(12) + serial(10) + TID(8)."""
    for name, value, size in (
        ("counter", counter, 5),
        ("amount", amount12, 12),
        ("serial", serial10, 10),
    ):
        if len(value) != size or not value.isdigit() or not value.isascii():
            raise ValueError(f"{name} must be {size} digits, got {value!r}")
    if len(terminal_id8) != 8 or not terminal_id8.isascii():
        raise ValueError(f"terminal ID must be 8 ASCII characters, got {terminal_id8!r}")
    return (card_number + counter + amount12 + serial10 + terminal_id8).encode("ascii")


def _code(dk: bytes, data: bytes) -> str:
    return retail_mac(dk, data)[:4].hex().upper()


def tac(
    dk: bytes, card_number: str, counter: str, amount12: str, serial10: str, terminal_id8: str
) -> str:
    """The TAC of a debit: 8 upper-case hex digits (spec 4.1)."""
    return _code(dk, mac_input(card_number, counter, amount12, serial10, terminal_id8))


def mac1(
    dk: bytes, card_number: str, counter: str, amount12: str, serial10: str, terminal_id8: str
) -> str:
    """MAC1 of a top-up (computed by the card): the TAC input followed by ``LOAD``."""
    data = mac_input(card_number, counter, amount12, serial10, terminal_id8) + b"LOAD"
    return _code(dk, data)


def mac2(
    dk: bytes, card_number: str, counter: str, amount12: str, serial10: str, terminal_id8: str
) -> str:
    """MAC2 of a top-up (computed by the centre): the TAC input followed by ``OK``."""
    data = mac_input(card_number, counter, amount12, serial10, terminal_id8) + b"OK"
    return _code(dk, data)


def verify(expected: str, received: str) -> bool:
    """Constant-time comparison of two hex codes, case-insensitive."""
    if not received.isascii():
        return False
    return hmac.compare_digest(expected.upper().encode("ascii"), received.upper().encode("ascii"))
