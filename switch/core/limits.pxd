# Read by Cython with limits.py (its pure-Python mode), which stays plain Python:
# compiled, the slots are an extension type (taken and released on every request).
cdef class TerminalSlots:
    cdef public object open
