"""City-card key derivation, retail MAC, TAC, MAC1 and MAC2 (terminal interface spec 4.1).

Pure functions over bytes and strings; DES comes from ``cryptography``.
Single DES is TripleDES keyed K|K|K and two-key TDES is K1|K2|K1, so that only
24-byte keys reach the library (its 8- and 16-byte forms are deprecated).
"""
from __future__ import annotations

import hmac

try:  # cryptography >= 43 keeps TripleDES under "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

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

_BLOCK = 8


def _ecb_encrypt(key24: bytes, block: bytes) -> bytes:
    encryptor = Cipher(TripleDES(key24), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _ecb_decrypt(key24: bytes, block: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key24), modes.ECB()).decryptor()
    return decryptor.update(block) + decryptor.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


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
    key24 = bytes(mk) + bytes(mk[:8])
    return _ecb_encrypt(key24, x) + _ecb_encrypt(key24, _xor(x, b"\xff" * _BLOCK))


def pad_method2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80, then zeros up to a multiple of 8."""
    padded = bytes(data) + b"\x80"
    return padded + b"\x00" * (-len(padded) % _BLOCK)


def retail_mac(key16: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 2; the full 8-byte MAC.

    Single-DES CBC (zero IV) with the left half of the key over all blocks, then
    the last output decrypted with the right half and encrypted with the left.
    """
    _check_key16(key16, "MAC key")
    left, right = bytes(key16[:8]), bytes(key16[8:])
    padded = pad_method2(data)
    # CBC-MAC with single DES over every block (K|K|K is single DES).
    cbc = Cipher(TripleDES(left * 3), modes.CBC(b"\x00" * _BLOCK)).encryptor()
    h = (cbc.update(padded) + cbc.finalize())[-_BLOCK:]
    # Output transformation 3: D(K') then E(K) of the last block.
    return _ecb_encrypt(left * 3, _ecb_decrypt(right * 3, h))


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
