# Read by Cython with server.py (its pure-Python mode), which stays plain Python:
# compiled, a terminal connection's protocol is an extension type whose state is
# in C fields, read several dozen times a purchase (each request's start, its
# answer, back-pressure) without a dictionary lookup each.  Every field is
# public: the switch's drain and the tests read them as before.
from native.framing cimport Framer

cdef class TerminalProtocol:
    cdef public object switch, gate, address, frame_started, idle_timer, frame_timer
    cdef public object listener, codec, transport, peer, tasks, loop
    cdef public Framer framer
    cdef public double last_active
    cdef public Py_ssize_t in_flight, max_in_flight, started
    cdef public bint tpdu, read_paused, write_paused, quieted, peer_closed, broken

    # Called from the protocol's own methods on every request: C calls, not method lookups.
    cpdef _start(self, payload, tpdu)
    cpdef _no_frame_pending(self)
    cpdef _update_reading(self)
