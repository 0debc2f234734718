# Read by Cython with commands.py (its pure-Python mode), which stays plain Python:
# compiled, a request's Flight and a journal Op are extension types whose fields
# are C fields (one of each, at least, made for every request).  Every field is
# public, as its __slots__ made it.
cdef class Op:
    cdef public object name, args, kwargs

cdef class Flight:
    cdef public object key, digest, mti, kind, txn_id, answer, error, done, decided
    cdef public object reverse_requested, reverse_honoured, waiters, vas_tlv, budget_from, codec
