# Read by Cython with limits.py (its pure-Python mode), which stays plain Python:
# compiled, the slots are an extension type (taken and released on every request),
# whose count is a dict in C: read and written by the dict's own C calls.
cdef class TerminalSlots:
    cdef public dict open
