# C interface of native/iso8583_message.pyx: a lazily decoded message, the decoding
# pass that makes one, and what the keys of a message or a mapping mean.
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint64_t

from native.iso8583_dialect cimport MAX_FIELD, NFIELDS, DialectSpec

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
    """
    long payswitch_small_int(object o)


cdef class Message:
    cdef readonly DialectSpec dialect  # a native.iso8583.Dialect
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


cdef Message _decode(DialectSpec d, bytes data, bint partial)
cdef int _parse_mti(object value) except -2
cdef int _mapping_key(object key) except -1


# Inline here: encoding a mapping calls it for every key.
cdef inline int _field_number(object key) noexcept:
    """1..192 for an int key in range, else -1."""
    cdef long v
    if PyLong_CheckExact(key):
        v = payswitch_small_int(key)
        if 1 <= v <= MAX_FIELD:
            return <int>v
    return -1
