# Read by Cython with inflight.py (its pure-Python mode), which stays plain Python:
# compiled, the response mux is an extension type whose state is in C fields, and
# what every request and answer of a card host link runs through (add, peek, pop,
# next_deadline) is cpdef: a link that types its mux (adapters/card/hostlink.pxd)
# calls them without a lookup.  Every field is public.
cdef class InFlight:
    cdef public dict _entries
    cdef public list _heap
    cdef public Py_ssize_t _seq, _late_memory
    cdef public object _expired, _remember

    cpdef add(self, key, entry, deadline=*)
    cpdef pop(self, key)
    cpdef peek(self, key)
    cpdef give_up(self, key)
    cpdef next_deadline(self)
