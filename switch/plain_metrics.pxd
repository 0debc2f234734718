# Read by Cython with plain_metrics.py (its pure-Python mode), which stays plain
# Python: compiled, a metric's children are extension types whose numbers are C
# fields (a request counts, observes and moves a gauge several times).
cimport cython

cdef class _Child:
    cdef public double value, created

    cpdef inc(self, double amount=*)

cdef class _HistogramChild:
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum

    @cython.locals(bounds=tuple, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, bound=double)
    cpdef observe(self, double value)
