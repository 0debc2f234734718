# Read by Cython with messages.py (its pure-Python mode): the checks a request's
# STAN and field 7 go through, cpdef so that the host link and its STAN
# allocator (hostlink.pxd, inflight.pxd cimport them) call them in C.
cpdef valid_stan(stan)
cpdef valid_f7(f7)
