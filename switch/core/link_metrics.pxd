# Read by Cython with link_metrics.py (its pure-Python mode), which stays plain Python:
# compiled, LinkMetrics is an extension type whose state is in C fields, and a
# module that cimports it and declares its metrics a LinkMetrics (the card host
# link: adapters/card/hostlink.pxd) counts every answer with a C call to add.
# Every field is public.
cdef class LinkMetrics:
    cdef public dict counters, _children
    cdef public object _listener, link
    cpdef add(self, counter, amount=*)
