# Read by Cython with routing.py (its pure-Python mode), which stays plain Python:
# compiled, the router is an extension type whose tables are public C fields
# (every payment is routed), and for_pan/for_code reach _lookup as a C call.
cdef class Router:
    cdef public object routes, _pan, _code
    cdef public bint _pan_plain, _code_plain

    cdef _lookup(self, table, number, msg, bint plain)
