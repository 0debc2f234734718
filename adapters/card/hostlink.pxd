# Read by Cython with hostlink.py (its pure-Python mode), which stays plain Python:
# compiled, HostConnection is an extension type whose state is in C fields, its
# allocator and counters typed (inflight.pxd, link_metrics.pxd) so that taking a
# STAN, releasing it and counting an answer are C calls, and the methods a
# request and its answer run through are cpdef: the slot (slot.pxd) and the link
# call them without a lookup, and they read a Pending's fields directly.  Every
# field is public; a Python subclass may still override any method.
from adapters.card.answers cimport field_of, mismatch, result_from_answer
from adapters.card.inflight cimport Pending, new_pending
from adapters.card.messages cimport request_fields, valid_f7, valid_stan
from adapters.card.inflight cimport StanAllocator as _StanAllocator
from switch.core.link_metrics cimport LinkMetrics as _LinkMetrics
from switch.core.inflight cimport InFlight as _InFlight

cdef class HostConnection:
    cdef public _StanAllocator stans
    cdef public _LinkMetrics metrics
    cdef public object acquirer_id, echo_interval, network_timeout, resign_wait, endpoint
    cdef public _InFlight inflight
    cdef public object state, given_up, last_received, resume_at, _echo

    cpdef _register(self, kind, dict msg, now, deadline, rrn=*, terminal_id=*, token=*)
    cpdef _finish(self, Pending pending)
    cpdef _stan_and_time(self, request, wall)
    cpdef request(self, request, now, wall, timeout, token=*)
    cpdef receive(self, msg, now, authentic=*)
    cpdef _match(self, msg, mti, authentic)
    cpdef _answered(self, Pending pending, msg)
    cpdef next_wakeup(self)

cdef dict _requests_keys
cdef _requests_key(mti, response_code)
