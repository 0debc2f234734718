# cython: language_level=3, boundscheck=False, wraparound=False
"""Several fields of a decoded message read at once, in C.

A request's answer echoes up to nine of its fields (section 3) and its
retransmission digest joins a dozen (``switch.core.messages``): a Python
``msg.get(n)`` for each costs a method call and an int object per field,
every request.  Given a :class:`native.iso8583_message.Message`, these read
its presence bits and values directly; given anything else with ``get``
(a mapping), they fall back to calling it, with the same result.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.string cimport memcpy

from native.iso8583_message cimport Message

# field_value: one field of a Message, or None (inline, native/fields.pxd).


cdef extern from "Python.h":
    PyObject *PyTuple_GET_ITEM(object t, Py_ssize_t i)
    void PyTuple_SET_ITEM(object t, Py_ssize_t i, object v)
    tuple PyTuple_New(Py_ssize_t n)
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    dict _PyDict_NewPresized(Py_ssize_t minused)
    bint PyUnicode_IS_ASCII(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    void *PyUnicode_DATA(object s)


# Tags joined in one pass on the stack (the digest joins 15); more take the general way.
cdef enum:
    _JOIN_MAX = 32


def echo(msg, dict out, tuple numbers):
    """``out[n] = msg[n]`` for each field number ``n`` (an int, 1..192) present in ``msg``."""
    _echo(msg, out, numbers)


cdef int _echo(msg, dict out, tuple numbers) except -1:
    cdef Message m
    cdef object v
    cdef int f
    if type(msg) is Message:
        m = <Message>msg
        for n in numbers:
            f = n
            v = field_value(m, f)
            if v is not None:
                out[n] = v
    else:
        for n in numbers:
            v = msg.get(n)
            if v is not None:
                out[n] = v
    return 0


def answer(msg, mti, tuple numbers):
    """``{"mti": mti}`` and then ``msg[n]`` for each field number ``n`` of ``numbers`` present in
    ``msg`` (as :func:`echo`): a new dict with room for 16 entries, so that the fields an
    answer adds after the echoed ones do not make it grow (and copy itself) on the way."""
    cdef dict out = _PyDict_NewPresized(16)
    out["mti"] = mti
    _echo(msg, out, numbers)
    return out


def values(msg, tuple numbers):
    """``msg.get(n)`` for each field number ``n`` (an int, 1..192), as a tuple: one call for many."""
    cdef Py_ssize_t i, count = PyTuple_GET_SIZE(numbers)
    cdef tuple out = PyTuple_New(count)
    cdef Message m
    cdef object v
    cdef int f
    if type(msg) is Message:
        m = <Message>msg
        for i in range(count):
            f = <object>PyTuple_GET_ITEM(numbers, i)
            v = field_value(m, f)
            Py_INCREF(v)
            PyTuple_SET_ITEM(out, i, v)
    else:
        get = msg.get
        for i in range(count):
            v = get(<object>PyTuple_GET_ITEM(numbers, i))
            Py_INCREF(v)
            PyTuple_SET_ITEM(out, i, v)
    return out


cdef inline object _tagged(Message m, object msg, object n):
    """Field ``n`` of ``msg`` (``m``: the same, when it is a native Message), or None."""
    if m is not None:
        return field_value(m, <int>n)
    return msg.get(n)


def joined(msg, head, tuple tags):
    """``head`` followed, for each ``(n, tag)`` of ``tags`` whose field ``n`` is present, by
    ``tag`` and the field's value (bytes as they are, text UTF-8 encoded); ``head`` is bytes,
    or text (UTF-8 encoded)."""
    cdef Py_ssize_t ntags = PyTuple_GET_SIZE(tags), used = 0, total, i, size
    cdef const char *ptr[2 * _JOIN_MAX + 1]
    cdef Py_ssize_t length[2 * _JOIN_MAX + 1]
    cdef PyObject *held[_JOIN_MAX]  # the values read (owned): their bytes are copied from them
    cdef int nheld = 0
    cdef Message m = <Message>msg if type(msg) is Message else None
    cdef object v, tag, item
    cdef bytes out
    cdef char *o
    if ntags > _JOIN_MAX:
        return _joined(msg, head if type(head) is bytes else (<str?>head).encode(), tags)
    if type(head) is bytes:
        ptr[0] = PyBytes_AS_STRING(head)
        length[0] = PyBytes_GET_SIZE(head)
    elif type(head) is str:
        ptr[0] = PyUnicode_AsUTF8AndSize(head, &length[0])
    else:
        return _joined(msg, (<str?>head).encode(), tags)
    total = length[0]
    used = 1
    try:
        for i in range(ntags):
            item = <object>PyTuple_GET_ITEM(tags, i)
            n, tag = item
            v = _tagged(m, msg, n)
            if v is None:
                continue
            if type(tag) is not bytes or (type(v) is not bytes and type(v) is not str):
                # Something a plain message never holds: the general way, same result.
                return _joined(msg, head if type(head) is bytes else (<str>head).encode(), tags)
            Py_INCREF(v)
            held[nheld] = <PyObject *>v
            nheld += 1
            ptr[used] = PyBytes_AS_STRING(tag)
            length[used] = PyBytes_GET_SIZE(tag)
            if type(v) is bytes:
                ptr[used + 1] = PyBytes_AS_STRING(v)
                length[used + 1] = PyBytes_GET_SIZE(v)
            else:
                ptr[used + 1] = PyUnicode_AsUTF8AndSize(v, &length[used + 1])
            total += length[used] + length[used + 1]
            used += 2
        out = PyBytes_FromStringAndSize(NULL, total)
        o = PyBytes_AS_STRING(out)
        for i in range(used):
            size = length[i]
            memcpy(o, ptr[i], size)
            o += size
        return out
    finally:
        for i in range(nheld):
            Py_DECREF(<object>held[i])


cdef bytes _joined(msg, bytes head, tuple tags):
    """:func:`joined` for any tags and values, a part at a time."""
    cdef list parts = [head]
    cdef Message m = <Message>msg if type(msg) is Message else None
    cdef object v
    for n, tag in tags:
        v = _tagged(m, msg, n)
        if v is None:
            continue
        parts.append(tag)
        parts.append(v if type(v) is bytes else (<str?>v).encode())
    return b"".join(parts)


def number(s):
    """``int(s)``, for a field's text: read in C when it is up to 18 ASCII digits (an amount,
    n12), else by ``int`` itself (the same value, or the same error)."""
    cdef Py_ssize_t i, size
    cdef const char *p
    cdef long long v = 0
    cdef char c
    if type(s) is str and PyUnicode_IS_ASCII(s):
        size = PyUnicode_GET_LENGTH(s)
        if 0 < size <= 18:
            p = <const char *>PyUnicode_DATA(s)
            for i in range(size):
                c = p[i]
                if c < 48 or c > 57:  # not 0-9
                    return int(s)
                v = v * 10 + (c - 48)
            return v
    return int(s)
