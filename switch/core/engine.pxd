# Read by Cython with engine.py (its pure-Python mode), which stays plain Python:
# compiled, the engine is an extension type whose attributes are C fields, so
# its methods read their own state (self.metrics, self.inflight, self.cfg ...)
# without a dictionary lookup each, several dozen a purchase.  Every attribute
# is public: the driver, the other core modules and the tests read and set them
# as before.  An attribute not declared here cannot be set on an engine.
cdef class Engine:
    cdef public object key, digest_key, clock, metrics, healthy, rrns, term
    cdef public object inflight, shared_journal, draining, completing, network_answers, on_flight_done
    cdef public object slots, reversals, vas, answering
    cdef public object router, cfg, terminal_limit, terminals, merchants, acquirer_cfg, security
