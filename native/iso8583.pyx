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

setup.py compiles with boundscheck=False and wraparound=False: every read of
the input is guarded by an explicit length check before it.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.long cimport PyLong_CheckExact, PyLong_AsLongAndOverflow
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import os
import tomllib

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    bint PyUnicode_Check(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_Check(object o)

cdef extern from *:
    """
    /* Value of an exact int that fits one digit (0 <= v < 2**30), else -1. */
    static inline long payswitch_small_int(PyObject *o) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) return (long)PyUnstable_Long_CompactValue((PyLongObject *)o);
        return -1;
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size == 1) return (long)((PyLongObject *)o)->ob_digit[0];
        return size == 0 ? 0 : -1;
    #endif
    }
    static inline int payswitch_clz64(unsigned long long x) { return __builtin_clzll(x); }
    static inline int payswitch_popcount64(unsigned long long x) { return __builtin_popcountll(x); }
    """
    int payswitch_clz64(uint64_t x) nogil
    long payswitch_small_int(object o)
    dict _PyDict_NewPresized(Py_ssize_t minused)
    int payswitch_popcount64(uint64_t x) nogil


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


class DecodeError(ValueError):
    """Bytes that are not a valid message of the dialect (the peer's fault).

    ``field`` is the field number (None for the MTI, a bitmap or the message
    as a whole) and ``offset`` the byte offset the message names.
    """

    def __init__(self, message, field=None, offset=None):
        ValueError.__init__(self, message)
        self.field = field
        self.offset = offset

    def __reduce__(self):
        return (type(self), (self.args[0], self.field, self.offset))


class EncodeError(ValueError):
    """Values that the dialect cannot encode (our own fault).

    ``field`` is the field number (None for the MTI).
    """

    def __init__(self, message, field=None):
        ValueError.__init__(self, message)
        self.field = field
        self.offset = None

    def __reduce__(self):
        return (type(self), (self.args[0], self.field))


cdef enum:
    MAX_MESSAGE = 65535   # largest message decode accepts: offsets are kept as uint16
    ECHO_MAX = 16         # bytes of a field that an error message may quote

cdef uint64_t TOP = (<uint64_t>1) << 63


cdef inline int _word(int f) noexcept nogil:
    return (f - 1) >> 6


cdef inline uint64_t _bit(int f) noexcept nogil:
    return (<uint64_t>1) << (63 - ((f - 1) & 63))


# hex digit value of a byte, 0xFF if it is none
cdef uint8_t HEXVAL[256]
# BCD nibble -> character ('=' for the track 2 separator D)
cdef const char *NIBCHAR = b"0123456789ABC=EF"
cdef const char *HEXCHAR = b"0123456789ABCDEF"


cdef void _init_tables():
    cdef int i
    for i in range(256):
        HEXVAL[i] = 0xFF
    for i in range(10):
        HEXVAL[48 + i] = i
    for i in range(6):
        HEXVAL[65 + i] = 10 + i
        HEXVAL[97 + i] = 10 + i


_init_tables()


# Interned MTI strings, built on first use.
cdef PyObject *_MTI_STR[10000]


cdef object _mti_str(int v):
    cdef object s
    if _MTI_STR[v] == NULL:
        s = "%04d" % v
        Py_INCREF(s)
        _MTI_STR[v] = <PyObject *>s
    return <object>_MTI_STR[v]


cdef int _parse_mti(object value) except -2:
    """The MTI as 0..9999 from a str of 4 digits."""
    cdef const uint8_t *s
    cdef int v = 0, i
    cdef unsigned int c
    if not PyUnicode_Check(value):
        raise EncodeError(f"MTI: expected str, got {type(value).__name__}", None)
    if PyUnicode_IS_ASCII(value) and PyUnicode_GET_LENGTH(value) == 4:
        s = <const uint8_t *>PyUnicode_DATA(value)
        for i in range(4):
            c = s[i] - 48
            if c > 9:
                break
            v = v * 10 + c
        else:
            return v
    raise EncodeError(f"MTI: expected 4 digits, got {value[:ECHO_MAX]!r}", None)


# ---------------------------------------------------------------------------
# Error messages (cold paths)


cdef str _echo(const uint8_t *p, Py_ssize_t n):
    if n > ECHO_MAX:
        return repr(PyBytes_FromStringAndSize(<const char *>p, ECHO_MAX)) + "..."
    return repr(PyBytes_FromStringAndSize(<const char *>p, n))


cdef dict _FMT_WORDS = {
    F_N: ("digit", "digits"),
    F_A: ("alphabetic character", "alphabetic characters"),
    F_AN: ("alphanumeric character", "alphanumeric characters"),
    F_ANS: ("printable character", "printable characters"),
    F_AS: ("alphabetic or special character", "alphabetic or special characters"),
    F_NS: ("numeric or special character", "numeric or special characters"),
    F_Z: ("track data character (digits, '=', 'D')", "track data characters (digits, '=', 'D')"),
    F_HEX: ("hex digit", "hex digits"),
    F_B: ("byte", "bytes"),
}


cdef str _describe(const FieldSpec *fs, Py_ssize_t cnt):
    """What a field of ``cnt`` units must hold, e.g. '12 digits'."""
    if fs.fmt == F_XN:
        return f"'C' or 'D' and {cnt - 1} digit{'' if cnt == 2 else 's'}"
    one, many = _FMT_WORDS[fs.fmt]
    if fs.kind == K_BCD:
        if fs.fmt == F_Z:
            return f"{cnt} BCD track digit{'' if cnt == 1 else 's'} (0-9, D)"
        return f"{cnt} BCD digit{'' if cnt == 1 else 's'}"
    text = f"{cnt} {one if cnt == 1 else many}"
    if fs.translate:
        text += " (EBCDIC)"
    return text


cdef str _unit(const FieldSpec *fs):
    if fs.kind == K_BIN:
        return "bytes"
    if fs.fmt == F_N or fs.kind == K_BCD:
        return "digits"
    return "characters"


cdef int _fail(str message, object field, object offset) except -1:
    raise DecodeError(message, field, offset)


cdef int _truncated(Py_ssize_t size, str where, Py_ssize_t need) except -1:
    raise DecodeError(f"message ends at offset {size} inside {where} (needs {need} bytes)", None, size)


cdef int _truncated_field(Py_ssize_t size, int f, str what, Py_ssize_t need) except -1:
    raise DecodeError(f"message ends at offset {size} inside {what}field {f} (needs {need} bytes)", f, size)


cdef int _bad_prefix(const FieldSpec *fs, int f, const uint8_t *q, Py_ssize_t pos) except -1:
    cdef str kind
    cdef int digits
    if fs.pfx == P_BCD:
        kind, digits = "BCD", fs.pfx_bytes * 2
    elif fs.pfx == P_EBCDIC:
        kind, digits = "EBCDIC", fs.pfx_bytes
    else:
        kind, digits = "ASCII", fs.pfx_bytes
    raise DecodeError(
        f"field {f}: length prefix {_echo(q, fs.pfx_bytes)} at offset {pos} is not {digits} {kind} digits", f, pos
    )


cdef int _bad_content(const FieldSpec *fs, int f, const uint8_t *q, Py_ssize_t pos, Py_ssize_t wire,
                      Py_ssize_t cnt, Py_ssize_t bad) except -1:
    if fs.sensitive:
        found = f"an invalid byte at offset {pos + bad} (value not shown)"
    else:
        found = _echo(q, wire)
    raise DecodeError(f"field {f}: expected {_describe(fs, cnt)} at offset {pos}, found {found}", f, pos)


cdef int _bad_value(const FieldSpec *fs, int f, object value, Py_ssize_t bad) except -1:
    if fs.sensitive:
        found = f"an invalid character at index {bad} (value not shown)"
    elif len(value) > ECHO_MAX:
        found = repr(value[:ECHO_MAX]) + "..."
    else:
        found = repr(value)
    raise EncodeError(f"field {f}: expected {_describe(fs, len(value))}, found {found}", f)


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


cdef inline bint _nib_ok(uint8_t fmt, uint8_t nib) noexcept nogil:
    return nib <= 9 or (fmt == F_Z and nib == 0xD)


# ---------------------------------------------------------------------------
# Field scan (decode)


cdef inline Py_ssize_t _scan_field(Message m, const FieldSpec *fs, int f, const uint8_t *buf,
                                   Py_ssize_t size, Py_ssize_t pos) except -1:
    """Check field ``f`` at ``pos`` and record where it lies; return the offset after it."""
    cdef Py_ssize_t cnt, wire, i, k
    cdef const uint8_t *q
    cdef const uint8_t *dec
    cdef unsigned int c, hi, lo
    if fs.pfx == P_FIXED:
        cnt = fs.max_len
    else:
        k = fs.pfx_bytes
        if pos + k > size:
            return _truncated_field(size, f, "the length prefix of ", k)
        q = buf + pos
        cnt = 0
        if fs.pfx == P_ASCII:
            for i in range(k):
                c = q[i] - 48
                if c > 9:
                    return _bad_prefix(fs, f, q, pos)
                cnt = cnt * 10 + c
        elif fs.pfx == P_BCD:
            for i in range(k):
                hi = q[i] >> 4
                lo = q[i] & 15
                if hi > 9 or lo > 9:
                    return _bad_prefix(fs, f, q, pos)
                cnt = cnt * 100 + hi * 10 + lo
        elif fs.pfx == P_EBCDIC:
            for i in range(k):
                c = q[i] - 0xF0
                if c > 9:
                    return _bad_prefix(fs, f, q, pos)
                cnt = cnt * 10 + c
        else:
            for i in range(k):
                cnt = (cnt << 8) | q[i]
        if cnt > fs.max_len:
            return _fail(f"field {f}: declared length {cnt} exceeds maximum {fs.max_len}", f, pos)
        pos += k
    if fs.kind == K_BCD:
        wire = (cnt + 1) >> 1
    else:
        wire = cnt
    if pos + wire > size:
        return _truncated_field(size, f, "", wire)
    q = buf + pos
    dec = fs.dec
    if fs.kind == K_TEXT:
        for i in range(wire):
            if not dec[q[i]]:
                return _bad_content(fs, f, q, pos, wire, cnt, i)
        if fs.fmt == F_XN and wire:
            c = dec[q[0]]
            if c != 67 and c != 68:
                return _bad_content(fs, f, q, pos, wire, cnt, 0)
            for i in range(1, wire):
                if <unsigned int>(dec[q[i]] - 48) > 9:
                    return _bad_content(fs, f, q, pos, wire, cnt, i)
    elif fs.kind == K_BCD:
        i = 0
        k = wire
        if cnt & 1:
            if fs.pad_right:
                k = wire - 1
                if (q[k] & 15) != fs.pad_nibble or not _nib_ok(fs.fmt, q[k] >> 4):
                    return _bad_content(fs, f, q, pos, wire, cnt, k)
            else:
                if (q[0] >> 4) != fs.pad_nibble or not _nib_ok(fs.fmt, q[0] & 15):
                    return _bad_content(fs, f, q, pos, wire, cnt, 0)
                i = 1
        while i < k:
            if not dec[q[i]]:
                return _bad_content(fs, f, q, pos, wire, cnt, i)
            i += 1
    m._dat[f] = <uint16_t>pos
    m._end[f] = <uint16_t>(pos + wire)
    m._cnt[f] = <uint16_t>cnt
    return pos + wire


cdef inline Py_ssize_t _read_bitmap(Dialect d, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos,
                                    uint64_t *out, str which) except -1:
    cdef uint64_t v = 0
    cdef int i
    cdef uint8_t h
    if d.bitmap_hex:
        if pos + 16 > size:
            return _truncated(size, f"the {which} bitmap", 16)
        for i in range(16):
            h = HEXVAL[buf[pos + i]]
            if h > 15:
                return _fail(
                    f"{which} bitmap at offset {pos}: expected 16 hex digits, found {_echo(buf + pos, 16)}", None, pos
                )
            v = (v << 4) | h
        out[0] = v
        return pos + 16
    if pos + 8 > size:
        return _truncated(size, f"the {which} bitmap", 8)
    for i in range(8):
        v = (v << 8) | buf[pos + i]
    out[0] = v
    return pos + 8


cdef inline int _field_number(object key) noexcept:
    """1..192 for an int key in range, else -1."""
    cdef long v
    if PyLong_CheckExact(key):
        v = payswitch_small_int(key)
        if 1 <= v <= MAX_FIELD:
            return <int>v
    return -1


# ---------------------------------------------------------------------------


@cython.final
cdef class Dialect:
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
        return self._decode(<bytes>data, False)

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
        return self._decode(<bytes>data, True)

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

    def field_spec(self, n):
        """The spec of field ``n`` as a dict, or None if the dialect does not define it."""
        spec = self._info.get(n)
        return dict(spec) if spec is not None else None

    @property
    def defined_fields(self):
        """Data fields the dialect defines, ascending (bitmaps excluded)."""
        return tuple(sorted(n for n, s in self._info.items() if s["format"] != "bitmap"))

    cdef Message _decode(self, bytes data, bint partial):
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef const uint8_t *buf = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t pos = 0, bitmap_at
        cdef uint64_t p0 = 0, p1 = 0, p2 = 0, x, undefined
        cdef unsigned int c, hi, lo
        cdef int mti = 0, i, w, f, lz, last = 0
        cdef Message m
        if size > MAX_MESSAGE:
            raise DecodeError(f"message is {size} bytes, more than the {MAX_MESSAGE} this codec decodes", None, 0)
        # MTI
        if self.mti_enc == P_BCD:
            if size < 2:
                _truncated(size, "the MTI", 2)
            for i in range(2):
                hi = buf[i] >> 4
                lo = buf[i] & 15
                if hi > 9 or lo > 9:
                    _fail(f"MTI at offset 0: expected 4 BCD digits, found {_echo(buf, 2)}", None, 0)
                mti = mti * 100 + hi * 10 + lo
            pos = 2
        else:
            if size < 4:
                _truncated(size, "the MTI", 4)
            c = 48 if self.mti_enc == P_ASCII else 0xF0
            for i in range(4):
                lo = buf[i] - c
                if lo > 9:
                    _fail(f"MTI at offset 0: expected 4 digits, found {_echo(buf, 4)}", None, 0)
                mti = mti * 10 + lo
            pos = 4
        # bitmaps
        bitmap_at = pos
        if partial:
            try:
                pos = self._read_bitmaps(buf, size, pos, &p0, &p1, &p2)
            except DecodeError:
                p0 = p1 = p2 = 0  # the MTI alone
        else:
            pos = self._read_bitmaps(buf, size, pos, &p0, &p1, &p2)
        p0 &= ~TOP
        p1 &= ~TOP
        undefined = (p0 & ~self.defined[0]) | (p1 & ~self.defined[1]) | (p2 & ~self.defined[2])
        if undefined and not partial:
            for w, x in enumerate((p0 & ~self.defined[0], p1 & ~self.defined[1], p2 & ~self.defined[2])):
                if x:
                    f = w * 64 + payswitch_clz64(x) + 1
                    _fail(f"bitmap has field {f} set but dialect {self.name} does not define it", f, bitmap_at)
        m = Message.__new__(Message)
        m.dialect = self
        m._raw = data
        m._buf = buf
        m._mti = mti
        m._present[0] = p0
        m._present[1] = p1
        m._present[2] = p2
        for w in range(3):
            x = m._present[w]
            while x:
                lz = payswitch_clz64(x)
                x ^= TOP >> lz
                f = (w << 6) + lz + 1
                if partial:
                    try:
                        if not (self.defined[w] & (TOP >> lz)):
                            raise DecodeError("undefined", f, pos)
                        pos = _scan_field(m, &self.fs[f], f, buf, size, pos)
                    except DecodeError:
                        # Keep the fields in front of this one.
                        m._present[w] &= ~((TOP >> lz) | ((TOP >> lz) - 1))
                        for i in range(w + 1, 3):
                            m._present[i] = 0
                        m._modified = True
                        return m
                else:
                    pos = _scan_field(m, &self.fs[f], f, buf, size, pos)
                last = f
        if pos != size:
            if partial:
                m._modified = True
                return m
            after = f"field {last}" if last else "the bitmap"
            _fail(f"{size - pos} extra bytes after {after} at offset {pos}", None, pos)
        return m

    cdef Py_ssize_t _read_bitmaps(self, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos,
                                  uint64_t *p0, uint64_t *p1, uint64_t *p2) except -1:
        cdef Py_ssize_t bitmap_at = pos
        pos = _read_bitmap(self, buf, size, pos, p0, "primary")
        if p0[0] & TOP:
            pos = _read_bitmap(self, buf, size, pos, p1, "secondary")
            if p1[0] & TOP:
                if not self.tertiary:
                    _fail(
                        f"bitmap has field 65 set (a tertiary bitmap follows) but dialect {self.name} "
                        f"does not define fields 129-192", 65, bitmap_at
                    )
                pos = _read_bitmap(self, buf, size, pos, p2, "tertiary")
        return pos

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


cdef int _mapping_key(object key) except -1:
    """Field number of a mapping key: int or digit string; 0 for keys to skip."""
    cdef int f = _field_number(key)
    if f > 0:
        return f
    if isinstance(key, str):
        if key.isascii() and key.isdigit():
            f = _field_number(int(key))
            if f > 0:
                return f
        elif key == "p":
            return 0  # pyiso8583's primary bitmap: recomputed
        elif key == "h":
            raise EncodeError("this codec has no message header (key 'h')", None)
    elif isinstance(key, int) and not isinstance(key, bool):
        f = _field_number(int(key))
        if f > 0:
            return f
    text = repr(key)
    if len(text) > 40:
        text = text[:40] + "..."
    raise EncodeError(f"unknown key {text}: expected a field number 1-192, 'mti' or 't'", None)


# ---------------------------------------------------------------------------


@cython.final
@cython.no_gc
@cython.freelist(16)
cdef class Message:
    """One ISO 8583 message: an MTI and data fields, read and written like a mapping.

    ``msg[n]`` is a str for text fields and bytes for ``b`` fields. Bitmap
    fields (1 and 65) are derived from the fields present and not exposed.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("use Dialect.new() or Dialect.decode() to make a Message")

    def __dealloc__(self):
        cdef int w, lz
        cdef uint64_t x
        for w in range(3):
            x = self._cached[w]
            while x:
                lz = payswitch_clz64(x)
                x ^= TOP >> lz
                Py_XDECREF(self._cache[(w << 6) + lz + 1])

    cdef object _value(self, int f):
        """Value of present field ``f``, built from the raw bytes on first use."""
        cdef PyObject *c = self._cache[f]
        cdef const FieldSpec *fs
        cdef const uint8_t *q
        cdef const uint8_t *dec
        cdef uint8_t *o
        cdef Py_ssize_t wire, cnt, i, j
        cdef object v
        if c != NULL:
            return <object>c
        fs = &self.dialect.fs[f]
        q = self._buf + self._dat[f]
        wire = self._end[f] - self._dat[f]
        if fs.kind == K_TEXT:
            v = PyUnicode_New(wire, 127)
            o = <uint8_t *>PyUnicode_DATA(v)
            if fs.translate:
                dec = fs.dec
                for i in range(wire):
                    o[i] = dec[q[i]]
            else:
                memcpy(o, q, wire)
        elif fs.kind == K_BCD:
            cnt = self._cnt[f]
            v = PyUnicode_New(cnt, 127)
            o = <uint8_t *>PyUnicode_DATA(v)
            j = 0
            i = 0
            if cnt & 1 and not fs.pad_right:
                o[0] = NIBCHAR[q[0] & 15]
                j = 1
                i = 1
            while j + 1 < cnt:
                o[j] = NIBCHAR[q[i] >> 4]
                o[j + 1] = NIBCHAR[q[i] & 15]
                j += 2
                i += 1
            if j < cnt:
                o[j] = NIBCHAR[q[i] >> 4]
        else:
            v = PyBytes_FromStringAndSize(<const char *>q, wire)
        Py_INCREF(v)
        self._cache[f] = <PyObject *>v
        self._cached[_word(f)] |= _bit(f)
        return v

    cdef int _store(self, int f, object value) except -1:
        cdef const FieldSpec *fs = &self.dialect.fs[f]
        cdef int w = _word(f)
        cdef uint64_t b = _bit(f)
        if fs.kind == K_BIN:
            if not PyBytes_Check(value):
                if isinstance(value, (bytearray, memoryview)):
                    value = bytes(value)
                else:
                    raise EncodeError(f"field {f}: expected bytes, got {type(value).__name__}", f)
        elif fs.kind == K_TEXT or fs.kind == K_BCD:
            if not PyUnicode_Check(value):
                raise EncodeError(f"field {f}: expected str, got {type(value).__name__}", f)
        elif fs.kind == K_BITMAP:
            raise EncodeError(f"field {f} is a bitmap: it is set from the fields present", f)
        else:
            raise EncodeError(f"field {f} is not defined in dialect {self.dialect.name}", f)
        Py_INCREF(value)
        Py_XDECREF(self._cache[f])
        self._cache[f] = <PyObject *>value
        self._cached[w] |= b
        self._present[w] |= b
        self._dirty[w] |= b
        self._modified = True
        return 0

    cdef void _drop(self, int f):
        cdef int w = _word(f)
        cdef uint64_t b = _bit(f)
        Py_XDECREF(self._cache[f])
        self._cache[f] = NULL
        self._cached[w] &= ~b
        self._present[w] &= ~b
        self._dirty[w] &= ~b
        self._modified = True

    @property
    def mti(self) -> str:
        return _mti_str(self._mti)

    @mti.setter
    def mti(self, value):
        cdef int v = _parse_mti(value)
        if v != self._mti:
            self._mti = v
            self._modified = True

    def __getitem__(self, key):
        cdef int f = _field_number(key)
        if f > 0 and self._present[_word(f)] & _bit(f):
            return self._value(f)
        raise KeyError(key)

    def __setitem__(self, key, value):
        cdef int f = _field_number(key)
        if f < 0:
            raise KeyError(key)
        self._store(f, value)

    def __delitem__(self, key):
        cdef int f = _field_number(key)
        if f < 0 or not (self._present[_word(f)] & _bit(f)):
            raise KeyError(key)
        self._drop(f)

    def __contains__(self, key):
        cdef int f = _field_number(key)
        return f > 0 and (self._present[_word(f)] & _bit(f)) != 0

    def get(self, key, default=None):
        cdef int f = _field_number(key)
        if f > 0 and self._present[_word(f)] & _bit(f):
            return self._value(f)
        return default

    def __len__(self):
        return (payswitch_popcount64(self._present[0]) + payswitch_popcount64(self._present[1])
                + payswitch_popcount64(self._present[2]))

    def __iter__(self):
        return iter(self._numbers())

    cdef list _numbers(self):
        cdef list out = []
        cdef int w, lz
        cdef uint64_t x
        for w in range(3):
            x = self._present[w]
            while x:
                lz = payswitch_clz64(x)
                x ^= TOP >> lz
                out.append((w << 6) + lz + 1)
        return out

    def fields(self) -> dict:
        """{field number: value} of the data fields present, ascending."""
        cdef dict out = _PyDict_NewPresized(
            payswitch_popcount64(self._present[0]) + payswitch_popcount64(self._present[1])
            + payswitch_popcount64(self._present[2]))
        cdef int w, lz, f
        cdef uint64_t x
        for w in range(3):
            x = self._present[w]
            while x:
                lz = payswitch_clz64(x)
                x ^= TOP >> lz
                f = (w << 6) + lz + 1
                PyDict_SetItem(out, f, self._value(f))
        return out

    def keys(self):
        return self._numbers()

    def items(self):
        return list(self.fields().items())

    def values(self):
        return list(self.fields().values())

    def copy(self) -> Message:
        """An independent copy (sharing the decoded bytes, which are immutable)."""
        cdef Message m = Message.__new__(Message)
        cdef int w, lz
        cdef uint64_t x
        m.dialect = self.dialect
        m._raw = self._raw
        m._buf = self._buf
        m._mti = self._mti
        m._modified = self._modified
        memcpy(m._present, self._present, sizeof(self._present))
        memcpy(m._dirty, self._dirty, sizeof(self._dirty))
        memcpy(m._cached, self._cached, sizeof(self._cached))
        memcpy(m._dat, self._dat, sizeof(self._dat))
        memcpy(m._end, self._end, sizeof(self._end))
        memcpy(m._cnt, self._cnt, sizeof(self._cnt))
        for w in range(3):
            x = self._cached[w]
            while x:
                lz = payswitch_clz64(x)
                x ^= TOP >> lz
                Py_INCREF(<object>self._cache[(w << 6) + lz + 1])
                m._cache[(w << 6) + lz + 1] = self._cache[(w << 6) + lz + 1]
        return m

    def encode(self) -> bytes:
        """Encode in this message's own dialect."""
        return self.dialect._encode_message(self)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self.mti == other.mti and self.fields() == other.fields()

    __hash__ = None

    def __repr__(self):
        # Values are left out: they may hold a PAN, track data or a PIN block.
        return f"<Message {self.mti} ({self.dialect.name}) fields {self._numbers()}>"

    def __reduce__(self):
        return (_rebuild, (self.dialect.path, self.mti, self.fields()))


def _rebuild(path, mti, fields):
    return dialect(path).new(mti, fields)


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


def _compile_field(Dialect d, int n, dict spec, dict top, str path):
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


cdef Dialect _load(str path):
    cdef Dialect d = Dialect.__new__(Dialect)
    cdef int n
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as e:
        raise ValueError(f"{path}: cannot read dialect: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
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
    return d


cdef dict _DIALECTS = {}


def available_dialects():
    """Names of the dialects shipped in native/dialects/."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(DIALECTS_DIR) if f.endswith(".toml"))


def dialect(name_or_path) -> Dialect:
    """The dialect named ``name_or_path`` (a file of native/dialects/) or loaded from a TOML path.

    Loaded once and cached; a malformed file raises ValueError naming the file,
    the key and what is wrong.
    """
    d = _DIALECTS.get(name_or_path)
    if d is not None:
        return d
    key = os.fspath(name_or_path)
    if not isinstance(key, str):
        raise TypeError(f"expected a dialect name or path, got {type(name_or_path).__name__}")
    if os.sep in key or key.endswith(".toml") or (os.altsep and os.altsep in key):
        path = os.path.abspath(key)
    else:
        path = os.path.join(DIALECTS_DIR, key + ".toml")
        if not os.path.exists(path):
            raise ValueError(f"unknown dialect {key!r}: expected one of {', '.join(available_dialects())} or a path to a .toml file")
    d = _DIALECTS.get(path)
    if d is None:
        d = _load(path)
        _DIALECTS[path] = d
    _DIALECTS[name_or_path] = d
    return d


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

