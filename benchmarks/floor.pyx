# cython: language_level=3
"""The floor for decoding a terminal 0200: the least work any decoder must do.

``slice_fields`` knows the terminal-87 layout of the primary-bitmap fields by
heart, walks the bitmap, reads the LL/LLL prefixes and slices every field
out of the bytes into a dict of str (text) and bytes (binary), with no
checking at all: no bounds, no digits, no lengths against maxima. It exists
only to be measured against ``native.iso8583`` decoding the same message and
reading all its fields (benchmarks/test_codec.py); nothing else may use it.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeLatin1

# Per field 1..64 of terminal-87 (pyiso8583 default): prefix digits (0 =
# fixed), fixed length, binary. Field 1 is the secondary bitmap, which a
# terminal 0200 does not have, so it is not handled.
cdef unsigned char PREFIX[65]
cdef unsigned short SIZE[65]
cdef unsigned char BINARY[65]


cdef void _layout(int n, int prefix, int size, int binary):
    PREFIX[n] = prefix
    SIZE[n] = size
    BINARY[n] = binary


cdef void _load_layout():
    cdef int n
    for n in range(65):
        _layout(n, 0, 0, 0)
    for n, size in ((3, 6), (4, 12), (5, 12), (6, 12), (7, 10), (8, 8), (9, 8), (10, 8), (11, 6),
                    (12, 6), (13, 4), (14, 4), (15, 4), (16, 4), (17, 4), (18, 4), (19, 3), (20, 3),
                    (21, 3), (22, 3), (23, 3), (24, 3), (25, 2), (26, 2), (27, 1), (28, 9), (29, 9),
                    (30, 9), (31, 9), (37, 12), (38, 6), (39, 2), (40, 3), (41, 8), (42, 15),
                    (43, 40), (49, 3), (50, 3), (51, 3), (53, 16)):
        _layout(n, 0, size, 0)
    for n in (2, 32, 33, 34, 35, 44, 45):
        _layout(n, 2, 0, 0)
    for n in (36, 46, 47, 48, 54, 56, 57, 58, 59, 60, 61, 62, 63):
        _layout(n, 3, 0, 0)
    _layout(52, 0, 8, 1)
    _layout(64, 0, 8, 1)
    _layout(55, 3, 0, 1)


_load_layout()


def slice_fields(bytes data):
    """{"mti": str, n: str | bytes} of a primary-bitmap-only terminal-87 message."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef const char *c = PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = 12, size
    cdef int n, k, prefix
    cdef unsigned char byte
    cdef dict fields = {"mti": PyUnicode_DecodeLatin1(c, 4, NULL)}
    for n in range(2, 65):
        byte = p[4 + (n - 1) // 8]
        if not (byte >> (7 - (n - 1) % 8)) & 1:
            continue
        prefix = PREFIX[n]
        if prefix:
            size = 0
            for k in range(prefix):
                size = size * 10 + (p[pos + k] - 48)
            pos += prefix
        else:
            size = SIZE[n]
        if BINARY[n]:
            fields[n] = PyBytes_FromStringAndSize(c + pos, size)
        else:
            fields[n] = PyUnicode_DecodeLatin1(c + pos, size, NULL)
        pos += size
    return fields
