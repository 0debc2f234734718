# Read by Cython with reversal_card.py (its pure-Python mode): a card payment
# seals its card on the event loop, and these two are called from the module
# itself as C functions (still callable from Python: open_in_flight hands
# _in_flight_aad to functools.partial); check_sealed_form reads the sealed
# bytes as bytes.
cimport cython

cpdef bytes _in_flight_aad(key, digest, version)
@cython.locals(text=str)
cpdef bytes _seal(secret, pan, aad)

@cython.locals(data=bytes)
cpdef check_sealed_form(column, sealed)
