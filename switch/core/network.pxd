# Read by Cython with network.py (its pure-Python mode), which stays plain Python:
# compiled, the 0810s kept are an extension type's public C fields (every
# request's key is looked up in them).
cdef class NetworkAnswers:
    cdef public object capacity, _answers
