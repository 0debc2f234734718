# Read by Cython with answers.py (its pure-Python mode): the two functions every
# answer runs through, cpdef so that the host link (hostlink.pxd cimports them)
# calls them in C, reading the Pending's fields directly (inflight.pxd), and
# field_of, which reads a decoded message's field in C (iso8583_message.pxd).
from adapters.card.inflight cimport Pending
from adapters.card.messages cimport acquirer_ref, answers, isdigit
from native.fields cimport field_value
from native.iso8583_message cimport Message

cpdef field_of(msg, int f)
cpdef mismatch(Pending pending, msg, mti)
cpdef result_from_answer(msg, Pending pending)
