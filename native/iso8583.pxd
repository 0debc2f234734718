# C interface of native/iso8583.pyx: Dialect, a dialect's tables (DialectSpec,
# native/iso8583_dialect.pxd) that decode into and encode a Message
# (native/iso8583_message.pxd). Other Cython modules may cimport these.
from native.iso8583_dialect cimport DialectSpec
from native.iso8583_message cimport Message


cdef class Dialect(DialectSpec):
    cdef bytes _encode_message(self, Message m)
    cdef bytes _encode_mapping(self, object mapping)
