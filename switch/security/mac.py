"""Message authentication codes and key check values.

- ISO/IEC 9797-1 MAC algorithm 3 (the "retail MAC", ANSI X9.19): single-DES
  CBC with the left half of a two-key TDES key, the last block decrypted with
  the right half and encrypted again with the left. Padding method 1 (zeros)
  for terminal messages (spec section 8), method 2 (0x80 then zeros) for the
  city-card TAC (spec 4.1). One implementation serves both.
- AES-CMAC (RFC 4493), truncated to 8 bytes for terminal messages.
- Key check values: TDES, the first 3 bytes of E(K, zeros); AES, the first 3
  bytes of CMAC(K, 16 zero bytes) (spec section 8).
"""
from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from .ciphers import ZERO8, check_aes_key, check_tdes_key, des_decrypt, des_encrypt, tdes_cbc_encrypt, tdes_encrypt

__all__ = [
    "pad_method1",
    "pad_method2",
    "retail_mac",
    "aes_cmac",
    "terminal_mac",
    "kcv",
    "same_mac",
]

_BLOCK = 8


def pad_method1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zeros up to a multiple of 8 (none if aligned; one block if empty)."""
    data = bytes(data)
    if not data:
        return ZERO8
    return data + b"\x00" * (-len(data) % _BLOCK)


def pad_method2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80, then zeros up to a multiple of 8."""
    padded = bytes(data) + b"\x80"
    return padded + b"\x00" * (-len(padded) % _BLOCK)


_PADDING = {1: pad_method1, 2: pad_method2}


def retail_mac(key16: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with the given padding method; the full 8 bytes."""
    if not isinstance(key16, (bytes, bytearray)) or len(key16) != 16:
        raise ValueError(f"MAC key must be 16 bytes (two-key TDES), got {len(key16)} bytes")
    try:
        pad = _PADDING[padding]
    except KeyError:
        raise ValueError(f"padding method must be 1 or 2, got {padding!r}") from None
    left, right = bytes(key16[:8]), bytes(key16[8:])
    h = tdes_cbc_encrypt(left * 3, pad(data))[-_BLOCK:]  # single-DES CBC-MAC
    return des_encrypt(left, des_decrypt(right, h))  # output transformation 3


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493), all 16 bytes."""
    check_aes_key(key)
    c = cmac.CMAC(algorithms.AES(bytes(key)))
    c.update(bytes(data))
    return c.finalize()


def terminal_mac(key: bytes, data: bytes, algorithm: str) -> bytes:
    """The 8-byte MAC of spec section 8: ``"tdes"`` retail MAC (padding 1), ``"aes"`` CMAC truncated."""
    if algorithm == "tdes":
        return retail_mac(key, data, padding=1)
    if algorithm == "aes":
        return aes_cmac(key, data)[:8]
    raise ValueError(f"MAC algorithm must be 'tdes' or 'aes', got {algorithm!r}")


def kcv(key: bytes, algorithm: str) -> str:
    """Key check value, 6 upper-case hex digits (spec section 8)."""
    if algorithm == "tdes":
        check_tdes_key(key)
        return tdes_encrypt(key, ZERO8)[:3].hex().upper()
    if algorithm == "aes":
        return aes_cmac(key, bytes(16))[:3].hex().upper()
    raise ValueError(f"key algorithm must be 'tdes' or 'aes', got {algorithm!r}")


def same_mac(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two MACs."""
    return hmac.compare_digest(bytes(expected), bytes(received))
