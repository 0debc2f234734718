# C interface of native/iso8583_errors.pyx: the cold paths that raise DecodeError
# and EncodeError with a message naming the field, the offset and what was expected
# (a DecodeError never quotes the bytes it found).

from native.iso8583_dialect cimport FieldSpec

cdef enum:
    ECHO_MAX = 16         # characters of our own value that an EncodeError may quote (masked)

cdef str _unit(const FieldSpec *fs)
cdef int _fail(str message, object field, object offset) except -1
cdef int _truncated(Py_ssize_t size, str where, Py_ssize_t need) except -1
cdef int _truncated_field(Py_ssize_t size, int f, str what, Py_ssize_t need) except -1
cdef int _bad_prefix(const FieldSpec *fs, int f, Py_ssize_t pos) except -1
cdef int _bad_content(const FieldSpec *fs, int f, Py_ssize_t pos, Py_ssize_t wire,
                      Py_ssize_t cnt, Py_ssize_t bad) except -1
cdef int _bad_bitmap(str which, Py_ssize_t pos, Py_ssize_t bad) except -1
cdef int _bad_mti(bint bcd, Py_ssize_t bad) except -1
cdef int _bad_value(const FieldSpec *fs, int f, object value, Py_ssize_t bad) except -1
