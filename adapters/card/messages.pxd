# Read by Cython with messages.py (its pure-Python mode): the checks a request's
# STAN and field 7 go through, the reference an answer leaves and the message a
# request sends, cpdef so that the host link, its STAN allocator and its answers
# (hostlink.pxd, inflight.pxd, answers.pxd cimport them) call them in C.
cpdef valid_stan(stan)
cpdef valid_f7(f7)
cpdef isdigit(text)
cdef _digits(str text)
cdef dict _answers
cpdef answers(mti)
cpdef acquirer_ref(stan, f7, rrn, host_code=*, approved=*, currency=*)
cpdef request_fields(request, stan, f7, acquirer_id)

cdef extern from "Python.h":
    # A dict with room for ``minused`` items (native/iso8583_message.pyx uses it too).
    dict _PyDict_NewPresized(Py_ssize_t minused)
