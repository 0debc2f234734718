"""The terminal's side of spec section 8, for ``payswitch send`` and tests.

A real terminal does this in its secure PIN pad; here it is done in clear
with test keys, so that every path of the switch can be tried by hand.

- :func:`mac_data` / :func:`sign` / :func:`verify`: the MAC of a terminal-87
  message, over the bytes from the MTI up to (not including) field 64 or 128,
  with that field's bitmap bit set.
- :func:`pin_block`: a format 0 (TDES) or format 4 (AES) block under a TPK.
- :func:`dukpt_keys`: the MAC and PIN keys of a DUKPT transaction from BDK + KSN.
- :func:`session_keys`: the TAK and TPK out of an 0810's field 48 (TA, TP under
  the TMK, checked against CA, CP).
"""
from __future__ import annotations

from . import dukpt, pinblock
from .keys import unwrap
from .mac import kcv, same_mac, terminal_mac

__all__ = ["MacFieldError", "mac_data", "sign", "verify", "encode_signed", "pin_block", "dukpt_keys", "session_keys"]

_MAC_LEN = 8


class MacFieldError(ValueError):
    """The message has no MAC field where spec 8 puts it (bit 64 / 128 set, last 8 bytes)."""


def mac_data(message: bytes) -> bytes:
    """The bytes a terminal-87 message's MAC covers: MTI .. the byte before the MAC field.

    ``message`` starts at the MTI (no length prefix, no TPDU) and ends with
    the 8-byte MAC field (its content is not looked at). Field 64 carries the
    MAC when only a primary bitmap is present, field 128 when a secondary one is.
    """
    if len(message) < 4 + 8 + _MAC_LEN:
        raise MacFieldError(f"message of {len(message)} bytes is too short to carry a MAC")
    primary = int.from_bytes(message[4:12], "big")
    if primary >> 63:  # bit 1: secondary bitmap present, MAC in field 128
        if len(message) < 4 + 16 + _MAC_LEN:
            raise MacFieldError(f"message of {len(message)} bytes is too short to carry field 128")
        secondary = int.from_bytes(message[12:20], "big")
        if not secondary & 1:
            raise MacFieldError("secondary bitmap present but bit 128 (MAC) not set")
    elif not primary & 1:
        raise MacFieldError("bit 64 (MAC) not set")
    return bytes(message[:-_MAC_LEN])


def sign(message: bytes, key: bytes, algorithm: str) -> bytes:
    """``message`` (encoded with 8 placeholder bytes in its MAC field) with the real MAC in place."""
    data = mac_data(message)
    return data + terminal_mac(key, data, algorithm)


def verify(message: bytes, key: bytes, algorithm: str) -> bool:
    data = mac_data(message)
    return same_mac(terminal_mac(key, data, algorithm), message[-_MAC_LEN:])


def encode_signed(dialect, fields: dict, key: bytes, algorithm: str) -> bytes:
    """``fields`` encoded with ``dialect`` and MACed: field 64, or 128 when any field above 64 is present."""
    doc = {k: v for k, v in fields.items() if k not in (64, 128)}
    doc[128 if any(isinstance(k, int) and k > 64 for k in doc) else 64] = bytes(_MAC_LEN)
    return sign(dialect.encode(doc), key, algorithm)


def pin_block(pin: str, pan: str, key: bytes, algorithm: str) -> bytes:
    """Field 52: format 0 under a TDES TPK (8 bytes), format 4 under an AES TPK (16 bytes)."""
    return pinblock.encipher(key, algorithm, 0 if algorithm == "tdes" else 4, pin, pan)


def dukpt_keys(bdk: bytes, ksn: str) -> tuple[bytes, bytes, str]:
    """(request MAC key, PIN key, algorithm) of the transaction a KSN names. Test terminals only:
    a real terminal holds its initial key, never the BDK."""
    mac_key, algorithm = dukpt.working_key(bdk, ksn, "mac")
    pin_key, _ = dukpt.working_key(bdk, ksn, "pin")
    return mac_key, pin_key, algorithm


def session_keys(tmk: bytes, algorithm: str, field48: dict[str, str]) -> tuple[bytes, bytes]:
    """(TAK, TPK) from an 0810's TA/TP, each checked against CA/CP; ValueError naming the tag otherwise."""
    out = []
    for key_tag, kcv_tag in (("TA", "CA"), ("TP", "CP")):
        try:
            wrapped = bytes.fromhex(field48[key_tag])
            expected = field48[kcv_tag]
        except KeyError as e:
            raise ValueError(f"field 48 has no tag {e.args[0]}") from None
        except ValueError:
            raise ValueError(f"field 48 tag {key_tag} is not hex") from None
        key = unwrap(tmk, algorithm, wrapped, algorithm)
        if kcv(key, algorithm) != expected.upper():
            raise ValueError(f"field 48 tag {key_tag}: check value does not match {kcv_tag}")
        out.append(key)
    return out[0], out[1]
