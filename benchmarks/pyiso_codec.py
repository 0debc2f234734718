"""pyiso8583 behind the face of ``native.iso8583``: the benchmark's second reference.

``make bench`` measures the switch a second time with its ISO 8583 codec
replaced by pyiso8583 (a pure-Python implementation), to show what the
compiled codec buys end to end.  This module is that replacement:
:func:`dialect` returns a :class:`PyisoDialect` where the switch would get a
compiled ``native.iso8583.Dialect``, with the same interface (``decode`` ->
a message object with the same methods, ``encode(message or mapping)``,
``salvage``, ``new``, ``field_spec``...) and the same value types (text
fields ``str``, binary fields ``bytes``), but every byte read or written by
``iso8583.decode`` / ``iso8583.encode``.

The pyiso8583 spec of a dialect is built from the dialect's own TOML file
(its top-level ``mti`` / ``bitmap`` layout and each field's resolved
``field_spec``), so terminal-87 gives pyiso8583's ``default`` spec,
iso87-ascii its ``default_ascii`` and host-87-bcd a BCD spec (numerics and
track data packed two digits a byte, "=" as the nibble D, BCD length
prefixes).

What it does not do: the content-class checks the compiled codec makes on
decode (digits in ``n`` fields, printable text in ``ans``...), which
pyiso8583 does not know.  It does less work than the compiled codec, never
more, so the compiled/pyiso8583 ratio is if anything understated.

Test and benchmark only: pyiso8583 is no dependency of the switch, and
nothing under switch/ or adapters/ imports this module.  benchmarks/
pyiso_switch.py installs it in a switch process.
"""
from __future__ import annotations

import tomllib
from typing import Any, Iterator, Mapping

import iso8583

from native import iso8583 as native

__all__ = ["PyisoDialect", "PyisoMessage", "dialect", "pyiso_spec"]

_TEXT_CODECS = {"ascii": "ascii", "ebcdic": "cp037", "cp037": "cp037", "cp500": "cp500",
                "cp1140": "cp1140", "cp273": "cp273"}
_PREFIX = {"ascii": "ascii", "ebcdic": "cp037", "bcd": "bcd", "binary": "b"}

# How a field's value goes between our value types and pyiso8583's document.
_TEXT, _BYTES, _DIGITS, _TRACK = range(4)


def _text_codec(name: str, where: str) -> str:
    try:
        return _TEXT_CODECS[name]
    except KeyError:
        raise ValueError(f"{where}: encoding {name!r} has no pyiso8583 equivalent") from None


def pyiso_spec(d: native.Dialect) -> tuple[dict, dict[int, int]]:
    """The pyiso8583 spec of compiled dialect ``d``, and how each field's value is carried.

    Raises ValueError naming the dialect file and field for a layout
    pyiso8583 can't express.
    """
    with open(d.path, "rb") as f:
        top = tomllib.load(f)
    where = d.path
    text = _text_codec(top.get("text_encoding", "ascii"), where)
    spec: dict[str, dict[str, Any]] = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "Message Header"},
    }
    mti = top.get("mti", "ascii")
    if mti == "bcd":
        spec["t"] = {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2, "desc": "Message Type"}
    else:
        spec["t"] = {"data_enc": _text_codec(mti, f"{where}: mti"), "len_enc": "ascii", "len_type": 0,
                     "max_len": 4, "desc": "Message Type"}
    if top.get("bitmap", "binary") == "binary":
        bitmap = {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8}
    else:
        bitmap = {"data_enc": text, "len_enc": "ascii", "len_type": 0, "max_len": 16}
    for key, desc in (("p", "Bitmap, Primary"), ("1", "Bitmap, Secondary"), ("65", "Bitmap, Tertiary")):
        spec[key] = {**bitmap, "desc": desc}
    kinds: dict[int, int] = {}
    for n in d.defined_fields:
        fs = d.field_spec(n)
        if fs["format"] == "bitmap":
            continue
        at = f"{where}: field {n}"
        field: dict[str, Any] = {"desc": fs.get("name", "")}
        if "var" in fs:
            field["len_enc"] = _PREFIX[fs["prefix_encoding"]]
            field["len_type"] = fs["prefix_bytes"]
            field["max_len"] = fs["max"]
        else:
            field["len_enc"] = "ascii"
            field["len_type"] = 0
            field["max_len"] = fs["fixed"]
        enc = fs["encoding"]
        if enc == "binary":
            field["data_enc"] = "b"
            kinds[n] = _BYTES
        elif enc == "bcd":
            field["data_enc"] = "b"
            field["len_count"] = "nibbles"
            field["left_pad" if fs.get("pad", "left") == "left" else "right_pad"] = fs.get("pad_digit", "0").upper()
            kinds[n] = _TRACK if fs["format"] == "z" else _DIGITS
        else:
            field["data_enc"] = _text_codec(enc, at)
            kinds[n] = _TEXT
        spec[str(n)] = field
    return spec, kinds


def _field_of(key: str | None) -> int | None:
    return int(key) if isinstance(key, str) and key.isdigit() else None


def _decode_error(e: iso8583.DecodeError) -> native.DecodeError:
    # pyiso8583's messages name the field and offset, never the field's bytes.
    return native.DecodeError(str(e), _field_of(e.field), e.pos)


def _field_number(key: Any) -> int:
    """A mapping key as a field number; 0 for the keys to skip (MTI, bitmaps)."""
    if isinstance(key, int) and not isinstance(key, bool):
        n = key
    elif isinstance(key, str) and key.isascii() and key.isdigit():
        n = int(key)
    elif key in ("mti", "t", "p"):
        return 0
    else:
        raise native.EncodeError(f"unknown key {str(key)[:40]!r}: expected a field number 1-192, 'mti' or 't'", None)
    if n in (1, 65):
        return 0
    if not 1 < n <= 192:
        raise native.EncodeError(f"unknown key {n}: expected a field number 1-192", None)
    return n


class PyisoMessage:
    """A decoded (or new) message: the interface of ``native.iso8583.Message`` over a dict."""

    __slots__ = ("dialect", "mti", "_f")

    def __init__(self, dialect: PyisoDialect, mti: str, fields: dict[int, Any]):
        self.dialect = dialect
        self.mti = mti
        self._f = fields

    def __getitem__(self, n: int):
        return self._f[n]

    def __setitem__(self, n: int, value) -> None:
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        self._f[n] = value

    def __delitem__(self, n: int) -> None:
        del self._f[n]

    def __contains__(self, n: object) -> bool:
        return n in self._f

    def __len__(self) -> int:
        return len(self._f)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._f))

    def get(self, n: int, default=None):
        return self._f.get(n, default)

    def fields(self) -> dict:
        return {n: self._f[n] for n in sorted(self._f)}

    def keys(self) -> list[int]:
        return sorted(self._f)

    def items(self) -> list:
        return list(self.fields().items())

    def values(self) -> list:
        return list(self.fields().values())

    def copy(self) -> PyisoMessage:
        return PyisoMessage(self.dialect, self.mti, dict(self._f))

    def encode(self) -> bytes:
        return self.dialect.encode(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (PyisoMessage, native.Message)):
            return NotImplemented
        return self.mti == other.mti and self.fields() == other.fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Values are left out: they may hold a PAN, track data or a PIN block.
        return f"<PyisoMessage {self.mti} ({self.dialect.name}) fields {self.keys()}>"


class PyisoDialect:
    """A dialect read and written by pyiso8583, in the interface of ``native.iso8583.Dialect``."""

    def __init__(self, compiled: native.Dialect):
        self.compiled = compiled
        self.name = compiled.name
        self.path = compiled.path
        self.defined_fields = compiled.defined_fields
        self.spec, self.kinds = pyiso_spec(compiled)
        self._keys = {str(n): (n, kind) for n, kind in self.kinds.items()}

    def __repr__(self) -> str:
        return f"<PyisoDialect {self.name!r}>"

    def field_spec(self, n: int):
        return self.compiled.field_spec(n)

    def _message(self, doc_dec: dict, doc_enc: dict, skip: str | None = None) -> PyisoMessage:
        fields: dict[int, Any] = {}
        keys = self._keys
        for key, value in doc_dec.items():
            entry = keys.get(key)
            if entry is None or key == skip:
                continue
            n, kind = entry
            if kind == _BYTES:
                fields[n] = bytes(doc_enc[key]["data"])
            elif kind == _TRACK:
                fields[n] = value.replace("D", "=").replace("d", "=")
            else:
                fields[n] = value
        return PyisoMessage(self, doc_dec["t"], fields)

    def decode(self, data) -> PyisoMessage:
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        try:
            doc_dec, doc_enc = iso8583.decode(data, self.spec)
        except iso8583.DecodeError as e:
            raise _decode_error(e) from None
        except KeyError as e:  # a bit set for a field the spec does not define
            raise native.DecodeError(f"field {e.args[0]}: not defined by dialect {self.name}",
                                     _field_of(e.args[0]), None) from None
        return self._message(doc_dec, doc_enc)

    def salvage(self, data) -> PyisoMessage:
        """The MTI and the fields read before the first malformed one (DecodeError without an MTI)."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        try:
            doc_dec, doc_enc = iso8583.decode(data, self.spec)
        except iso8583.DecodeError as e:
            if e.field == "t" or not e.doc_dec.get("t"):
                raise _decode_error(e) from None
            return self._message(e.doc_dec, e.doc_enc, skip=e.field)
        except KeyError as e:
            raise native.DecodeError(f"field {e.args[0]}: not defined by dialect {self.name}",
                                     _field_of(e.args[0]), None) from None
        return self._message(doc_dec, doc_enc)

    def new(self, mti: str, fields: Mapping | None = None) -> PyisoMessage:
        out: dict[int, Any] = {}
        for key, value in (fields or {}).items():
            n = _field_number(key)
            if n == 0:
                raise native.EncodeError(f"field {key!r} is not a data field", None)
            out[n] = bytes(value) if isinstance(value, (bytearray, memoryview)) else value
        return PyisoMessage(self, mti, out)

    def encode(self, msg) -> bytes:
        """Encode a message (of any dialect) or a mapping {"mti": ..., n: value}."""
        if isinstance(msg, (PyisoMessage, native.Message)):
            mti, items = msg.mti, msg.fields().items()
        else:
            mti = msg.get("mti", msg.get("t"))
            items = msg.items()
        doc: dict[str, Any] = {"t": mti}
        kinds = self.kinds
        for key, value in items:
            n = _field_number(key)
            if n == 0:
                continue
            kind = kinds.get(n)
            if kind is None:
                raise native.EncodeError(f"field {n}: not defined by dialect {self.name}", n)
            if kind == _BYTES:
                if isinstance(value, (bytes, bytearray, memoryview)):
                    value = bytes(value).hex()
            elif kind == _TRACK and isinstance(value, str):
                value = value.replace("=", "D")
            doc[str(n)] = value
        try:
            data, _ = iso8583.encode(doc, self.spec)
        except iso8583.EncodeError as e:
            # pyiso8583's messages name the field, never its value.
            raise native.EncodeError(str(e), _field_of(e.field)) from None
        except (TypeError, AttributeError) as e:
            raise native.EncodeError(f"{type(e).__name__}: {e}", None) from None
        return bytes(data)


_cache: dict[str, PyisoDialect] = {}
_compiled_dialect = native.dialect  # kept: pyiso_switch puts dialect() below in its place


def dialect(name_or_path) -> PyisoDialect:
    """Stands in for ``native.iso8583.dialect``: one PyisoDialect per dialect, like the compiled one."""
    compiled = _compiled_dialect(name_or_path)
    found = _cache.get(compiled.path)
    if found is None:
        found = _cache[compiled.path] = PyisoDialect(compiled)
    return found
