"""Where a message's MAC sits on the wire, and which bytes it covers (spec section 8).

One place for the framing rules that terminal messages and host-link
messages share: the MAC is field 64, or field 128 when the message has
fields above 64 (a secondary bitmap); it covers the encoded message from
the MTI up to the MAC field itself, which is the last field on the wire;
a dialect that carries binary fields as hex text (``hex_fields`` of
:class:`switch.core.codecs.HexFieldsCodec`) carries the 8 bytes as 16 hex
digits.  The cryptography is not here: callers hand the covered bytes to
the security module (or, in a simulator, to :mod:`switch.security.mac`).

Sans-I/O: encoding and slicing only.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["MAC_LEN", "wire_mac_length", "mac_tail", "ends_with_mac", "mac_field", "unsigned_wire", "signed_wire",
           "covered"]

MAC_LEN = 8


def wire_mac_length(codec, field: int) -> int:
    """How many bytes the MAC field takes on this codec's wire: 8, or 16 as hex text."""
    return 2 * MAC_LEN if field in getattr(codec, "hex_fields", ()) else MAC_LEN


def mac_tail(codec, field: int, mac: bytes) -> bytes:
    """The MAC as it ends the message on this codec's wire."""
    return mac.hex().upper().encode() if wire_mac_length(codec, field) != MAC_LEN else mac


def ends_with_mac(codec, field: int, mac: bytes, body: bytes) -> bool:
    """Whether ``mac``, the decoded MAC field, is 8 bytes and the last thing of ``body`` on this codec's wire.

    As hex text its digits may be upper or lower case, as the codec reads
    them (a client writing Python's ``bytes.hex()`` sends lower case); the
    MAC never covers itself, so its case changes nothing it covers.
    """
    n = wire_mac_length(codec, field)
    if len(mac) != MAC_LEN or len(body) <= n:
        return False
    tail = bytes(body[-n:])
    return (tail if n == MAC_LEN else tail.upper()) == mac_tail(codec, field, mac)


def mac_field(fields: Mapping) -> int:
    """64, or 128 when the message has a field above 64 (other than a MAC)."""
    return 128 if any(isinstance(n, int) and 64 < n < 128 for n in fields) else 64


def unsigned_wire(codec, fields: Mapping[Any, Any]) -> tuple[bytes, int]:
    """``fields`` (with ``"mti"``) encoded with a placeholder MAC: (the bytes the MAC covers, MAC field).

    A MAC already in ``fields`` (64 or 128) is dropped first.
    """
    doc = {k: v for k, v in fields.items() if k != 64 and k != 128}
    field = mac_field(doc)
    doc[field] = bytes(MAC_LEN)
    wire = codec.encode(doc)
    return wire[: -wire_mac_length(codec, field)], field


def signed_wire(codec, covered_bytes: bytes, field: int, mac: bytes) -> bytes:
    """The whole message: what :func:`unsigned_wire` returned, followed by its MAC."""
    return covered_bytes + mac_tail(codec, field, mac)


def covered(codec, msg, body: bytes) -> tuple[bytes, bytes] | str:
    """(bytes the MAC covers, the MAC) of a received message ``msg`` decoded from ``body``.

    A reason (str) instead when the message carries no MAC, or one that is
    not 8 bytes ending the message.
    """
    field = 128 if 128 in msg else 64 if 64 in msg else None
    if field is None:
        return "no MAC"
    mac = msg[field]
    if not ends_with_mac(codec, field, mac, body):
        return f"field {field} is not an 8-byte MAC at the end of the message"
    return bytes(body[: -wire_mac_length(codec, field)]), bytes(mac)
