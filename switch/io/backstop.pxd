# Read by Cython with backstop.py (its pure-Python mode), which stays plain Python:
# compiled, the backstop is an extension type whose state is in C fields (every
# acquirer call is watched and released here).  Every field is public.
cdef class Backstop:
    cdef public object loop, _timer
    cdef public double tick
    cdef public dict _watched
    cdef public set _expired
