# cython: language_level=3, boundscheck=False, wraparound=False
"""Several fields of a decoded message read at once, in C.

A request's answer echoes up to nine of its fields (section 3) and its
retransmission digest joins a dozen (``switch.core.messages``): a Python
``msg.get(n)`` for each costs a method call and an int object per field,
every request.  Given a :class:`native.iso8583_message.Message`, these read
its presence bits and values directly; given anything else with ``get``
(a mapping), they fall back to calling it, with the same result.
"""
from native.iso8583_dialect cimport _bit, _word
from native.iso8583_message cimport Message


cdef inline object _field(Message m, int f):
    if m._present[_word(f)] & _bit(f):
        return m._value(f)
    return None


def echo(msg, dict out, tuple numbers):
    """``out[n] = msg[n]`` for each field number ``n`` (an int, 1..192) present in ``msg``."""
    cdef Message m
    cdef object v
    cdef int f
    if type(msg) is Message:
        m = <Message>msg
        for n in numbers:
            f = n
            v = _field(m, f)
            if v is not None:
                out[n] = v
    else:
        for n in numbers:
            v = msg.get(n)
            if v is not None:
                out[n] = v


def joined(msg, bytes head, tuple tags):
    """``head`` followed, for each ``(n, tag)`` of ``tags`` whose field ``n`` is present, by
    ``tag`` and the field's value (bytes as they are, text UTF-8 encoded)."""
    cdef list parts = [head]
    cdef Message m = <Message>msg if type(msg) is Message else None
    cdef object v
    cdef int f
    for n, tag in tags:
        if m is not None:
            f = n
            v = _field(m, f)
        else:
            v = msg.get(n)
        if v is None:
            continue
        parts.append(tag)
        parts.append(v if type(v) is bytes else (<str?>v).encode())
    return b"".join(parts)
