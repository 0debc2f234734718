# Read by Cython with metrics.py (its pure-Python mode), which stays plain Python:
# compiled, Metrics is an extension type whose metric families are C fields, so
# the counts of every request (answered, in flight, acquirer latency) read them
# without a dictionary lookup.  Every attribute is public, as before.
cimport cython

from switch.plain_metrics cimport _Child, _HistogramChild

cdef class Metrics:
    cdef public object registry, build_info, requests, latency, in_flight_requests, acquirer_latency
    cdef public object acquirer_up, acquirer_connections, circuit_state, connections, connections_refused
    cdef public object connections_timed_out, frame_errors, format_errors, internal_errors, terminal_limited
    cdef public object unsolicited_responses, retransmissions, reversals, reversal_queue, reversal_oldest
    cdef public object reversal_refused, reversal_unconfigured, drain_refusals, config_reloads, config_reload_ok
    cdef public object journal_batch, journal_commit, journal_failed, journal_writable, loop_lag, vas_calls
    cdef public object wallet_held, card_link, cpu_source, terminal_mac_failures
    cdef public object _in_flight, _other_link, _reversal_oldest
    cdef public dict _acquirer, _answered

    @cython.locals(pair=tuple, count=_Child, timing=_HistogramChild)
    cpdef answered(self, kind, mclass, code, seconds)

    @cython.locals(child=_HistogramChild)
    cpdef acquirer_answered(self, acquirer, outcome, seconds)
