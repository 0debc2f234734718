"""Block cipher operations the payment standards are written in terms of.

TDES keys are 16 bytes (two-key, K1|K2|K1) or 24 bytes; single DES is only
used inside the retail MAC, as TripleDES keyed K|K|K so that only 24-byte
keys reach the library (its 8- and 16-byte forms are deprecated). AES keys
are 16, 24 or 32 bytes.
"""
from __future__ import annotations

try:  # cryptography >= 43 keeps TripleDES under "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "TripleDES",
    "xor",
    "tdes_key24",
    "des_encrypt",
    "des_decrypt",
    "tdes_encrypt",
    "tdes_decrypt",
    "tdes_cbc_encrypt",
    "aes_encrypt",
    "aes_decrypt",
    "check_tdes_key",
    "check_aes_key",
]

ZERO8 = bytes(8)


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError(f"xor of unequal lengths {len(a)} and {len(b)}")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def check_tdes_key(key: bytes, what: str = "TDES key") -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) not in (16, 24):
        raise ValueError(f"{what} must be 16 or 24 bytes, got {len(key)} bytes")


def check_aes_key(key: bytes, what: str = "AES key") -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) not in (16, 24, 32):
        raise ValueError(f"{what} must be 16, 24 or 32 bytes, got {len(key)} bytes")


def tdes_key24(key: bytes) -> bytes:
    """A 16-byte two-key TDES key as the 24-byte K1|K2|K1 the library wants."""
    check_tdes_key(key)
    return bytes(key) + bytes(key[:8]) if len(key) == 16 else bytes(key)


def _ecb(algorithm, data: bytes, decrypt: bool) -> bytes:
    cipher = Cipher(algorithm, modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def des_encrypt(key8: bytes, data: bytes) -> bytes:
    return _ecb(TripleDES(bytes(key8) * 3), data, False)


def des_decrypt(key8: bytes, data: bytes) -> bytes:
    return _ecb(TripleDES(bytes(key8) * 3), data, True)


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    return _ecb(TripleDES(tdes_key24(key)), data, False)


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    return _ecb(TripleDES(tdes_key24(key)), data, True)


def tdes_cbc_encrypt(key24: bytes, data: bytes, iv: bytes = ZERO8) -> bytes:
    ctx = Cipher(TripleDES(key24), modes.CBC(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def aes_encrypt(key: bytes, data: bytes) -> bytes:
    check_aes_key(key)
    return _ecb(algorithms.AES(bytes(key)), data, False)


def aes_decrypt(key: bytes, data: bytes) -> bytes:
    check_aes_key(key)
    return _ecb(algorithms.AES(bytes(key)), data, True)
