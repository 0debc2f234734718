"""EMV data (field 55) as BER-TLV: checked on arrival, walked without copies.

The rules are those of EMV 4.3 Book 3 Annex B (BER-TLV data objects) as a
payment switch meets them in field 55 (at most 255 bytes):

- a tag is one to four bytes: the first byte's low five bits all set mean
  that more bytes follow, each with b8 set except the last;
- a tag's class is application, context-specific or private: EMV defines no
  universal-class data objects, and refusing them also catches ASCII hex text
  sent instead of binary (it starts with ``0``-``9``, bytes 0x30-0x39);
- a length is one byte under 0x80, or 0x81 plus one byte, or 0x82 plus two;
  the indefinite form (0x80) and longer forms are refused;
- a constructed object (first tag byte b6 set) is a template whose value is
  itself a sequence of objects, nested at most ``MAX_DEPTH`` deep, each one
  ending exactly where its template ends;
- a primitive tag appears at most once in one template; templates may repeat
  (an issuer sends several 71 / 72 scripts);
- padding bytes 0x00 / 0xFF between objects are refused (EMV allows them in
  card records, not in a message's field 55), and so is anything after the
  last object.

Every error names the offset and the tag, never a value nor any other byte
(a tag byte of the wrong class, a length byte): field 55 carries card data
(tag 5A is the PAN, 57 the track 2 equivalent), and a bad length can make
the walk read a tag from inside a value. Padding is named as 0x00 or 0xFF,
the only two bytes that are padding.

Imports nothing from the rest of the project: callers add the field number.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint32_t

__all__ = ["BerError", "check", "decode", "encode", "objects", "MAX_DEPTH"]

cdef enum:
    _MAX_DEPTH = 8  # templates nest at most 7 deep: EMV uses 2

MAX_DEPTH = _MAX_DEPTH


class BerError(ValueError):
    """Bytes that are not well-formed EMV BER-TLV; ``offset`` is where the bad object starts."""

    def __init__(self, message, offset=None):
        ValueError.__init__(self, message)
        self.offset = offset

    def __reduce__(self):
        return (type(self), (self.args[0], self.offset))


cdef inline bint _hex_digit(uint8_t c) noexcept:
    return (0x30 <= c <= 0x39) or (0x41 <= c <= 0x46) or (0x61 <= c <= 0x66)


cdef bint _hex_text(const uint8_t *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    if n < 2 or n % 2:
        return False
    for i in range(n):
        if not _hex_digit(p[i]):
            return False
    return True


cdef object _fail(const uint8_t *p, Py_ssize_t n, str message, Py_ssize_t offset):
    # Hex text is the commonest vendor bug: say so rather than name the first
    # byte that happened to break a rule.
    if _hex_text(p, n):
        raise BerError(
            f"{n} bytes of ASCII hex digits at offset 0: expected binary BER-TLV, not hex text", 0)
    raise BerError(message, offset)


cdef object _walk(const uint8_t *p, Py_ssize_t n, bint tree, list spans):
    """Check all of p[0:n]; return the tree (``tree``) and/or fill ``spans`` with top-level objects."""
    cdef uint32_t local[128]
    cdef uint32_t *seen = local  # primitive tags of the open templates, innermost last
    if n // 2 >= 128:  # an object takes 2 bytes at least
        seen = <uint32_t *>PyMem_Malloc((n // 2 + 1) * sizeof(uint32_t))
        if seen == NULL:
            raise MemoryError()
    try:
        return _walk_into(p, n, tree, spans, seen)
    finally:
        if seen != local:
            PyMem_Free(seen)


cdef object _walk_into(const uint8_t *p, Py_ssize_t n, bint tree, list spans, uint32_t *seen):
    cdef Py_ssize_t ends[_MAX_DEPTH]
    cdef Py_ssize_t first[_MAX_DEPTH]  # where each open template's tags start in seen
    cdef Py_ssize_t i = 0, start, size = 0, limit, vstart, nseen = 0, k
    cdef int depth = 0, ntag
    cdef uint32_t tag
    cdef uint8_t b
    cdef bint constructed
    cdef list levels = [[]] if tree else None  # per depth: the list being filled
    ends[0] = n
    first[0] = 0
    while True:
        while depth > 0 and i == ends[depth]:
            if tree:
                levels.pop()
            nseen = first[depth]
            depth -= 1
        limit = ends[depth]
        if i == limit:
            break
        start = i
        b = p[i]
        i += 1
        if b == 0x00 or b == 0xFF:
            _fail(p, n, f"byte 0x{b:02X} at offset {start} is padding, not a tag", start)
        if (b & 0xC0) == 0:
            _fail(p, n, f"tag byte at offset {start} is of the universal class, its top two bits 0 "
                        f"(EMV tags are application, context-specific or private)", start)
        constructed = (b & 0x20) != 0
        tag = b
        ntag = 1
        if (b & 0x1F) == 0x1F:
            while True:
                if i >= limit:
                    _fail(p, n, f"{_where(depth)} ends at offset {limit} inside the tag at offset {start}", start)
                b = p[i]
                i += 1
                tag = (tag << 8) | b
                ntag += 1
                if not (b & 0x80):
                    break
                if ntag == 4:
                    _fail(p, n, f"tag at offset {start} is longer than 4 bytes", start)
        if i >= limit:
            _fail(p, n, f"tag 0x{tag:X} at offset {start} has no length", start)
        b = p[i]
        i += 1
        if b < 0x80:
            size = b
        elif b == 0x81 or b == 0x82:
            if i + (b & 0x7F) > limit:
                _fail(p, n, f"{_where(depth)} ends at offset {limit} inside the length of tag 0x{tag:X} "
                            f"at offset {start}", start)
            if b == 0x81:
                size = p[i]
                i += 1
            else:
                size = (p[i] << 8) | p[i + 1]
                i += 2
        elif b == 0x80:
            _fail(p, n, f"tag 0x{tag:X} at offset {start} has the indefinite length 0x80, "
                        f"which EMV does not allow", start)
        else:
            _fail(p, n, f"tag 0x{tag:X} at offset {start} has a length byte over 0x82 at offset {i - 1} "
                        f"(expected under 0x80, 0x81 or 0x82)", start)
        if i + size > limit:
            _fail(p, n, f"tag 0x{tag:X} at offset {start} declares {size} bytes but {limit - i} remain"
                        f"{' in its template' if depth else ''}", start)
        vstart = i
        if depth == 0 and spans is not None:
            spans.append((tag, start, vstart + size))
        if constructed:
            if depth + 1 >= _MAX_DEPTH:
                _fail(p, n, f"template 0x{tag:X} at offset {start} is nested more than {_MAX_DEPTH - 1} deep",
                      start)
            if tree:
                children = []
                levels[depth].append((tag, children))
                levels.append(children)
            depth += 1
            ends[depth] = vstart + size
            first[depth] = nseen
        else:
            for k in range(first[depth], nseen):
                if seen[k] == tag:
                    _fail(p, n, f"tag 0x{tag:X} at offset {start} appears twice in {_where(depth)}", start)
            seen[nseen] = tag
            nseen += 1
            if tree:
                levels[depth].append((tag, PyBytes_FromStringAndSize(<const char *>p + vstart, size)))
            i = vstart + size
    return levels[0] if tree else None


cdef str _where(int depth):
    return "its template" if depth else "the data"


cdef bytes _as_bytes(data):
    if PyBytes_CheckExact(data):
        return <bytes>data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected bytes, got {type(data).__name__}")


def decode(data) -> list:
    """The objects of ``data`` as a list of ``(tag, value)``, tags as ints (0x9F26).

    A primitive object's value is bytes, a template's a list of the same shape.
    Raises :class:`BerError` unless all of ``data`` is well-formed.
    """
    cdef bytes b = _as_bytes(data)
    return _walk(<const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), True, None)


def check(data) -> None:
    """Raise :class:`BerError` unless all of ``data`` is well-formed (builds nothing)."""
    cdef bytes b = _as_bytes(data)
    _walk(<const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), False, None)


def objects(data) -> list:
    """The top-level objects of ``data`` as ``(tag, encoding)``: each one's own bytes, unchanged.

    All of ``data`` is checked first, as by :func:`decode`.
    """
    cdef bytes b = _as_bytes(data)
    cdef list spans = []
    _walk(<const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), False, spans)
    return [(tag, b[start:end]) for tag, start, end in spans]


cdef bint _valid_tag(tb):
    cdef Py_ssize_t k, last = len(tb) - 1
    if tb[0] == 0xFF or tb[0] == 0x00 or (tb[0] & 0xC0) == 0:
        return False
    if (tb[0] & 0x1F) == 0x1F:
        if last == 0 or last > 3 or tb[last] & 0x80:
            return False
        for k in range(1, last):
            if not (tb[k] & 0x80):
                return False
        return True
    return last == 0


def encode(items) -> bytes:
    """BER-TLV of ``[(tag, value)]`` as :func:`decode` returns it, lengths in their shortest form."""
    out = bytearray()
    _encode(items, out, 0)
    return bytes(out)


cdef _encode(items, bytearray out, int depth):
    if depth >= _MAX_DEPTH:
        raise ValueError(f"templates nested more than {_MAX_DEPTH - 1} deep")
    for tag, value in items:
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 < tag <= 0xFFFFFFFF:
            raise ValueError(f"tag {tag!r} is not an int 0x01-0xFFFFFFFF")
        tb = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
        if not _valid_tag(tb):
            raise ValueError(f"0x{tag:X} is not a valid EMV tag")
        if tb[0] & 0x20:
            if not isinstance(value, list):
                raise ValueError(f"template 0x{tag:X}: expected a list, got {type(value).__name__}")
            inner = bytearray()
            _encode(value, inner, depth + 1)
            value = inner
        elif not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(f"tag 0x{tag:X}: expected bytes, got {type(value).__name__}")
        size = len(value)
        out += tb
        if size < 0x80:
            out.append(size)
        elif size <= 0xFF:
            out += bytes((0x81, size))
        elif size <= 0xFFFF:
            out += bytes((0x82, size >> 8, size & 0xFF))
        else:
            raise ValueError(f"tag 0x{tag:X}: {size} bytes is more than 65535")
        out += value
