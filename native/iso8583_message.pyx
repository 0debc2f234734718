# distutils: extra_compile_args = -falign-loops=32
# The decode loops are a few bytes long: started on a 32-byte boundary they run
# as fast wherever the linker puts them (a terminal 0200 took 231 ns to decode
# instead of 208 while the field scan's loop straddled two 32-byte blocks).
"""An ISO 8583 message, and the decoding pass that makes one from bytes.

Decoding is lazy: ``_decode`` makes one pass over the bytes, reading the
bitmaps, parsing and checking every length prefix, and checking every
field's bytes against its character class, and records where each field
lies. A field's Python value is built when it is first read, then cached.
Every malformed input raises ``DecodeError`` from ``_decode`` itself: reading
a field of a decoded message never fails.

``native.iso8583.Dialect`` (``decode``, ``salvage``, ``new``) makes messages
and encodes them; this module knows a dialect only by its tables
(``DialectSpec``).

setup.py compiles with boundscheck=False and wraparound=False: every read of
the input is guarded by an explicit length check before it.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE, PyBytes_AS_STRING
from cpython.dict cimport PyDict_SetItem
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from native.iso8583_dialect cimport (
    F_XN, F_Z, K_BCD, K_BIN, K_BITMAP, K_TEXT, P_ASCII, P_BCD, P_EBCDIC, P_FIXED, TOP,
    DialectSpec, FieldSpec, _bit, _word, payswitch_clz64, payswitch_popcount64,
)
from native.iso8583_errors cimport (
    ECHO_MAX, _bad_bitmap, _bad_content, _bad_mti, _bad_prefix, _fail, _truncated, _truncated_field,
)

from native.iso8583_errors import DecodeError, EncodeError

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    bint PyUnicode_Check(object o)
    bint PyBytes_Check(object o)

cdef extern from *:
    dict _PyDict_NewPresized(Py_ssize_t minused)

__all__ = ["Message"]


cdef enum:
    MAX_MESSAGE = 65535   # largest message decode accepts: offsets are kept as uint16


# hex digit value of a byte, 0xFF if it is none
cdef uint8_t HEXVAL[256]
# BCD nibble -> character ('=' for the track 2 separator D)
cdef const char *NIBCHAR = b"0123456789ABC=EF"


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
# Decode


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
                    return _bad_prefix(fs, f, pos)
                cnt = cnt * 10 + c
        elif fs.pfx == P_BCD:
            for i in range(k):
                hi = q[i] >> 4
                lo = q[i] & 15
                if hi > 9 or lo > 9:
                    return _bad_prefix(fs, f, pos)
                cnt = cnt * 100 + hi * 10 + lo
        elif fs.pfx == P_EBCDIC:
            for i in range(k):
                c = q[i] - 0xF0
                if c > 9:
                    return _bad_prefix(fs, f, pos)
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
                return _bad_content(fs, f, pos, wire, cnt, i)
        if fs.fmt == F_XN and wire:
            c = dec[q[0]]
            if c != 67 and c != 68:
                return _bad_content(fs, f, pos, wire, cnt, 0)
            for i in range(1, wire):
                if <unsigned int>(dec[q[i]] - 48) > 9:
                    return _bad_content(fs, f, pos, wire, cnt, i)
    elif fs.kind == K_BCD:
        i = 0
        k = wire
        if cnt & 1:
            if fs.pad_right:
                k = wire - 1
                if (q[k] & 15) != fs.pad_nibble or not _nib_ok(fs.fmt, q[k] >> 4):
                    return _bad_content(fs, f, pos, wire, cnt, k)
            else:
                if (q[0] >> 4) != fs.pad_nibble or not _nib_ok(fs.fmt, q[0] & 15):
                    return _bad_content(fs, f, pos, wire, cnt, 0)
                i = 1
        while i < k:
            if not dec[q[i]]:
                return _bad_content(fs, f, pos, wire, cnt, i)
            i += 1
    m._dat[f] = <uint16_t>pos
    m._end[f] = <uint16_t>(pos + wire)
    m._cnt[f] = <uint16_t>cnt
    return pos + wire


cdef inline Py_ssize_t _read_bitmap(DialectSpec d, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos,
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
                return _bad_bitmap(which, pos, i)  # a secondary one may be the PAN, under a damaged primary
            v = (v << 4) | h
        out[0] = v
        return pos + 16
    if pos + 8 > size:
        return _truncated(size, f"the {which} bitmap", 8)
    for i in range(8):
        v = (v << 8) | buf[pos + i]
    out[0] = v
    return pos + 8


cdef Py_ssize_t _read_bitmaps(DialectSpec d, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos,
                              uint64_t *p0, uint64_t *p1, uint64_t *p2) except -1:
    cdef Py_ssize_t bitmap_at = pos
    pos = _read_bitmap(d, buf, size, pos, p0, "primary")
    if p0[0] & TOP:
        pos = _read_bitmap(d, buf, size, pos, p1, "secondary")
        if p1[0] & TOP:
            if not d.tertiary:
                _fail(
                    f"bitmap has field 65 set (a tertiary bitmap follows) but dialect {d.name} "
                    f"does not define fields 129-192", 65, bitmap_at
                )
            pos = _read_bitmap(d, buf, size, pos, p2, "tertiary")
    return pos


cdef Message _decode(DialectSpec d, bytes data, bint partial):
    """A message of dialect ``d`` from ``data``; ``partial``: what ``Dialect.salvage`` keeps of a bad one."""
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
    if d.mti_enc == P_BCD:
        if size < 2:
            _truncated(size, "the MTI", 2)
        for i in range(2):
            hi = buf[i] >> 4
            lo = buf[i] & 15
            if hi > 9 or lo > 9:
                _bad_mti(True, i)
            mti = mti * 100 + hi * 10 + lo
        pos = 2
    else:
        if size < 4:
            _truncated(size, "the MTI", 4)
        c = 48 if d.mti_enc == P_ASCII else 0xF0
        for i in range(4):
            lo = buf[i] - c
            if lo > 9:
                _bad_mti(False, i)
            mti = mti * 10 + lo
        pos = 4
    # bitmaps
    bitmap_at = pos
    if partial:
        try:
            pos = _read_bitmaps(d, buf, size, pos, &p0, &p1, &p2)
        except DecodeError:
            p0 = p1 = p2 = 0  # the MTI alone
    else:
        pos = _read_bitmaps(d, buf, size, pos, &p0, &p1, &p2)
    p0 &= ~TOP
    p1 &= ~TOP
    undefined = (p0 & ~d.defined[0]) | (p1 & ~d.defined[1]) | (p2 & ~d.defined[2])
    if undefined and not partial:
        for w, x in enumerate((p0 & ~d.defined[0], p1 & ~d.defined[1], p2 & ~d.defined[2])):
            if x:
                f = w * 64 + payswitch_clz64(x) + 1
                _fail(f"bitmap has field {f} set but dialect {d.name} does not define it", f, bitmap_at)
    m = Message.__new__(Message)
    m.dialect = d
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
                    if not (d.defined[w] & (TOP >> lz)):
                        raise DecodeError("undefined", f, pos)
                    pos = _scan_field(m, &d.fs[f], f, buf, size, pos)
                except DecodeError:
                    # Keep the fields in front of this one.
                    m._present[w] &= ~((TOP >> lz) | ((TOP >> lz) - 1))
                    for i in range(w + 1, 3):
                        m._present[i] = 0
                    m._modified = True
                    return m
            else:
                pos = _scan_field(m, &d.fs[f], f, buf, size, pos)
            last = f
    if pos != size:
        if partial:
            m._modified = True
            return m
        after = f"field {last}" if last else "the bitmap"
        _fail(f"{size - pos} extra bytes after {after} at offset {pos}", None, pos)
    return m


# ---------------------------------------------------------------------------
# Message and mapping keys


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
        return self.dialect.encode(self)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self.mti == other.mti and self.fields() == other.fields()

    __hash__ = None

    def __repr__(self):
        # Values are left out: they may hold a PAN, track data or a PIN block.
        return f"<Message {self.mti} ({self.dialect.name}) fields {self._numbers()}>"

    def __reduce__(self):
        # native.iso8583 imports this module, so it is imported here, on first use.
        from native.iso8583 import _rebuild

        return (_rebuild, (self.dialect.path, self.mti, self.fields()))
