"""A payShield-style host command codec: a faithful subset, without I/O.

Frame: 2-byte big-endian length, then the message header (a fixed number of
characters, 4 by default, echoed in the answer), the 2-character command
code and its fields, all ASCII. The answer's code is the command's with the
second character advanced (CA -> CB, M6 -> M7) followed by a 2-digit error
code ('00' success).

Commands, as publicly documented for the payShield host interface:

=====  ==========================================  ======================================
code   purpose                                     fields (request)
=====  ==========================================  ======================================
CA     PIN from TPK to ZPK                         TPK, ZPK, max PIN length (2N), PIN
                                                   block, source format (2N), destination
                                                   format (2N), account number
CC     PIN from ZPK to ZPK                         as CA, with a source ZPK
CI     PIN from DUKPT (TDES BDK) to ZPK            BDK, ZPK, KSN descriptor (3H), KSN,
                                                   PIN block, destination format, account
G0     PIN from DUKPT to ZPK (TDES or AES BDK)     as CI plus the source format before the
                                                   destination format
M6/M8  generate / verify a MAC                     mode (1N), input format (1N), MAC size
                                                   (1N), algorithm (1N), padding (1N), key
                                                   type (3H), key, length (4H), data[, MAC]
GW     generate / verify a DUKPT MAC               mode (1N: 0 verify a request's MAC, 1
                                                   generate its answer's, same key), BDK, KSN
                                                   descriptor, KSN, length (4H), data[, MAC]
A0     generate a key (mode 1: also under a        mode, key type (3H), key scheme LMK,
       ZMK / TMK)                                  ';', ZMK/TMK flag, ZMK/TMK, key scheme
A6     import a key under a ZMK                    key type, ZMK, key under ZMK, key scheme
NC     diagnostics                                 —
=====  ==========================================  ======================================

PIN block format codes: 01 ISO 9564 format 0, 47 format 3, 48 format 4; MAC
algorithm 3 ISO 9797-1 algorithm 3, 6 AES-CMAC; padding 0 none, 1 method 1.
Key types: 000 ZMK, 001 ZPK, 002 TPK/TMK, 003 TAK, 008 ZAK, 009 BDK.

Where this subset departs from a real payShield (so configuration, not code,
changes when one is used): keys are always cryptograms carried in the
command (no user storage 'K' index, no LMK identifier '%' trailer); AES keys
use scheme 'R' (RFC 3394 wrap under the LMK; a payShield wants 'S' key
blocks); with format 48 the account number is the whole PAN, as 2-digit
length + digits; the KSN descriptor 'A12' announces a 24-hex-digit AES KSN;
GW's layout is ours; MAC and diagnostics answers carry only the fields named
here.
"""
from __future__ import annotations

import msgspec

__all__ = [
    "CodecError",
    "Framer",
    "frame",
    "KEY_SCHEMES",
    "PIN_FORMAT_CODES",
    "REQUESTS",
    "RESPONSES",
    "Message",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "response_code",
]

MAX_FRAME = 32767

# scheme character -> hex digits of the key cryptogram that follows it
KEY_SCHEMES = {"U": 32, "X": 32, "T": 48, "Y": 48, "R": 48}
PIN_FORMAT_CODES = {0: "01", 3: "47", 4: "48"}
KSN_DESCRIPTORS = {"906": 20, "A12": 24}


class CodecError(ValueError):
    """A frame or a field does not follow the command layout; names the command, field and offset."""


class Framer:
    """Cuts a byte stream into frames (2-byte length prefix). Feed bytes, take frames."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            n = int.from_bytes(self._buf[:2], "big")
            if n == 0 or n > self._max:
                raise CodecError(f"frame length {n} at offset 0: expected 1 to {self._max}")
            if len(self._buf) < 2 + n:
                break
            out.append(bytes(self._buf[2 : 2 + n]))
            del self._buf[: 2 + n]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def frame(body: bytes) -> bytes:
    if not 0 < len(body) <= MAX_FRAME:
        raise CodecError(f"message of {len(body)} bytes cannot be framed")
    return len(body).to_bytes(2, "big") + body


# Field kinds: an int is a fixed number of characters; the others are read by
# _read_field: "key" (scheme char + cryptogram), "data4" (4H length + bytes),
# "pinblock:<key field>" (16H, 32H under an 'R' key), "account" (12N, or 2N +
# PAN when a format field is 48), "ksn" (3H descriptor + KSN), "sep" (';'),
# "rest" (to the end), "pinblock:rest-2" (answers: all but the last 2).
Layout = tuple[tuple[str, object], ...]

REQUESTS: dict[str, Layout] = {
    "CA": (("source_key", "key"), ("destination_key", "key"), ("max_pin_length", 2), ("pin_block", "pinblock:source_key"),
           ("source_format", 2), ("destination_format", 2), ("account", "account")),
    "CC": (("source_key", "key"), ("destination_key", "key"), ("max_pin_length", 2), ("pin_block", "pinblock:source_key"),
           ("source_format", 2), ("destination_format", 2), ("account", "account")),
    "CI": (("bdk", "key"), ("destination_key", "key"), ("ksn", "ksn"), ("pin_block", "pinblock:ksn"),
           ("destination_format", 2), ("account", "account")),
    "G0": (("bdk", "key"), ("destination_key", "key"), ("ksn", "ksn"), ("pin_block", "pinblock:ksn"),
           ("source_format", 2), ("destination_format", 2), ("account", "account")),
    "M6": (("mode", 1), ("input_format", 1), ("mac_size", 1), ("algorithm", 1), ("padding", 1), ("key_type", 3),
           ("key", "key"), ("data", "data4")),
    "M8": (("mode", 1), ("input_format", 1), ("mac_size", 1), ("algorithm", 1), ("padding", 1), ("key_type", 3),
           ("key", "key"), ("data", "data4"), ("mac", 16)),
    "GW": (("mode", 1), ("bdk", "key"), ("ksn", "ksn"), ("data", "data4"), ("mac", "rest")),
    "A0": (("mode", 1), ("key_type", 3), ("scheme_lmk", 1), ("delimiter", "sep"), ("kek_flag", 1), ("kek", "key"),
           ("scheme_kek", 1)),
    "A6": (("key_type", 3), ("kek", "key"), ("key", "key"), ("scheme_lmk", 1)),
    "NC": (),
}

# Fields after the error code, on success ('00', and '01' for a failed verification: no fields).
RESPONSES: dict[str, Layout] = {
    "CB": (("pin_length", 2), ("pin_block", "pinblock:rest-2"), ("destination_format", 2)),
    "CD": (("pin_length", 2), ("pin_block", "pinblock:rest-2"), ("destination_format", 2)),
    "CJ": (("pin_length", 2), ("pin_block", "pinblock:rest-2"), ("destination_format", 2)),
    "G1": (("pin_length", 2), ("pin_block", "pinblock:rest-2"), ("destination_format", 2)),
    "M7": (("mac", 16),),
    "M9": (),
    "GX": (("mac", "rest"),),
    "A1": (("key", "key"), ("key_under_kek", "key"), ("kcv", 6)),
    "A7": (("key", "key"), ("kcv", 6)),
    "ND": (("lmk_check", 16), ("firmware", 9)),
}


def response_code(command: str) -> str:
    return command[0] + chr(ord(command[1]) + 1)


class Message(msgspec.Struct):
    """A decoded command or answer: header, code, error (answers only) and named fields (str)."""

    header: str
    code: str
    fields: dict[str, str]
    error: str | None = None

    def __repr__(self) -> str:  # fields may hold PIN blocks and key cryptograms
        return f"Message({self.code}, error={self.error}, fields={sorted(self.fields)})"


def _field_text(code: str, name: str, value) -> str:
    text = value.hex().upper() if isinstance(value, (bytes, bytearray)) and name != "data" else value
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("latin-1")
    if not isinstance(text, str) or (name != "data" and not text.isascii()):
        raise CodecError(f"{code} field {name}: expected ASCII text")
    return text


def _encode(header: str, code: str, layout: Layout, fields: dict[str, object], error: str | None) -> bytes:
    parts = [header, code] + ([error] if error is not None else [])
    for name, kind in layout:
        if kind == "sep":
            parts.append(";")
            continue
        if name not in fields:
            raise CodecError(f"{code}: field {name} missing")
        text = _field_text(code, name, fields[name])
        if isinstance(kind, int) and len(text) != kind:
            raise CodecError(f"{code} field {name}: expected {kind} characters, got {len(text)}")
        if kind == "data4":
            text = "%04X" % len(text) + text
        elif kind == "account" and "48" in (fields.get("source_format"), fields.get("destination_format")):
            text = "%02d" % len(text) + text
        elif kind == "ksn":
            descriptor = {20: "906", 24: "A12"}.get(len(text))
            if descriptor is None:
                raise CodecError(f"{code} field ksn: expected 20 or 24 hex digits, got {len(text)}")
            text = descriptor + text
        parts.append(text)
    return "".join(parts).encode("latin-1")


class _Reader:
    def __init__(self, code: str, text: str, offset: int):
        self.code, self.text, self.pos = code, text, offset

    def take(self, n: int, name: str) -> str:
        if self.pos + n > len(self.text):
            raise CodecError(f"{self.code} field {name} at offset {self.pos}: expected {n} characters, got {len(self.text) - self.pos}")
        value = self.text[self.pos : self.pos + n]
        self.pos += n
        return value

    def hex_int(self, n: int, name: str) -> int:
        at, raw = self.pos, self.take(n, name)
        try:
            return int(raw, 16)
        except ValueError:
            raise CodecError(f"{self.code} field {name} at offset {at}: expected {n} hex digits") from None


def _decode(code: str, text: str, offset: int, layout: Layout, fields: dict[str, str]) -> dict[str, str]:
    r = _Reader(code, text, offset)
    for name, kind in layout:
        at = r.pos
        if isinstance(kind, int):
            fields[name] = r.take(kind, name)
        elif kind == "sep":
            if r.take(1, name) != ";":
                raise CodecError(f"{code} field {name} at offset {at}: expected ';'")
        elif kind == "key":
            scheme = r.take(1, name)
            if scheme not in KEY_SCHEMES:
                raise CodecError(f"{code} field {name} at offset {at}: key scheme {scheme!r} is not one of {''.join(KEY_SCHEMES)}")
            fields[name] = scheme + r.take(KEY_SCHEMES[scheme], name)
        elif kind == "data4":
            n = r.hex_int(4, name + " length")
            fields[name] = r.take(n, name)
        elif kind == "ksn":
            descriptor = r.take(3, name + " descriptor")
            if descriptor not in KSN_DESCRIPTORS:
                raise CodecError(f"{code} field {name} at offset {at}: KSN descriptor {descriptor!r} is not 906 or A12")
            fields[name] = r.take(KSN_DESCRIPTORS[descriptor], name)
        elif kind == "account":
            fmt_48 = "48" in (fields.get("source_format"), fields.get("destination_format"))
            if fmt_48:
                n = r.take(2, name + " length")
                if not n.isdigit():
                    raise CodecError(f"{code} field {name} at offset {at}: expected a 2-digit length")
                fields[name] = r.take(int(n), name)
            else:
                fields[name] = r.take(12, name)
        elif kind == "rest":
            fields[name] = r.text[r.pos :]
            r.pos = len(r.text)
        elif kind == "pinblock:rest-2":  # answers: the block is all but the 2-digit format after it
            n = len(r.text) - r.pos - 2
            if n not in (16, 32):
                raise CodecError(f"{code} field {name} at offset {at}: expected 16 or 32 hex digits, got {n}")
            fields[name] = r.take(n, name)
        elif isinstance(kind, str) and kind.startswith("pinblock:"):
            ref = fields.get(kind.split(":", 1)[1], "")
            aes = ref.startswith("R") or len(ref) == 24  # an AES key or an AES KSN
            fields[name] = r.take(32 if aes else 16, name)
        else:  # pragma: no cover - layouts are data checked by tests
            raise AssertionError(kind)
    if r.pos != len(text):
        raise CodecError(f"{code} at offset {r.pos}: {len(text) - r.pos} characters after the last field")
    return fields


def _text(body: bytes) -> str:
    return bytes(body).decode("latin-1")


def encode_request(header: str, code: str, fields: dict[str, object]) -> bytes:
    """A framed command. ``fields`` by name as in :data:`REQUESTS`; bytes values go as upper-case hex."""
    try:
        layout = REQUESTS[code]
    except KeyError:
        raise CodecError(f"command {code!r} is not in this subset") from None
    return frame(_encode(header, code, layout, fields, None))


def decode_request(body: bytes, header_length: int = 4) -> Message:
    """One command (a frame's body, without the length)."""
    text = _text(body)
    if len(text) < header_length + 2:
        raise CodecError(f"command of {len(text)} characters: expected header ({header_length}) and code")
    code = text[header_length : header_length + 2]
    if code not in REQUESTS:
        raise CodecError(f"command code {code!r} at offset {header_length} is not in this subset")
    fields = _decode(code, text, header_length + 2, REQUESTS[code], {})
    return Message(text[:header_length], code, fields)


def encode_response(header: str, code: str, error: str, fields: dict[str, object] | None = None) -> bytes:
    layout = RESPONSES[code] if error == "00" else ()
    return frame(_encode(header, code, layout, fields or {}, error))


def decode_response(body: bytes, header_length: int = 4) -> Message:
    """One answer (a frame's body, without the length)."""
    text = _text(body)
    if len(text) < header_length + 4:
        raise CodecError(f"answer of {len(text)} characters: expected header ({header_length}), code and error")
    code, error = text[header_length : header_length + 2], text[header_length + 2 : header_length + 4]
    if code not in RESPONSES:
        raise CodecError(f"answer code {code!r} at offset {header_length} is not in this subset")
    if not error.isdigit():
        raise CodecError(f"{code} error code at offset {header_length + 2}: expected 2 digits")
    layout = RESPONSES[code] if error == "00" else ()
    fields = _decode(code, text, header_length + 4, layout, {})
    return Message(text[:header_length], code, fields, error)
