"""ISO 8583 codec: dialects declared as data, compiled into C tables.

A dialect (the "packager" of other libraries) is a TOML file: the MTI and
bitmap encodings, and for every field its format, fixed or variable length,
length-prefix encoding, data encoding and maximum length. The schema is
documented at the top of ``native/dialects/terminal-87.toml``. ``dialect()``
loads a file once and compiles it into an array of ``FieldSpec`` structs
indexed by field number; decoding and encoding walk that array.

Decoding is lazy: ``Dialect.decode`` makes one pass over the bytes, reading
the bitmaps, parsing and checking every length prefix, and checking every
field's bytes against its character class, and records where each field
lies. A field's Python value is built when it is first read, then cached.
Every malformed input raises ``DecodeError`` from ``decode`` itself: reading
a field of a decoded message never fails.

Encoding an untouched decoded message returns the bytes it was decoded from;
a modified one copies the bytes of untouched fields and encodes the rest.

This module is the codec's interface and its encoder; everything public is
imported from here. The rest is in native/iso8583_dialect.pyx (dialect files
compiled into tables), native/iso8583_message.pyx (the message and the
decoding pass) and native/iso8583_errors.pyx (DecodeError, EncodeError and
their messages).

setup.py compiles with boundscheck=False and wraparound=False: every write
to the output buffer is preceded by a ``_reserve`` of its room.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from native.iso8583_dialect cimport (
    F_B, F_HEX, F_XN, K_BCD, K_BIN, K_NONE, K_TEXT, MAX_FIELD, NFIELDS, P_ASCII, P_BCD, P_EBCDIC, P_FIXED, TOP,
    DialectSpec, FieldSpec, _bit, _dialect_path, _load, _word, payswitch_clz64,
)
from native.iso8583_errors cimport _bad_value, _unit
from native.iso8583_message cimport Message, _decode, _field_number, _mapping_key, _parse_mti

# The codec's public names that live in the other modules, re-exported.
from native.iso8583_dialect import DIALECTS_DIR, available_dialects
from native.iso8583_errors import DecodeError, EncodeError

cdef extern from "Python.h":
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    bint PyUnicode_Check(object o)
    bint PyBytes_Check(object o)


__all__ = [
    "DecodeError",
    "EncodeError",
    "Dialect",
    "Message",
    "dialect",
    "available_dialects",
    "parse_tlv48",
    "build_tlv48",
]


# A cimport does not make Message a name of this module: Python code imports it from here.
globals()["Message"] = Message

cdef const char *HEXCHAR = b"0123456789ABCDEF"


# ---------------------------------------------------------------------------
# Output buffer: on the caller's stack, moved to the heap if it outgrows it.


cdef struct Writer:
    uint8_t *p
    Py_ssize_t n
    Py_ssize_t cap
    uint8_t *heap


cdef int _grow(Writer *w, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = w.cap * 2
    cdef uint8_t *h
    if cap < w.n + need:
        cap = w.n + need
    if w.heap == NULL:
        h = <uint8_t *>PyMem_Malloc(cap)
        if h == NULL:
            raise MemoryError()
        memcpy(h, w.p, w.n)
    else:
        h = <uint8_t *>PyMem_Realloc(w.heap, cap)
        if h == NULL:
            raise MemoryError()
    w.heap = h
    w.p = h
    w.cap = cap
    return 0


cdef inline int _reserve(Writer *w, Py_ssize_t need) except -1:
    if w.n + need > w.cap:
        return _grow(w, need)
    return 0


cdef inline void _put_bitmap(Writer *w, uint64_t v, bint hex) noexcept:
    cdef int i
    cdef uint8_t *o = w.p + w.n
    if hex:
        for i in range(16):
            o[i] = HEXCHAR[(v >> (60 - 4 * i)) & 15]
        w.n += 16
    else:
        for i in range(8):
            o[i] = (v >> (56 - 8 * i)) & 0xFF
        w.n += 8


cdef inline int _check_length(const FieldSpec *fs, int f, Py_ssize_t cnt) except -1:
    if fs.pfx == P_FIXED:
        if cnt != fs.max_len:
            raise EncodeError(f"field {f}: expected {fs.max_len} {_unit(fs)}, got {cnt}", f)
    elif cnt > fs.max_len:
        raise EncodeError(f"field {f}: length {cnt} exceeds maximum {fs.max_len}", f)
    return 0


cdef int _put_value(Dialect d, int f, object value, Writer *w) except -1:
    """Validate ``value`` against field ``f`` of ``d`` and append its encoding."""
    cdef const FieldSpec *fs = &d.fs[f]
    cdef const uint8_t *s
    cdef const uint8_t *tab
    cdef uint8_t *o
    cdef Py_ssize_t n, i, cnt, wire, k
    cdef unsigned int c
    cdef object keep
    if fs.kind == K_BIN:
        if PyBytes_Check(value):
            keep = value
        elif isinstance(value, (bytearray, memoryview)):
            keep = bytes(value)
        else:
            raise EncodeError(f"field {f}: expected bytes, got {type(value).__name__}", f)
        s = <const uint8_t *>PyBytes_AS_STRING(keep)
        cnt = PyBytes_GET_SIZE(keep)
        wire = cnt
        _check_length(fs, f, cnt)
    else:
        if not PyUnicode_Check(value):
            raise EncodeError(f"field {f}: expected str, got {type(value).__name__}", f)
        cnt = PyUnicode_GET_LENGTH(value)
        _check_length(fs, f, cnt)
        if not PyUnicode_IS_ASCII(value):
            for i in range(cnt):
                if ord(value[i]) > 127:
                    return _bad_value(fs, f, value, i)
        s = <const uint8_t *>PyUnicode_DATA(value)
        tab = fs.ok
        for i in range(cnt):
            if not tab[s[i]]:
                return _bad_value(fs, f, value, i)
        if fs.fmt == F_XN and cnt:
            if s[0] != 67 and s[0] != 68:  # 'C', 'D'
                return _bad_value(fs, f, value, 0)
            for i in range(1, cnt):
                if <unsigned int>(s[i] - 48) > 9:
                    return _bad_value(fs, f, value, i)
        wire = (cnt + 1) >> 1 if fs.kind == K_BCD else cnt
    _reserve(w, fs.pfx_bytes + wire)
    o = w.p + w.n
    # length prefix
    if fs.pfx != P_FIXED:
        k = fs.pfx_bytes
        if fs.pfx == P_ASCII or fs.pfx == P_EBCDIC:
            c = 48 if fs.pfx == P_ASCII else 0xF0
            n = cnt
            for i in range(k - 1, -1, -1):
                o[i] = c + n % 10
                n = n // 10
        elif fs.pfx == P_BCD:
            n = cnt
            for i in range(k - 1, -1, -1):
                o[i] = (n % 10) | (((n // 10) % 10) << 4)
                n = n // 100
        else:
            n = cnt
            for i in range(k - 1, -1, -1):
                o[i] = n & 0xFF
                n = n >> 8
        o += k
    # data
    if fs.kind == K_BCD:
        _pack_bcd(fs, s, cnt, o)
    elif fs.kind == K_TEXT and fs.translate:
        tab = fs.enc
        for i in range(cnt):
            o[i] = tab[s[i]]
    else:
        memcpy(o, s, wire)
    w.n += fs.pfx_bytes + wire
    return 0


cdef inline uint8_t _nib(uint8_t c) noexcept nogil:
    # '0'..'9' -> 0..9; '=' and 'D' (track 2 separator) -> 0xD
    if c <= 57:
        return c - 48 if c >= 48 else 0xD
    return 0xD


cdef void _pack_bcd(const FieldSpec *fs, const uint8_t *s, Py_ssize_t cnt, uint8_t *o) noexcept:
    cdef Py_ssize_t i = 0, j = 0
    if cnt & 1:
        if fs.pad_right:
            while i + 1 < cnt:
                o[j] = (_nib(s[i]) << 4) | _nib(s[i + 1])
                i += 2
                j += 1
            o[j] = (_nib(s[i]) << 4) | fs.pad_nibble
            return
        o[0] = (fs.pad_nibble << 4) | _nib(s[0])
        i = 1
        j = 1
    while i < cnt:
        o[j] = (_nib(s[i]) << 4) | _nib(s[i + 1])
        i += 2
        j += 1


# ---------------------------------------------------------------------------


@cython.final
cdef class Dialect(DialectSpec):
    """A compiled dialect. Get one with ``dialect(name_or_path)``."""

    def __init__(self, *args, **kwargs):
        raise TypeError("use native.iso8583.dialect(name_or_path) to get a Dialect")

    def __repr__(self):
        return f"<Dialect {self.name!r} from {self.path!r}>"

    def __reduce__(self):
        return (dialect, (self.path,))

    def decode(self, data) -> Message:
        """Decode one message (bytes, bytearray or memoryview); raise DecodeError if malformed."""
        if not PyBytes_CheckExact(data):
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError(f"expected bytes, got {type(data).__name__}")
        return _decode(self, <bytes>data, False)

    def salvage(self, data) -> Message:
        """What can still be read of a message ``decode`` refused, for an answer that echoes it.

        The MTI and the fields in front of the first one that is malformed or
        not defined by the dialect; those fields passed the checks ``decode``
        makes. Raises DecodeError only when the MTI itself can't be read.
        """
        if not PyBytes_CheckExact(data):
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError(f"expected bytes, got {type(data).__name__}")
        return _decode(self, <bytes>data, True)

    def encode(self, msg) -> bytes:
        """Encode a Message (of any dialect) or a mapping {"mti": ..., n: value}."""
        if isinstance(msg, Message):
            return self._encode_message(<Message>msg)
        return self._encode_mapping(msg)

    def new(self, mti, fields=None) -> Message:
        """A new message of this dialect with MTI ``mti`` and the given fields."""
        cdef Message m = Message.__new__(Message)
        m.dialect = self
        m._mti = _parse_mti(mti)
        m._modified = True
        cdef int f
        if fields is not None:
            for key, value in fields.items():
                f = _mapping_key(key)
                if f == 0 or f == 1 or f == 65:
                    raise EncodeError(f"field {key!r} is not a data field", None)
                m._store(f, value)
        return m

    cdef bytes _encode_message(self, Message m):
        cdef Writer w
        cdef uint8_t stack[2048]
        cdef uint64_t p0, p1, p2, x, undefined
        cdef int wd, lz, f
        cdef bint same = m.dialect is self
        cdef const FieldSpec *sfs
        cdef Py_ssize_t start, n
        cdef object value
        if same and not m._modified and m._raw is not None:
            return m._raw
        if m._mti < 0:
            raise EncodeError("MTI is not set", None)
        p0 = m._present[0]
        p1 = m._present[1]
        p2 = m._present[2]
        undefined = (p0 & ~self.defined[0]) | (p1 & ~self.defined[1]) | (p2 & ~self.defined[2])
        if undefined:
            _raise_undefined(self, p0, p1, p2)
        w.p = stack
        w.n = 0
        w.cap = sizeof(stack)
        w.heap = NULL
        try:
            _put_header(self, &w, m._mti, p0, p1, p2)
            for wd in range(3):
                x = m._present[wd]
                while x:
                    lz = payswitch_clz64(x)
                    x ^= TOP >> lz
                    f = (wd << 6) + lz + 1
                    if m._raw is not None and not (m._dirty[wd] & (TOP >> lz)):
                        sfs = &m.dialect.fs[f]
                        if same or sfs.sig == self.fs[f].sig:
                            start = m._dat[f] - sfs.pfx_bytes
                            n = m._end[f] - start
                            _reserve(&w, n)
                            memcpy(w.p + w.n, m._buf + start, n)
                            w.n += n
                            continue
                    value = m._value(f)
                    if not same:
                        value = _convert(m.dialect.fs[f].fmt, self.fs[f].fmt, f, value)
                    _put_value(self, f, value, &w)
            return PyBytes_FromStringAndSize(<const char *>w.p, w.n)
        finally:
            if w.heap != NULL:
                PyMem_Free(w.heap)

    cdef bytes _encode_mapping(self, object mapping):
        cdef Writer w
        cdef uint8_t stack[2048]
        cdef PyObject *vals[NFIELDS]
        cdef uint64_t present[3]
        cdef uint64_t x, undefined
        cdef PyObject *k
        cdef PyObject *v
        cdef Py_ssize_t it = 0
        cdef int mti = -1, f, wd, lz
        cdef object key
        if not isinstance(mapping, dict):
            if not hasattr(mapping, "items"):
                raise TypeError(f"expected a Message or a mapping, got {type(mapping).__name__}")
            mapping = dict(mapping.items())
        present[0] = present[1] = present[2] = 0
        while PyDict_Next(mapping, &it, &k, &v):
            key = <object>k
            f = _field_number(key)
            if f < 0:
                if key == "mti" or key == "t":
                    if mti >= 0:
                        raise EncodeError("MTI given twice (keys 'mti' and 't')", None)
                    mti = _parse_mti(<object>v)
                    continue
                f = _mapping_key(key)
                if f == 0:
                    continue
            if f == 1 or f == 65:
                continue  # bitmaps are computed from the fields present
            if present[_word(f)] & _bit(f):
                raise EncodeError(f"field {f} given twice", f)
            vals[f] = v
            present[_word(f)] |= _bit(f)
        if mti < 0:
            raise EncodeError("MTI is missing (key 'mti' or 't')", None)
        undefined = (present[0] & ~self.defined[0]) | (present[1] & ~self.defined[1]) | (present[2] & ~self.defined[2])
        if undefined:
            _raise_undefined(self, present[0], present[1], present[2])
        w.p = stack
        w.n = 0
        w.cap = sizeof(stack)
        w.heap = NULL
        try:
            _put_header(self, &w, mti, present[0], present[1], present[2])
            for wd in range(3):
                x = present[wd]
                while x:
                    lz = payswitch_clz64(x)
                    x ^= TOP >> lz
                    f = (wd << 6) + lz + 1
                    _put_value(self, f, <object>vals[f], &w)
            return PyBytes_FromStringAndSize(<const char *>w.p, w.n)
        finally:
            if w.heap != NULL:
                PyMem_Free(w.heap)


cdef object _convert(uint8_t src, uint8_t dst, int f, object value):
    """A value of a field of one dialect for the same field of another: binary data as
    bytes (format b) or as hex text (format hex) converts between the two."""
    if src == F_B and dst == F_HEX:
        return value.hex().upper()
    if src == F_HEX and dst == F_B:
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise EncodeError(f"field {f}: hex text of odd length cannot become bytes", f) from None
    return value


cdef int _raise_undefined(Dialect d, uint64_t p0, uint64_t p1, uint64_t p2) except -1:
    cdef int f
    cdef uint64_t words[3]
    words[0] = p0
    words[1] = p1
    words[2] = p2
    for f in range(2, MAX_FIELD + 1):
        if (words[_word(f)] & _bit(f)) and d.fs[f].kind == K_NONE:
            raise EncodeError(f"field {f} is not defined in dialect {d.name}", f)
    return 0


cdef int _put_header(Dialect d, Writer *w, int mti, uint64_t p0, uint64_t p1, uint64_t p2) except -1:
    cdef uint8_t *o
    cdef int i
    if p2:
        p1 |= TOP
    if p1:
        p0 |= TOP
    _reserve(w, 4 + 3 * 16)
    o = w.p + w.n
    if d.mti_enc == P_BCD:
        o[0] = ((mti // 1000) << 4) | ((mti // 100) % 10)
        o[1] = (((mti // 10) % 10) << 4) | (mti % 10)
        w.n += 2
    else:
        for i in range(3, -1, -1):
            o[i] = (48 if d.mti_enc == P_ASCII else 0xF0) + mti % 10
            mti = mti // 10
        w.n += 4
    _put_bitmap(w, p0, d.bitmap_hex)
    if p0 & TOP:
        _put_bitmap(w, p1, d.bitmap_hex)
        if p1 & TOP:
            _put_bitmap(w, p2, d.bitmap_hex)
    return 0


# ---------------------------------------------------------------------------
# Dialects: one per file


cdef dict _DIALECTS = {}


def dialect(name_or_path) -> Dialect:
    """The dialect named ``name_or_path`` (a file of native/dialects/) or loaded from a TOML path.

    Loaded once and cached; a malformed file raises ValueError naming the file,
    the key and what is wrong.
    """
    d = _DIALECTS.get(name_or_path)
    if d is not None:
        return d
    path = _dialect_path(name_or_path)
    d = _DIALECTS.get(path)
    if d is None:
        d = Dialect.__new__(Dialect)
        _load(<Dialect>d, path)
        _DIALECTS[path] = d
    _DIALECTS[name_or_path] = d
    return d


def _rebuild(path, mti, fields):
    # Message.__reduce__: a message is pickled as its dialect's path, its MTI and its fields.
    return dialect(path).new(mti, fields)


# ---------------------------------------------------------------------------
# Field 48 TLV (spec section 4); field 55 (EMV BER-TLV) is native.emv


def parse_tlv48(value) -> dict:
    """Field 48 as {tag: value}: a sequence of 2-character tag, 3-digit length, value."""
    cdef Py_ssize_t i = 0, n, size
    cdef dict out = {}
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    n = len(value)
    while i < n:
        if n - i < 5:
            raise DecodeError(
                f"field 48 TLV: {n - i} characters at offset {i} are too few for a tag and a 3-digit length", 48, i
            )
        tag = value[i:i + 2]
        length = value[i + 2:i + 5]
        if not (tag.isascii() and tag.isalnum()):
            # Never quoted: field 48 carries wallet payment codes and city-card data.
            raise DecodeError(f"field 48 TLV: the tag at offset {i} is not 2 letters or digits", 48, i)
        if not (length.isascii() and length.isdigit()):
            raise DecodeError(f"field 48 TLV: tag at offset {i} has a length that is not 3 digits", 48, i)
        size = int(length)
        if i + 5 + size > n:
            raise DecodeError(
                f"field 48 TLV: the tag at offset {i} declares {size} characters but {n - i - 5} remain", 48, i
            )
        if tag in out:
            raise DecodeError(f"field 48 TLV: the tag at offset {i} appears a second time", 48, i)
        out[tag] = value[i + 5:i + 5 + size]
        i += 5 + size
    return out


def build_tlv48(mapping) -> str:
    """Field 48 from {tag: value}, in the mapping's order."""
    parts = []
    for tag, value in mapping.items():
        if not isinstance(tag, str) or len(tag) != 2 or not (tag.isascii() and tag.isalnum()):
            raise EncodeError(f"field 48 TLV: tag {tag!r} is not 2 letters or digits", 48)
        if not isinstance(value, str):
            raise EncodeError(f"field 48 TLV: tag {tag}: expected str, got {type(value).__name__}", 48)
        if len(value) > 999:
            raise EncodeError(f"field 48 TLV: tag {tag}: length {len(value)} exceeds maximum 999", 48)
        parts.append(f"{tag}{len(value):03d}")
        parts.append(value)
    return "".join(parts)

