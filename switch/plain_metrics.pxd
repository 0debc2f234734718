# Read by Cython with plain_metrics.py (its pure-Python mode), which stays plain
# Python: compiled, a metric's children are extension types whose numbers are C
# fields (a request counts, observes and moves a gauge several times).
cdef class _Child:
    cdef public double value, created

cdef class _HistogramChild:
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum
