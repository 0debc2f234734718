# Read by Cython with inflight.py (its pure-Python mode), which stays plain Python:
# compiled, both are extension types whose state is in C fields.  A module that
# cimports them and declares a variable of their type (hostlink.pxd, answers.pxd)
# reads a Pending's fields and calls the allocator's methods without a lookup
# each: a request and its answer read a dozen fields and take and release a STAN.
# Every field is public: the tests and the simulator read them as before.
# new_pending makes a request's Pending in C (hostlink.pxd cimports it).
from adapters.card.messages cimport valid_stan


cdef class StanAllocator:
    cdef public object _next, _source
    cdef public set _in_use  # its look-ups, adds and discards are C calls
    cpdef claim(self, stan)
    cpdef release(self, stan)


cdef class Pending:
    cdef public object kind, mti, stan, f7, rrn, terminal_id, deadline, sent_at, token
    cdef public object amount, processing_code, held_known, currency, merchant_id


cpdef new_pending(kind, mti, stan, f7, rrn, terminal_id, deadline, sent_at, token, amount,
                  processing_code, currency, merchant_id)
