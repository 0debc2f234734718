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

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .ciphers import ZERO8, TripleDES, check_aes_key, check_tdes_key, tdes_encrypt, tdes_key24, xor

__all__ = [
    "pad_method1",
    "pad_method2",
    "RetailMac",
    "retail_mac",
    "TerminalMac",
    "aes_cmac",
    "terminal_mac",
    "kcv",
    "same_mac",
    "HOST_MAC_KEY_ALGORITHM",
    "host_mac_key_problem",
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


class RetailMac:
    """ISO/IEC 9797-1 MAC algorithm 3 under one key, its cipher contexts made once.

    Blocks 1..n-1 go through single-DES CBC with the left key half; the last
    block, chained, through TDES-EDE with (left, right, left), which is the
    CBC step followed by output transformation 3: E_L(D_R(E_L(x_n ^ h))).
    The CBC context is kept between messages: its chaining value is XORed
    into the next message's first block, which restarts the chain at a zero
    IV. Not for use by two threads at once.
    """

    __slots__ = ("_cbc", "_chain", "_final")

    def __init__(self, key16: bytes):
        if not isinstance(key16, (bytes, bytearray)) or len(key16) != 16:
            raise ValueError(f"MAC key must be 16 bytes (two-key TDES), got {len(key16)} bytes")
        left = bytes(key16[:8])
        self._cbc = Cipher(TripleDES(left * 3), modes.CBC(ZERO8)).encryptor()  # K|K|K: single DES
        self._chain = ZERO8
        self._final = Cipher(TripleDES(tdes_key24(bytes(key16))), modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "RetailMac(<key>)"

    def mac(self, data: bytes, padding: int = 1) -> bytes:
        try:
            padded = _PADDING[padding](data)
        except KeyError:
            raise ValueError(f"padding method must be 1 or 2, got {padding!r}") from None
        h = ZERO8
        if len(padded) > _BLOCK:
            out = self._cbc.update(xor(padded[:_BLOCK], self._chain) + padded[_BLOCK:-_BLOCK])
            h = self._chain = out[-_BLOCK:]
        return self._final.update(xor(padded[-_BLOCK:], h))


def retail_mac(key16: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with the given padding method; the full 8 bytes."""
    return RetailMac(key16).mac(data, padding)


class TerminalMac:
    """The 8-byte MAC of spec section 8 under one key, ready for many messages."""

    __slots__ = ("_tdes", "_cmac")

    def __init__(self, key: bytes, algorithm: str):
        self._tdes = self._cmac = None
        if algorithm == "tdes":
            self._tdes = RetailMac(key)
        elif algorithm == "aes":
            check_aes_key(key)
            self._cmac = cmac.CMAC(algorithms.AES(bytes(key)))
        else:
            raise ValueError(f"MAC algorithm must be 'tdes' or 'aes', got {algorithm!r}")

    def __repr__(self) -> str:
        return "TerminalMac(<key>)"

    def __call__(self, data: bytes) -> bytes:
        if self._tdes is not None:
            return self._tdes.mac(data, 1)
        c = self._cmac.copy()
        c.update(bytes(data))
        return c.finalize()[:8]


# Host-link MAC algorithms (an acquirer's ``mac`` setting) -> the algorithm of
# the zone MAC key they need: the same two MACs as terminal messages.
HOST_MAC_KEY_ALGORITHM = {"tdes-retail": "tdes", "aes-cmac": "aes"}


def host_mac_key_problem(mac: str, key) -> str | None:
    """Why a key (anything with ``kind`` and ``algorithm``; None when absent) cannot make ``mac`` MACs."""
    if key is None:
        return "no such key in the security module"
    if key.kind != "zak":
        return f"a {key.kind} key, not a zone MAC key (zak)"
    if HOST_MAC_KEY_ALGORITHM.get(mac) != key.algorithm:
        return f"a {key.algorithm} key cannot make {mac} MACs"
    return None


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
