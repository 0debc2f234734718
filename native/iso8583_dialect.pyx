"""ISO 8583 dialects declared as data, compiled into C tables.

A dialect (the "packager" of other libraries) is a TOML file: the MTI and
bitmap encodings, and for every field its format, fixed or variable length,
length-prefix encoding, data encoding and maximum length. The schema is
documented at the top of ``native/dialects/terminal-87.toml``. ``_load``
reads a file and compiles it into a ``DialectSpec``: an array of
``FieldSpec`` structs indexed by field number, which decoding
(native/iso8583_message.pyx) and encoding (native/iso8583.pyx) walk. A
malformed file raises ValueError naming the file, the key and what is wrong.

``native.iso8583.dialect()`` is the way in: it caches one ``Dialect`` (a
``DialectSpec`` that decodes and encodes) per file.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport uint8_t
from libc.string cimport memset

import os
import tomllib

__all__ = ["DialectSpec", "DIALECTS_DIR", "available_dialects"]


cdef class DialectSpec:
    """A dialect's compiled tables: one ``FieldSpec`` per field number, the MTI and bitmap encodings."""

    def __init__(self, *args, **kwargs):
        raise TypeError("use native.iso8583.dialect(name_or_path) to get a Dialect")

    def field_spec(self, n):
        """The spec of field ``n`` as a dict, or None if the dialect does not define it."""
        spec = self._info.get(n)
        return dict(spec) if spec is not None else None

    @property
    def defined_fields(self):
        """Data fields the dialect defines, ascending (bitmaps excluded)."""
        return tuple(sorted(n for n, s in self._info.items() if s["format"] != "bitmap"))


# ---------------------------------------------------------------------------
# Dialect files


DIALECTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dialects")

_FORMATS = {
    "n": F_N, "a": F_A, "an": F_AN, "ans": F_ANS, "as": F_AS, "ns": F_NS,
    "z": F_Z, "x+n": F_XN, "hex": F_HEX, "b": F_B,
}

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_SPECIALS = "".join(c for c in _PRINTABLE if c not in _LETTERS and c not in _DIGITS)

# Characters each text format allows. a/an allow space: fixed-length
# alphanumeric fields are space-padded in practice (ISO 8583:1987 4.3.2).
_CLASS_CHARS = {
    F_N: _DIGITS,
    F_A: _LETTERS + " ",
    F_AN: _LETTERS + _DIGITS + " ",
    F_ANS: _PRINTABLE,
    F_AS: _LETTERS + _SPECIALS,
    F_NS: _DIGITS + _SPECIALS,
    F_Z: _DIGITS + "=D",
    F_XN: _DIGITS + "CD",
    F_HEX: "0123456789ABCDEFabcdef",
}

_EBCDIC = {"ebcdic": "cp037", "cp037": "cp037", "cp500": "cp500", "cp1140": "cp1140", "cp273": "cp273"}
_DATA_ENCODINGS = ("ascii", "bcd", "binary") + tuple(_EBCDIC)
_PREFIX_ENCODINGS = {"ascii": P_ASCII, "ebcdic": P_EBCDIC, "bcd": P_BCD, "binary": P_BINARY}
_VAR = {"L": 1, "LL": 2, "LLL": 3, "LLLL": 4}
# 48: wallet payment codes and city-card data travel in its TLV (issue 8).
_SENSITIVE = frozenset((2, 34, 35, 36, 45, 48, 52, 55))
_DIALECT_KEYS = {"name", "description", "mti", "bitmap", "text_encoding", "numeric_encoding",
                 "prefix_encoding", "fields"}
_FIELD_KEYS = {"name", "format", "fixed", "var", "max", "encoding", "prefix_encoding", "prefix_bytes",
               "pad", "pad_digit", "sensitive"}

# Tables shared between dialects (bytes objects the FieldSpec pointers point into).
cdef dict _TABLES = {}
cdef dict _SIGS = {}


cdef bytes _table(key, build):
    t = _TABLES.get(key)
    if t is None:
        t = build()
        _TABLES[key] = t
    return t


def _text_dec(fmt, codec):
    """wire byte -> ASCII char (0 if not allowed)."""
    chars = _CLASS_CHARS[fmt]
    out = bytearray(256)
    for b in range(256):
        if codec is None:
            ch = chr(b) if b < 128 else ""
        else:
            ch = bytes([b]).decode(codec)
        if ch and ch in chars:
            out[b] = ord(ch)
    return bytes(out)


def _text_ok(fmt):
    chars = _CLASS_CHARS[fmt]
    out = bytearray(256)
    for ch in chars:
        out[ord(ch)] = 1
    return bytes(out)


def _text_enc(fmt, codec):
    out = bytearray(256)
    for ch in _CLASS_CHARS[fmt]:
        out[ord(ch)] = ch.encode(codec)[0] if codec else ord(ch)
    return bytes(out)


def _bcd_dec(fmt):
    """byte -> 1 if both nibbles are valid digits of the format."""
    ok = set(range(10)) | ({0xD} if fmt == F_Z else set())
    return bytes(1 if (b >> 4) in ok and (b & 15) in ok else 0 for b in range(256))


def _bcd_ok(fmt):
    out = bytearray(256)
    for ch in _DIGITS + ("=D" if fmt == F_Z else ""):
        out[ord(ch)] = 1
    return bytes(out)


def _err(path, where, what):
    return ValueError(f"{path}: {where}: {what}")


def _compile_field(DialectSpec d, int n, dict spec, dict top, str path):
    cdef FieldSpec *fs = &d.fs[n]
    where = f"[fields] {n}"
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise _err(path, where, f"unknown key {sorted(unknown)[0]!r} (expected one of {', '.join(sorted(_FIELD_KEYS))})")
    fmt_name = spec.get("format")
    memset(fs, 0, sizeof(FieldSpec))
    if n == 1 or n == 65:
        if fmt_name != "bitmap" or set(spec) - {"format", "name"}:
            raise _err(path, where, 'field 1 and 65 are bitmaps: declare them as { format = "bitmap" } or leave them out')
        fs.kind = K_BITMAP
        d._info[n] = {"format": "bitmap", "name": spec.get("name", "")}
        return
    if fmt_name == "bitmap":
        raise _err(path, where, "only fields 1 and 65 can be bitmaps")
    if fmt_name not in _FORMATS:
        raise _err(path, where, f"format {fmt_name!r} is not one of {', '.join(sorted(_FORMATS))}")
    fmt = _FORMATS[fmt_name]
    if ("fixed" in spec) == ("var" in spec):
        raise _err(path, where, "give exactly one of 'fixed' (a length) or 'var' (\"LL\", \"LLL\", ...) with 'max'")
    # data encoding
    if fmt == F_B:
        enc = spec.get("encoding", "binary")
        if enc != "binary":
            raise _err(path, where, f"encoding {enc!r}: format b is carried as binary (use format \"hex\" for hex text)")
    elif fmt in (F_N, F_Z):
        enc = spec.get("encoding", top["numeric_encoding"])
    else:
        enc = spec.get("encoding", top["text_encoding"])
        if enc == "bcd":
            raise _err(path, where, f"encoding 'bcd' needs format n or z, not {fmt_name!r}")
    if enc not in _DATA_ENCODINGS or (enc == "binary" and fmt != F_B):
        raise _err(path, where, f"encoding {enc!r} is not one of ascii, bcd, {', '.join(_EBCDIC)}" +
                   (", binary" if fmt == F_B else ""))
    codec = _EBCDIC.get(enc)
    if fmt == F_B:
        fs.kind = K_BIN
    elif enc == "bcd":
        fs.kind = K_BCD
        fs.dec = <const uint8_t *>PyBytes_AS_STRING(_table(("bcd", fmt), lambda: _bcd_dec(fmt)))
        fs.ok = <const uint8_t *>PyBytes_AS_STRING(_table(("bcdok", fmt), lambda: _bcd_ok(fmt)))
    else:
        fs.kind = K_TEXT
        fs.translate = codec is not None
        fs.dec = <const uint8_t *>PyBytes_AS_STRING(_table(("dec", fmt, codec), lambda: _text_dec(fmt, codec)))
        fs.ok = <const uint8_t *>PyBytes_AS_STRING(_table(("ok", fmt), lambda: _text_ok(fmt)))
        fs.enc = <const uint8_t *>PyBytes_AS_STRING(_table(("enc", fmt, codec), lambda: _text_enc(fmt, codec)))
    fs.fmt = fmt
    # padding of odd-length BCD
    pad = spec.get("pad", "left")
    pad_digit = spec.get("pad_digit", "0")
    if ("pad" in spec or "pad_digit" in spec) and enc != "bcd":
        raise _err(path, where, "'pad' and 'pad_digit' apply only to encoding 'bcd'")
    if pad not in ("left", "right"):
        raise _err(path, where, f"pad {pad!r} is not 'left' or 'right'")
    if not isinstance(pad_digit, str) or len(pad_digit) != 1 or pad_digit not in "0123456789ABCDEFabcdef":
        raise _err(path, where, f"pad_digit {pad_digit!r} is not one hex digit")
    fs.pad_right = pad == "right"
    fs.pad_nibble = int(pad_digit, 16)
    # length
    info = {"format": fmt_name, "encoding": enc, "name": spec.get("name", "")}
    if "fixed" in spec:
        length = spec["fixed"]
        if "max" in spec or "prefix_encoding" in spec or "prefix_bytes" in spec:
            raise _err(path, where, "'max', 'prefix_encoding' and 'prefix_bytes' apply only to 'var' fields")
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 9999:
            raise _err(path, where, f"fixed {length!r} is not a length 1-9999")
        if fmt == F_HEX and length % 2:
            raise _err(path, where, f"fixed {length} is odd: hex text needs an even number of digits")
        if fmt == F_XN and length < 2:
            raise _err(path, where, "x+n needs a length of at least 2")
        fs.pfx = P_FIXED
        fs.max_len = length
        info["fixed"] = length
    else:
        var = spec["var"]
        if var not in _VAR:
            raise _err(path, where, f"var {var!r} is not one of L, LL, LLL, LLLL")
        digits = _VAR[var]
        pe = spec.get("prefix_encoding", top["prefix_encoding"])
        if pe not in _PREFIX_ENCODINGS:
            raise _err(path, where, f"prefix_encoding {pe!r} is not one of {', '.join(_PREFIX_ENCODINGS)}")
        fs.pfx = _PREFIX_ENCODINGS[pe]
        if "prefix_bytes" in spec and pe != "binary":
            raise _err(path, where, "'prefix_bytes' applies only to prefix_encoding 'binary'")
        if pe == "binary":
            width = spec.get("prefix_bytes", 1 if digits <= 2 else 2)
            if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 2:
                raise _err(path, where, f"prefix_bytes {width!r} is not 1 or 2")
            limit = 256 ** width - 1
        elif pe == "bcd":
            width = (digits + 1) // 2
            limit = 10 ** digits - 1
        else:
            width = digits
            limit = 10 ** digits - 1
        mx = spec.get("max")
        if not isinstance(mx, int) or isinstance(mx, bool) or not 1 <= mx <= min(limit, 9999):
            raise _err(path, where, f"max {mx!r} is not a length 1-{min(limit, 9999)} (a {var} {pe} prefix)")
        fs.pfx_bytes = width
        fs.max_len = mx
        info.update(var=var, max=mx, prefix_encoding=pe, prefix_bytes=width)
    if enc == "bcd":
        info.update(pad=pad, pad_digit=pad_digit.upper())
    sensitive = spec.get("sensitive", n in _SENSITIVE)
    if not isinstance(sensitive, bool):
        raise _err(path, where, f"sensitive {sensitive!r} is not true or false")
    fs.sensitive = sensitive
    info["sensitive"] = sensitive
    sig_key = (fs.kind, fs.fmt, fs.pfx, fs.pfx_bytes, fs.pad_right, fs.pad_nibble, fs.max_len, enc)
    fs.sig = _SIGS.setdefault(sig_key, len(_SIGS) + 1)
    d._info[n] = info


cdef int _load(DialectSpec d, str path) except -1:
    """Fill ``d`` (new, all zero) from the TOML file at ``path``."""
    cdef int n
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as e:
        raise ValueError(f"{path}: cannot read dialect: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; the decoder's message names only the byte
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    unknown = set(doc) - _DIALECT_KEYS
    if unknown:
        raise _err(path, f"key {sorted(unknown)[0]!r}", f"unknown (expected one of {', '.join(sorted(_DIALECT_KEYS))})")
    d.name = doc.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(d.name, str):
        raise _err(path, "name", "must be a string")
    d.path = path
    d._keep = []
    d._info = {}
    mti = doc.get("mti", "ascii")
    if mti not in ("ascii", "bcd", "ebcdic"):
        raise _err(path, "mti", f"{mti!r} is not one of ascii, bcd, ebcdic")
    d.mti_enc = {"ascii": P_ASCII, "bcd": P_BCD, "ebcdic": P_EBCDIC}[mti]
    bitmap = doc.get("bitmap", "binary")
    if bitmap not in ("binary", "hex"):
        raise _err(path, "bitmap", f"{bitmap!r} is not one of binary, hex")
    d.bitmap_hex = bitmap == "hex"
    top = {
        "text_encoding": doc.get("text_encoding", "ascii"),
        "numeric_encoding": doc.get("numeric_encoding", doc.get("text_encoding", "ascii")),
        "prefix_encoding": doc.get("prefix_encoding", "ascii"),
    }
    fields = doc.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise _err(path, "[fields]", "missing or empty")
    for key, spec in fields.items():
        try:
            n = int(key)
        except ValueError:
            n = 0
        if not key.isdigit() or not 1 <= n <= MAX_FIELD:
            raise _err(path, f"[fields] {key!r}", "is not a field number 1-192")
        if not isinstance(spec, dict):
            raise _err(path, f"[fields] {n}", "must be a table, e.g. { format = \"n\", fixed = 6 }")
        _compile_field(d, n, spec, top, path)
        if d.fs[n].kind != K_BITMAP:
            d.defined[_word(n)] |= _bit(n)
            if n > 128:
                d.tertiary = 1
    d._keep.append(_TABLES)
    return 0

def available_dialects():
    """Names of the dialects shipped in native/dialects/."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(DIALECTS_DIR) if f.endswith(".toml"))


cdef str _dialect_path(object name_or_path):
    """The absolute path of the dialect file ``name_or_path`` names: a file of native/dialects/ or a TOML path."""
    key = os.fspath(name_or_path)
    if not isinstance(key, str):
        raise TypeError(f"expected a dialect name or path, got {type(name_or_path).__name__}")
    if os.sep in key or key.endswith(".toml") or (os.altsep and os.altsep in key):
        return os.path.abspath(key)
    path = os.path.join(DIALECTS_DIR, key + ".toml")
    if not os.path.exists(path):
        raise ValueError(f"unknown dialect {key!r}: expected one of {', '.join(available_dialects())} or a path to a .toml file")
    return path
