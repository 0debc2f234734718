# Read by Cython with security.py (its pure-Python mode), which stays plain Python:
# compiled, the terminals' security is an extension type whose state is in public
# C fields (every request is dispatched through it).
cdef class TerminalSecurity:
    cdef public object config, switchovers, _held
