# C interface of native/fields.pyx: how one field of a decoded message is read in C,
# inline here so that the adapters' answer reader (adapters/card/answers.pxd) reads
# a field the way these joins do.
from native.iso8583_dialect cimport _bit, _word
from native.iso8583_message cimport Message


cdef inline object field_value(Message m, int f):
    """``m.get(f)`` for a field number 1..192: its value, or None when absent."""
    if m._present[_word(f)] & _bit(f):
        return m._value(f)
    return None
