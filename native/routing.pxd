# C interface of the compiled route table (see routing.pyx for the semantics).

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

# Condition flags of a RouteRule: a rule checks only the conditions it has.
cdef enum:
    COND_MTI_CLASS = 1
    COND_PROCESSING_CODE = 2
    COND_MERCHANT = 4
    COND_CURRENCY = 8
    COND_AMOUNT = 16

cdef enum:
    # Longest rule prefix: 19 digits, the longest PAN (spec 2, field 2 n..19).
    MAX_PREFIX = 19

ctypedef struct RouteRule:
    int64_t target
    uint32_t conds             # COND_* bits
    uint64_t mti_bits[2]       # bit c set: MTI class c (0..99) allowed
    uint64_t pc_bits[2]        # bit t set: transaction type t (0..99) allowed
    int32_t merchant_off       # sorted merchant indices in values[off:off+count]
    int32_t merchant_count
    int32_t currency_off       # sorted ISO 4217 numeric codes in values[off:off+count]
    int32_t currency_count
    int64_t min_amount         # inclusive, minor units
    int64_t max_amount

# All rules whose prefix has one length, cut into disjoint key segments:
# segment s covers keys seg_lo[s]..seg_hi[s] and lists, in add order, the
# rules seg_rules[seg_off[s]:seg_off[s + 1]] whose range contains it.
ctypedef struct RouteLevel:
    int32_t length
    int32_t first              # first segment of this level
    int32_t count              # number of segments

cdef class RouteTable:
    cdef list _pending         # validated rules, in add order, until compile()
    cdef dict _merchant_index  # merchant ID -> small int, shared by all rules
    cdef bint _compiled

    cdef RouteRule* _rules
    cdef Py_ssize_t _nrules
    cdef RouteLevel* _levels   # longest prefix first
    cdef int _nlevels
    cdef uint64_t* _seg_lo
    cdef uint64_t* _seg_hi
    cdef int32_t* _seg_off
    cdef int32_t* _seg_rules
    cdef int32_t* _values

    cdef int64_t _find(self, const uint64_t* keys, int ndigits, int mti_class,
                       int pc_type, str merchant, int currency,
                       bint has_amount, int64_t amount) except? -2
    cdef int _merchant_id(self, str merchant) except? -2
    cdef void _free_arrays(self) noexcept
