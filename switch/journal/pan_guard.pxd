# Read by Cython with pan_guard.py (its pure-Python mode): digit_runs walks
# its text as C characters; _pan_mac, which every PAN hash asks, is a C call.
cimport cython

@cython.locals(runs=list, n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t, c=Py_UCS4)
cpdef list digit_runs(str text)

cdef tuple _pan_mac(secret, version)

@cython.locals(n=Py_ssize_t, c=Py_UCS4)
cpdef bint pan_digits(str pan)

@cython.locals(text=str)
cpdef tuple pan_protect(pan, key)
