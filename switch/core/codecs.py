"""A listener's codec: its terminal dialect, presenting the values the switch works with.

The switch's rules are written against ``terminal-87`` values: text fields as
str, binary fields (52 PIN block, 55 EMV data, 64 / 128 MAC) as bytes.  Most
dialects give exactly those (EBCDIC, BCD and ASCII differ on the wire only),
and for them the codec *is* the compiled :class:`native.iso8583.Dialect`: no
layer in between.  A dialect that carries binary fields as hex text (format
``hex``, like ``iso87-ascii`` = pyiso8583's ``default_ascii``) gets
:class:`HexFieldsCodec`, which turns that text into bytes on the way in and
back on the way out, so the answer goes out in the request's own dialect.

Sans-I/O: a codec only turns bytes into messages and back.
"""
from __future__ import annotations

from typing import Mapping, Protocol

from native.iso8583 import DecodeError, Dialect, EncodeError, Message, dialect

__all__ = ["Codec", "HexFieldsCodec", "listener_codec"]

# The dialect whose values the rest of the switch expects (spec section 2).
CANONICAL = "terminal-87"


class Codec(Protocol):
    name: str

    def decode(self, data: bytes) -> Message: ...
    def encode(self, msg: Mapping) -> bytes: ...
    def salvage(self, data: bytes) -> Message: ...


class HexFieldsCodec:
    """A dialect with hex-text binary fields, seen through terminal-87 values."""

    def __init__(self, wire: Dialect, hex_fields: frozenset[int]):
        self.wire = wire
        self.name = wire.name
        self.hex_fields = hex_fields
        self.canonical = dialect(CANONICAL)

    def __repr__(self):
        return f"<HexFieldsCodec {self.name!r}: fields {sorted(self.hex_fields)} as hex text>"

    def decode(self, data: bytes) -> Message:
        """The request as a terminal-87 Message; DecodeError as the wire dialect words it."""
        msg = self.wire.decode(data)
        fields = msg.fields()
        for n in self.hex_fields & fields.keys():
            fields[n] = _unhex(n, fields[n])
        try:
            return self.canonical.new(msg.mti, fields)
        except EncodeError as e:
            # A value this dialect allows but the switch's own can't hold.
            raise DecodeError(str(e), e.field, None) from None

    def encode(self, msg: Mapping) -> bytes:
        if isinstance(msg, Message):
            mapping = msg.fields()
            mapping["mti"] = msg.mti
        else:
            mapping = dict(msg)
        for n in self.hex_fields & mapping.keys():
            value = mapping[n]
            if isinstance(value, (bytes, bytearray, memoryview)):
                mapping[n] = bytes(value).hex().upper()
        return self.wire.encode(mapping)

    def salvage(self, data: bytes) -> Message:
        return self.wire.salvage(data)


def _unhex(n: int, text: str) -> bytes:
    if len(text) % 2:
        raise DecodeError(f"field {n}: {len(text)} hex digits, expected an even number", n, None)
    return bytes.fromhex(text)  # the dialect checked the digits


def listener_codec(name_or_path: str) -> Codec:
    """The codec of a listener's ``dialect`` setting: a shipped dialect's name or a dialect file.

    Raises ValueError naming the dialect (or file) when it can't be loaded.
    """
    wire = dialect(name_or_path)
    canonical = dialect(CANONICAL)
    hex_fields = frozenset(
        n
        for n in wire.defined_fields
        if wire.field_spec(n)["format"] == "hex" and (canonical.field_spec(n) or {}).get("format") == "b"
    )
    return HexFieldsCodec(wire, hex_fields) if hex_fields else wire
