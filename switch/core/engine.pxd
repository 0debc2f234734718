# Read by Cython with engine.py (its pure-Python mode), which stays plain Python:
# compiled, the engine is an extension type whose attributes are C fields, so
# its methods read their own state (self.metrics, self.inflight, self.cfg ...)
# without a dictionary lookup each, several dozen a purchase.  Every attribute
# is public: the driver, the other core modules and the tests read and set them
# as before.  An attribute not declared here cannot be set on an engine.
from switch.core.commands cimport Flight, Op, new_op

cdef class Engine:
    cdef public object key, digest_key, clock, metrics, healthy, rrns, term
    cdef public dict inflight, terminals, merchants, acquirer_cfg  # looked up in C
    cdef public object shared_journal, draining, completing, network_answers, on_flight_done
    cdef public object slots, reversals, vas, answering
    cdef public object router, cfg, terminal_limit, security

    # The helpers a request runs through that are not generators: C calls from the
    # engine's own methods (still methods for the other core modules and the tests).
    cpdef tuple _reply(self, msg, code, codec, kind=*)
    cpdef _reversal_left(self, Flight flight, merchant)
    cpdef tuple _classify(self, msg, tlv)
    cpdef tuple _finish(self, rec, resp, codec, expect, dict changes)
    cpdef _as_sent(self, body, codec, spoken=*)
    cpdef _budget_end(self, rec, flight)  # flight: whatever has a budget_from (vas.py asks too)
