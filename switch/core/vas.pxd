# Read by Cython with vas.py (its pure-Python mode), which stays plain Python:
# compiled, the hook is an extension type whose state is in public C fields
# (asked before and after every payment).
cdef class VasHook:
    cdef public object engine, token_keys, groups, services
    cdef public bint asks_after
