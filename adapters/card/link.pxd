# Read by Cython with link.py (its pure-Python mode), which stays plain Python:
# compiled, HostLinkAcquirer is an extension type whose state is in C fields, and
# a request picks its slot, registers with the slot's core and hands the slot its
# frame with C calls (slot.pxd, hostlink.pxd), not a lookup each.  Every field is
# public.  Its breakers are typed where a request and an answer ask them
# (breaker.pxd): allow and success are C calls too, and so is encoding a request
# with the link's native dialect (_encoded).
from adapters.card.breaker cimport Breaker
from adapters.card.hostlink cimport HostConnection
from adapters.card.inflight cimport Pending
from adapters.card.slot cimport Slot
from switch.core.link_metrics cimport LinkMetrics as _LinkMetrics
from native.iso8583 cimport Dialect

cdef class HostLinkAcquirer:
    cdef public _LinkMetrics metrics
    cdef public object name, on_late_auth_code, endpoints, acquirer_id, connections, echo_interval
    cdef public object connect_timeout, ssl, network_timeout, request_timeout, backoff_initial, backoff_max
    cdef public object rng, dialect, FrameError, DecodeError, framer_factory, stans, resign_wait, given_up
    cdef public object on_key_change, mac, tasks, breakers, closing, loop, _ready, slots, _by_endpoint

    cpdef _now(self)
    cpdef _pick(self, store_and_forward=*)
    cpdef breaker_learns(self, Slot slot, how)
    cpdef _deadline(self, timeout)
    cpdef ready_changed(self)

cdef _encoded(dialect, msg)
