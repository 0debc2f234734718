# Read by Cython with host_stans.py (its pure-Python mode), which stays plain Python:
# compiled, both are extension types whose state is in C fields (a host STAN is
# taken for every request to a card host link).  Every field is public.
cdef class HostStans:
    cdef public object _next, _left, _blocks, _held, refill

cdef class HostRefs:
    cdef public object acquirers, clock, on_refilled, on_low, _stans
