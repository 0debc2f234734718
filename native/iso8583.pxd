# C interface of native/iso8583.pyx: a dialect compiled into a table of field
# specs, and a lazily decoded message. Other Cython modules may cimport these.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from cpython.ref cimport PyObject

cdef enum:
    MAX_FIELD = 192     # largest field number (tertiary bitmap: fields 129..192)
    NFIELDS = 193       # size of per-field tables, indexed by field number

cdef enum Kind:
    K_NONE = 0      # not defined in the dialect
    K_TEXT = 1      # characters, one byte each (ASCII or EBCDIC on the wire)
    K_BCD = 2       # digits packed two a byte (n, z)
    K_BIN = 3       # raw bytes
    K_BITMAP = 4    # field 1 / 65: a bitmap, managed by the codec

cdef enum Fmt:
    F_N = 1
    F_A = 2
    F_AN = 3
    F_ANS = 4
    F_AS = 5
    F_NS = 6
    F_Z = 7
    F_XN = 8
    F_HEX = 9
    F_B = 10

cdef enum Prefix:
    P_FIXED = 0
    P_ASCII = 1
    P_EBCDIC = 2
    P_BCD = 3
    P_BINARY = 4

ctypedef struct FieldSpec:
    uint8_t kind        # Kind
    uint8_t fmt         # Fmt
    uint8_t pfx         # Prefix
    uint8_t pfx_bytes   # width of the length prefix on the wire
    uint8_t pad_right   # BCD, odd count: pad nibble after the digits (else before)
    uint8_t pad_nibble  # BCD pad nibble value
    uint8_t sensitive   # never echo this field's bytes in an error
    uint8_t translate   # text: wire bytes are not ASCII (EBCDIC), map through dec/enc
    uint16_t max_len    # fixed length, or maximum count of a variable field
    uint32_t sig        # equal sig <=> same wire format (raw bytes can be copied)
    const uint8_t *dec  # wire byte -> ASCII char, 0 if not allowed (text, BCD: byte -> nonzero if valid)
    const uint8_t *ok   # ASCII char -> nonzero if allowed in a value (text and BCD)
    const uint8_t *enc  # ASCII char -> wire byte (text)


cdef class Dialect:
    cdef readonly str name
    cdef readonly str path
    cdef FieldSpec fs[NFIELDS]
    cdef uint8_t mti_enc        # Prefix values reused: P_ASCII, P_EBCDIC, P_BCD
    cdef uint8_t bitmap_hex     # bitmaps as 16 hex characters instead of 8 bytes
    cdef uint8_t tertiary       # the dialect defines fields 129..192
    cdef uint64_t defined[3]    # fields with a spec, bit (63 - (n-1) % 64) of word (n-1) // 64
    cdef list _keep             # objects the C tables point into
    cdef dict _info             # field number -> spec as a dict (introspection)

    cdef Message _decode(self, bytes data, bint partial)
    cdef Py_ssize_t _read_bitmaps(self, const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos,
                                  uint64_t *p0, uint64_t *p1, uint64_t *p2) except -1
    cdef bytes _encode_message(self, Message m)
    cdef bytes _encode_mapping(self, object mapping)


cdef class Message:
    cdef readonly Dialect dialect
    cdef bytes _raw                  # the decoded bytes, or None
    cdef const uint8_t *_buf         # PyBytes_AS_STRING(_raw)
    cdef int _mti                    # 0..9999, or -1 when unset
    cdef bint _modified              # differs from _raw
    cdef uint64_t _present[3]        # fields present
    cdef uint64_t _dirty[3]          # fields whose value was set (not in _raw)
    cdef uint64_t _cached[3]         # fields with a value in _cache
    cdef uint16_t _dat[NFIELDS]      # offset of a raw field's data (after its prefix)
    cdef uint16_t _end[NFIELDS]      # offset after a raw field's data
    cdef uint16_t _cnt[NFIELDS]      # count of a raw field (prefix value or fixed length)
    cdef PyObject *_cache[NFIELDS]   # value of a field (owned reference), or NULL

    cdef object _value(self, int f)
    cdef int _store(self, int f, object value) except -1
    cdef void _drop(self, int f)
    cdef list _numbers(self)
