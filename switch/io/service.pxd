# Read by Cython with service.py (its pure-Python mode), which stays plain Python:
# compiled, the switch is an extension type whose state is in C fields, read by
# its driver (handle) several times for every command of every request without
# a dictionary lookup each, and the commands' fields are read in C too.  Every
# field is public; its __dict__ takes what else the tests and the app set on it.
from cpython.object cimport PyObject_Call

from switch.core.commands cimport Call, Flight, Op
from switch.core.engine cimport Engine

cdef class Switch:
    cdef dict __dict__
    cdef object __weakref__
    cdef public Engine engine
    cdef public object term, metrics, key, cfg, acquirer_cfg, vas, acquirers, worker, journal
    cdef public object _loop, _backstop, _loopwatch, _sweep_wakeup, _closing, _tasks, _late_tasks, _jobs, _held
    cdef public object _idle, _cutting, draining, connections, started, security_module
    cdef public Py_ssize_t _handling

    # An acquirer call's start and end, around every one: C calls from the driver.
    cdef _call_started(self, Call command)
    cdef _call_cancelled(self, Call command, task)
    cdef _call_ended(self, Call command, task)

cdef _journal_call(journal, Op op)
