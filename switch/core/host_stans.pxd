# Read by Cython with host_stans.py (its pure-Python mode), which stays plain Python:
# compiled, both are extension types whose state is in C fields (a host STAN is
# taken for every request to a card host link).  Every field is public; the
# counters are C integers (a STAN is at most 999999, a count of them too), and
# at_once reaches its HostStans's counters and take() in C.
cimport cython

cdef class HostStans:
    cdef public long _next, _left, _held
    cdef public object _blocks, refill

    @cython.locals(n=long)
    cpdef str take(self, long keep=*)

cdef class HostRefs:
    cdef public object acquirers, clock, on_refilled, on_low, _stans

    @cython.locals(seq=HostStans)
    cpdef at_once(self, acquirer)

cdef tuple _THREE

@cython.locals(second=long)
cpdef str host_time(wall)
