# Read by Cython with commands.py (its pure-Python mode), which stays plain Python:
# compiled, a request's Flight and a journal Op are extension types whose fields
# are C fields (one of each, at least, made for every request).  Every field is
# public, as its __slots__ made it.
cimport cython

cdef class Op:
    cdef public object name, args, kwargs

# An Op of a ready tuple and dict: the engine makes its hot ones in C (engine.pxd cimports it).
@cython.locals(op=Op)
cpdef Op new_op(name, tuple args, dict kwargs)

# An acquirer call and its reversal: the driver reads their fields in C (service.pxd).
cdef class Call:
    cdef public object acquirer, request, timeout

cdef class Reverse(Call):
    pass

cdef class Flight:
    cdef public object key, digest, mti, kind, txn_id, answer, error, done, decided
    cdef public object reverse_requested, reverse_honoured, waiters, vas_tlv, budget_from, codec
