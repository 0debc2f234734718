# C interface of native/iso8583_dialect.pyx: a dialect compiled into a table of
# field specs (DialectSpec), and the field-number bitsets the whole codec shares.
# native/iso8583_message.pyx decodes with these tables, native/iso8583.pyx
# (Dialect, a DialectSpec that decodes and encodes) encodes with them.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #define PAYSWITCH_TOP (((uint64_t)1) << 63)
    static inline int payswitch_clz64(unsigned long long x) { return __builtin_clzll(x); }
    static inline int payswitch_popcount64(unsigned long long x) { return __builtin_popcountll(x); }
    """
    const uint64_t TOP "PAYSWITCH_TOP"  # the bit of the first field of a word (1, 65, 129)
    int payswitch_clz64(uint64_t x) nogil
    int payswitch_popcount64(uint64_t x) nogil

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


# Field f's bit in a set of fields held as three words (1..64, 65..128, 129..192).
cdef inline int _word(int f) noexcept nogil:
    return (f - 1) >> 6


cdef inline uint64_t _bit(int f) noexcept nogil:
    return (<uint64_t>1) << (63 - ((f - 1) & 63))


cdef class DialectSpec:
    cdef readonly str name
    cdef readonly str path
    cdef FieldSpec fs[NFIELDS]
    cdef uint8_t mti_enc        # Prefix values reused: P_ASCII, P_EBCDIC, P_BCD
    cdef uint8_t bitmap_hex     # bitmaps as 16 hex characters instead of 8 bytes
    cdef uint8_t tertiary       # the dialect defines fields 129..192
    cdef uint64_t defined[3]    # fields with a spec, bit (63 - (n-1) % 64) of word (n-1) // 64
    cdef list _keep             # objects the C tables point into
    cdef dict _info             # field number -> spec as a dict (introspection)


cdef str _dialect_path(object name_or_path)
cdef int _load(DialectSpec d, str path) except -1
