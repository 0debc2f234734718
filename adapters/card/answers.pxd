# Read by Cython with answers.py (its pure-Python mode): the two functions every
# answer runs through, cpdef so that the host link (hostlink.pxd cimports them)
# calls them in C, reading the Pending's fields directly (inflight.pxd).
from adapters.card.inflight cimport Pending
from adapters.card.messages cimport acquirer_ref, answers

cpdef mismatch(Pending pending, msg, mti)
cpdef result_from_answer(msg, Pending pending)
