"""DUKPT: derived unique key per transaction, host side and terminal side.

- TDES DUKPT, ANSI X9.24-1:2009 (10-byte KSN, 21-bit counter): the initial
  key (IPEK) from the BDK and the KSN, the future key walked from the IPEK one
  counter bit at a time (the non-reversible key generation process), and the
  PIN / MAC / data variants.
- AES DUKPT, ANSI X9.24-3:2017 (12-byte KSN: 8-byte initial key ID and a
  32-bit counter), AES-128 keys: initial key, derivation keys, working keys
  by usage.

A counter a terminal could never have used is refused: zero, more than 10
one-bits (TDES; "counter exhaustion" — the terminal skips such values and
stops at 2^21) or more than 16 one-bits (AES). :class:`KsnError` says which.
"""
from __future__ import annotations

from .ciphers import aes_encrypt, des_encrypt, tdes_encrypt, xor

__all__ = [
    "KsnError",
    "parse_ksn",
    "tdes_ipek",
    "tdes_transaction_key",
    "tdes_working_key",
    "aes_initial_key",
    "aes_transaction_key",
    "aes_working_key",
    "working_key",
    "check_ksn",
    "ksn_device",
    "cleared_counter",
    "device_problem",
]


class KsnError(ValueError):
    """The key serial number is malformed or names a counter that cannot be used."""


# -- TDES (X9.24-1) ---------------------------------------------------------

_KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
_TDES_COUNTER_BITS = 21
_TDES_COUNTER_MASK = (1 << _TDES_COUNTER_BITS) - 1

# X9.24-1:2009 variants XORed into the future key.
_TDES_VARIANTS = {
    "pin": bytes.fromhex("00000000000000FF00000000000000FF"),
    "mac": bytes.fromhex("000000000000FF00000000000000FF00"),
    "mac-response": bytes.fromhex("00000000FF00000000000000FF000000"),
    "data": bytes.fromhex("0000000000FF00000000000000FF0000"),
}


def parse_ksn(ksn: str) -> bytes:
    """A KSN as travelled in field 48 tag KS: 20 hex digits (TDES) or 24 (AES)."""
    if len(ksn) not in (20, 24) or not ksn.isascii():
        raise KsnError(f"KSN must be 20 (TDES) or 24 (AES) hex digits, got {len(ksn)} characters")
    try:
        raw = bytes.fromhex(ksn)
    except ValueError:
        raise KsnError("KSN must be hex digits") from None
    if 2 * len(raw) != len(ksn):  # fromhex skips spaces: "FFFF 9876..." is no 10-byte KSN
        raise KsnError("KSN must be hex digits")
    return raw


def _tdes_counter(ksn: bytes) -> int:
    if len(ksn) != 10:
        raise KsnError(f"TDES KSN must be 10 bytes, got {len(ksn)}")
    counter = int.from_bytes(ksn[-3:], "big") & _TDES_COUNTER_MASK
    if counter == 0:
        raise KsnError("KSN counter is zero (no transaction uses it)")
    if bin(counter).count("1") > 10:
        raise KsnError("KSN counter has more than 10 one-bits (X9.24-1: never used by a terminal)")
    return counter


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """Initial PIN encryption key: E(BDK, KSN') || E(BDK xor C0C0.., KSN'), counter bits cleared."""
    if len(ksn) != 10:
        raise KsnError(f"TDES KSN must be 10 bytes, got {len(ksn)}")
    # The counter is the low 21 bits of the 80-bit KSN; its top 5 bits are the low bits of byte 7.
    reg = int.from_bytes(ksn[:8], "big") & ~0x1F & 0xFFFFFFFFFFFFFFFF
    data = reg.to_bytes(8, "big")
    return tdes_encrypt(bdk, data) + tdes_encrypt(xor(bytes(bdk), _KEY_MASK), data)


def _nrkgp(key: bytes, data: bytes) -> bytes:
    """X9.24-1 non-reversible key generation process (one step of the future-key walk)."""
    def half(k: bytes) -> bytes:
        return xor(des_encrypt(k[:8], xor(data, k[8:])), k[8:])

    return half(xor(key, _KEY_MASK)) + half(key)


def tdes_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The future key for the KSN's counter, walked from the IPEK (no variant applied)."""
    counter = _tdes_counter(ksn)
    reg = int.from_bytes(ksn[2:], "big") & ~_TDES_COUNTER_MASK
    key = bytes(ipek)
    bit = 1 << (_TDES_COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            reg |= bit
            key = _nrkgp(key, reg.to_bytes(8, "big"))
        bit >>= 1
    return key


def tdes_working_key(bdk: bytes, ksn: bytes, usage: str) -> bytes:
    """The key of one usage (``pin``, ``mac``, ``mac-response``, ``data``) for a transaction."""
    try:
        variant = _TDES_VARIANTS[usage]
    except KeyError:
        raise ValueError(f"TDES DUKPT usage must be one of {sorted(_TDES_VARIANTS)}, got {usage!r}") from None
    key = xor(tdes_transaction_key(tdes_ipek(bdk, ksn), ksn), variant)
    if usage == "data":  # X9.24-1:2009: the data variant is encrypted with itself, half by half
        key = tdes_encrypt(key, key[:8]) + tdes_encrypt(key, key[8:])
    return key


# -- AES (X9.24-3) ----------------------------------------------------------

_AES128 = 0x0002
_AES_USAGES = {
    "kek": 0x0002,
    "pin": 0x1000,
    "mac-generate": 0x2000,
    "mac-verify": 0x2001,
    "mac": 0x2002,  # both ways
    "data-encrypt": 0x3000,
    "data-decrypt": 0x3001,
    "data": 0x3002,  # both ways
}
_KEY_DERIVATION = 0x8000
_INITIAL_KEY = 0x8001


def _aes_derive(key: bytes, usage: int, tail8: bytes) -> bytes:
    """X9.24-3 derivation data (version 1, block 1, usage, AES-128, 128 bits, 8 bytes) under ``key``."""
    data = bytes([1, 1]) + usage.to_bytes(2, "big") + _AES128.to_bytes(2, "big") + (128).to_bytes(2, "big") + tail8
    return aes_encrypt(key, data)


def _aes_counter(ksn: bytes) -> int:
    if len(ksn) != 12:
        raise KsnError(f"AES KSN must be 12 bytes, got {len(ksn)}")
    counter = int.from_bytes(ksn[8:], "big")
    if counter == 0:
        raise KsnError("KSN counter is zero (no transaction uses it)")
    if bin(counter).count("1") > 16:
        raise KsnError("KSN counter has more than 16 one-bits (X9.24-3: never used by a terminal)")
    return counter


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    if len(bdk) != 16 or len(initial_key_id) != 8:
        raise ValueError("AES-128 DUKPT needs a 16-byte BDK and an 8-byte initial key ID")
    return _aes_derive(bdk, _INITIAL_KEY, bytes(initial_key_id))


def aes_transaction_key(initial_key: bytes, ksn: bytes) -> bytes:
    """The derivation key for the KSN's counter, walked from the initial key one bit at a time."""
    counter = _aes_counter(ksn)
    device = ksn[4:8]
    key, working = bytes(initial_key), 0
    bit = 1 << 31
    while bit:
        if counter & bit:
            working |= bit
            key = _aes_derive(key, _KEY_DERIVATION, device + working.to_bytes(4, "big"))
        bit >>= 1
    return key


def aes_working_key(bdk: bytes, ksn: bytes, usage: str) -> bytes:
    """An AES-128 working key (``pin``, ``mac``, ``mac-generate``, ``mac-verify``, ``data``, ...)."""
    try:
        code = _AES_USAGES[usage]
    except KeyError:
        raise ValueError(f"AES DUKPT usage must be one of {sorted(_AES_USAGES)}, got {usage!r}") from None
    txn = aes_transaction_key(aes_initial_key(bdk, ksn[:8]), ksn)
    return _aes_derive(txn, code, ksn[4:12])


def working_key(bdk: bytes, ksn_hex: str, usage: str) -> tuple[bytes, str]:
    """The working key and its algorithm (``"tdes"`` / ``"aes"``) for a KSN from field 48 tag KS.

    ``usage`` is ``pin`` or ``mac``: the switch checks a request's MAC and MACs its answer
    under the ``mac`` key, as the terminal spec's section 8 says ("a MAC under the same
    key").  ``mac-response``, X9.24-1's variant for answers, is here for completeness:
    TDES applies it, AES has one MAC key both ways (X9.24-3 key usage 0x2002).
    """
    ksn = parse_ksn(ksn_hex)
    if len(ksn) == 10:
        return tdes_working_key(bdk, ksn, usage), "tdes"
    aes_usage = {"mac-response": "mac"}.get(usage, usage)
    return aes_working_key(bdk, ksn, aes_usage), "aes"


def check_ksn(ksn_hex: str) -> None:
    """Raise :class:`KsnError` unless the KSN is well formed and its counter usable (both DUKPT kinds)."""
    ksn = parse_ksn(ksn_hex)
    if len(ksn) == 10:
        _tdes_counter(ksn)
    else:
        _aes_counter(ksn)


def ksn_device(ksn_hex: str) -> tuple[str, int]:
    """(the device: the KSN with its counter bits cleared, as hex; the counter) of a usable KSN.

    A device's counter only goes up (X9.24-1 and -3): the switch refuses a
    new request whose counter is not above the highest it has seen for the
    device (a replay). KsnError as :func:`check_ksn` says.
    """
    ksn = parse_ksn(ksn_hex)
    counter = _tdes_counter(ksn) if len(ksn) == 10 else _aes_counter(ksn)
    return _cleared(ksn), counter


def cleared_counter(ksn_hex: str) -> str:
    """The KSN with its counter bits cleared, as upper-case hex: its device (the initial KSN).

    Unlike :func:`ksn_device`, the counter is not checked: a device's initial
    KSN has counter zero.  KsnError for what :func:`parse_ksn` refuses.
    """
    return _cleared(parse_ksn(ksn_hex))


def _cleared(ksn: bytes) -> str:
    if len(ksn) == 10:
        return "%020X" % (int.from_bytes(ksn, "big") & ~_TDES_COUNTER_MASK)
    return ksn[:8].hex().upper() + "00000000"


def device_problem(text: str) -> str | None:
    """Why ``text`` does not name a DUKPT device, or None.

    A device is named by its initial KSN: the KSN with its counter bits zero
    (20 hex digits TDES, 24 AES), as key injection records it and as
    :func:`ksn_device` gives it for any of the device's KSNs.
    """
    try:
        device = cleared_counter(text)
    except KsnError as e:
        return f"not a device's initial KSN: {e}"
    if device != text.upper():
        return f"counter bits set: a device is its initial KSN, counter bits zero ({device})"
    return None
