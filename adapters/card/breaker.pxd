# Read by Cython with breaker.py (its pure-Python mode), which stays plain Python:
# compiled, Breaker is an extension type whose state is in C fields, and what a
# request and its answer ask of it (allow, success) are cpdef: the link, which
# types its breakers (link.py), calls them without a lookup, and allow reads the
# state without a second method call.  Every field is public.
cdef class Breaker:
    cdef public object threshold, cooldown, _state, failures, opened_at, trips, _probing

    cpdef state(self, now)
    cpdef closed(self)
    cpdef allow(self, now)
    cpdef success(self)
    cpdef failure(self, now)
    cpdef inconclusive(self, now)
