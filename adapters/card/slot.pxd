# Read by Cython with slot.py (its pure-Python mode), which stays plain Python:
# compiled, Slot is an extension type whose state is in C fields, its link and
# its connection core typed (link.pxd, hostlink.pxd), so that what every answer
# runs through (take, the core's receive, handle, the breaker, the timer) is C
# calls and field reads, not a lookup each; a message of the link's native
# dialect is decoded with a C call too (_decoded).  Every field is public; a
# Python subclass may still override any method.
from adapters.card.hostlink cimport HostConnection
from adapters.card.inflight cimport Pending
from adapters.card.link cimport HostLinkAcquirer
from native.iso8583 cimport Dialect
from native.iso8583_message cimport _decode

cdef class Slot:
    cdef public HostLinkAcquirer link
    cdef public HostConnection core
    cdef public object endpoint, host, port, label, index
    cdef public object transport, framer, timer, closed, backoff, phase, task, checking, checker
    cdef public object outbox, outbox_to

    cpdef load(self)
    cpdef data_received(self, data)
    cpdef take(self, HostConnection core, payloads, decode, verify)
    cpdef handle(self, events)
    cpdef send(self, transport, frame)
    cpdef arm(self)
    cpdef arm_by(self, deadline)

cdef _decoded(dialect, payload)
