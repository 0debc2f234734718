"""The journal's PAN guard in C: what it checks on every write, off the interpreter;
and the one rule that masks a card number for display.

:mod:`switch.journal` refuses any write that could put a card number in the
journal: a Luhn-valid run of 13 to 19 digits in a text column, a
``pan_masked`` showing more than the first 6 and last 4 digits, a
``pan_hash`` that is not a key version and an HMAC.  The caller's side runs
these checks for every insert and update, on the event loop's thread; here
they cost a pass over the characters instead of a regular expression and a
Python call per value.  The messages (which name the column, never the
value) stay in Python.

:func:`mask_pan` is here, below both the journal and ``switch.core``, so
that the journal's ``pan_masked``, log lines, reprs and the adapters all
mask by one rule (``switch.core.messages`` re-exports it; the journal does
not import the core).

This module imports nothing of the project.
"""

cdef extern from "Python.h":
    # Strings made by Python 3.11+ code are always "ready" (PEP 393 layout).
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)
    bint Py_UNICODE_ISDIGIT(Py_UCS4 ch)

__all__ = ["luhn_run", "digit_count", "is_pan_hash", "mask_pan"]


cdef inline bint _ascii_digit(Py_UCS4 c) noexcept:
    return c >= 48 and c <= 57


cdef bint _luhn_span(int kind, void* data, Py_ssize_t start, Py_ssize_t end) noexcept:
    """The Luhn check of data[start:end], ASCII digits only."""
    cdef Py_ssize_t i
    cdef int digit, total = 0
    cdef bint double = False
    for i in range(end - 1, start - 1, -1):
        digit = <int>PyUnicode_READ(kind, data, i) - 48
        if double:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
        double = not double
    return total % 10 == 0


def luhn_run(tuple values not None):
    """The first value holding a card number: ``(its index, the run's length)``, else None.

    A card number is a run of 13 to 19 ASCII digits, not part of a longer
    run, that passes the Luhn check: what
    ``(?<![0-9])[0-9]{13,19}(?![0-9])`` and the Luhn check find.  Values
    other than str are passed over, as are strs shorter than 13 characters.
    """
    cdef Py_ssize_t index, n, i, start
    cdef int kind
    cdef void* data
    for index in range(len(values)):
        value = values[index]
        if type(value) is not str:
            continue
        n = PyUnicode_GET_LENGTH(value)
        if n < 13:
            continue
        kind = PyUnicode_KIND(value)
        data = PyUnicode_DATA(value)
        i = 0
        while i < n:
            if not _ascii_digit(PyUnicode_READ(kind, data, i)):
                i += 1
                continue
            start = i
            while i < n and _ascii_digit(PyUnicode_READ(kind, data, i)):
                i += 1
            if 13 <= i - start <= 19 and _luhn_span(kind, data, start, i):
                return index, i - start
    return None


def digit_count(str text not None):
    """How many characters of ``text`` are digits (``str.isdigit``, so not only ASCII ones)."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(text), count = 0
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    for i in range(n):
        if Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, i)):
            count += 1
    return count


def is_pan_hash(str text not None):
    """Whether ``text`` is ``v`` + 1 to 3 ASCII digits + ``:`` + 64 lower-case hex digits."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(text), colon
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef Py_UCS4 c
    if n < 67 or n > 69 or PyUnicode_READ(kind, data, 0) != 118:  # 'v'
        return False
    colon = n - 65
    for i in range(1, colon):
        if not _ascii_digit(PyUnicode_READ(kind, data, i)):
            return False
    if PyUnicode_READ(kind, data, colon) != 58:  # ':'
        return False
    for i in range(colon + 1, n):
        c = PyUnicode_READ(kind, data, i)
        if not (_ascii_digit(c) or (c >= 97 and c <= 102)):
            return False
    return True


def mask_pan(str pan):
    """``pan`` fit to display: its first 6 and last 4 characters, the rest as ``*``.

    First 6 and last 4 is the most of a PAN that PCI DSS allows to be shown
    (``"4111111111111111"`` -> ``"411111******1111"``).  A number shorter
    than 13 keeps only its last 4 (``"123456789012"`` -> ``"********9012"``):
    first 6 and last 4 of it would show nearly all of it.  ``None`` and ``""``
    come back as they are; a caller that shows something else for "no card"
    says so itself (``mask_pan(pan) or "-"``).
    """
    cdef Py_ssize_t n
    if not pan:
        return pan
    n = PyUnicode_GET_LENGTH(pan)
    if n >= 13:
        return pan[:6] + "*" * (n - 10) + pan[n - 4:]
    if n > 4:
        return "*" * (n - 4) + pan[n - 4:]
    return pan
