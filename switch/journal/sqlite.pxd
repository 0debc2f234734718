# Read by Cython with sqlite.py (its pure-Python mode): the caller's side of
# an insert and of an update, run on the event loop for every payment, with
# its dicts and tuples typed, so that each look-up is the dict's or the
# tuple's own, not a method call, and the record's values are found by C index.
cimport cython

cdef Py_ssize_t _TERMINAL_ID, _STAN, _TRANSMISSION_TIME, _PAN_MASKED, _PAN_HASH, _CARD_SEALED, _ACQUIRER_REF, _ORDER_REF

@cython.locals(values=tuple)
cpdef tuple insert_args(rec, hmac_key)

@cython.locals(names=list, given=list, columns=tuple, plans=dict, plan=tuple, values=tuple, guarded=bint)
cdef _update_op(journal, txn_id, expect, dict changes, call)
