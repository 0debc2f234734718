# Read by Cython with routing.py (its pure-Python mode), which stays plain Python:
# compiled, the router is an extension type whose tables are public C fields
# (every payment is routed).
cdef class Router:
    cdef public object routes, _pan, _code
