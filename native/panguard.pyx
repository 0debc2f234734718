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
not import the core).  :func:`mask_pans` applies that rule to every card
number in free text (a partner's receipt line, an error message, what the
CLI prints), written as one run or in groups (``4761 7390 0101 0119``,
``4761-7390-0101-0119``); :func:`holds_pan` says whether there is one.

This module imports nothing of the project.
"""

from libc.string cimport memcpy, memset


cdef extern from "Python.h":
    # Strings made by Python 3.11+ code are always "ready" (PEP 393 layout).
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)
    bint Py_UNICODE_ISDIGIT(Py_UCS4 ch)
    enum: PyUnicode_1BYTE_KIND
    bint PyUnicode_IS_ASCII(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)

__all__ = ["luhn_run", "digit_count", "is_pan_hash", "mask_pan", "pan_spans", "holds_pan", "mask_pans"]


cdef inline bint _ascii_digit(Py_UCS4 c) noexcept:
    return c >= 48 and c <= 57


cdef inline int _luhn_add(int kind, void* data, Py_ssize_t start, Py_ssize_t end, int total,
                          bint* double) noexcept:
    """``total`` plus the Luhn sum of the ASCII digits data[start:end], read right to left;
    ``double``: whether the next digit (the last of the span) is doubled, updated."""
    cdef Py_ssize_t i
    cdef int digit
    for i in range(end - 1, start - 1, -1):
        digit = <int>PyUnicode_READ(kind, data, i) - 48
        if double[0]:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
        double[0] = not double[0]
    return total


cdef bint _luhn_span(int kind, void* data, Py_ssize_t start, Py_ssize_t end) noexcept:
    """The Luhn check of data[start:end], ASCII digits only."""
    cdef bint double = False
    return _luhn_add(kind, data, start, end, 0, &double) % 10 == 0


cdef inline bint _ascii_digit1(unsigned char c) noexcept:
    return <unsigned char>(c - 48) <= 9


cdef Py_ssize_t _luhn_run1(const unsigned char* s, Py_ssize_t n) noexcept:
    """:func:`luhn_run` on one value of 1-byte kind (Latin-1, ASCII), its bytes read
    directly: the length of its first card number, else 0."""
    cdef Py_ssize_t i = 0, start
    while i < n:
        if not _ascii_digit1(s[i]):
            i += 1
            continue
        start = i
        i += 1
        while i < n and _ascii_digit1(s[i]):
            i += 1
        if 13 <= i - start <= 19 and _luhn_span(PyUnicode_1BYTE_KIND, <void*>s, start, i):
            return i - start
    return 0


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
        if kind == PyUnicode_1BYTE_KIND:  # nearly every value: its bytes, without PyUnicode_READ
            i = _luhn_run1(<const unsigned char*>data, n)
            if i:
                return index, i
            continue
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
    cdef const unsigned char* s
    if kind == PyUnicode_1BYTE_KIND:
        # Of the 256 Latin-1 characters, isdigit holds for 0-9 and the superscripts 2, 3 and 1.
        s = <const unsigned char*>data
        for i in range(n):
            if _ascii_digit1(s[i]) or s[i] == 0xB2 or s[i] == 0xB3 or s[i] == 0xB9:
                count += 1
        return count
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
    cdef const unsigned char* s
    cdef unsigned char* d
    if not pan:
        return pan
    n = PyUnicode_GET_LENGTH(pan)
    if n >= 13 and PyUnicode_IS_ASCII(pan):  # a card number: one ASCII string written in place
        out = PyUnicode_New(n, 127)
        s = <const unsigned char*>PyUnicode_DATA(pan)
        d = <unsigned char*>PyUnicode_DATA(out)
        memcpy(d, s, 6)
        memset(d + 6, 42, n - 10)  # '*'
        memcpy(d + n - 4, s + n - 4, 4)
        return out
    if n >= 13:
        return pan[:6] + "*" * (n - 10) + pan[n - 4:]
    if n > 4:
        return "*" * (n - 4) + pan[n - 4:]
    return pan


cdef inline bint _separator(Py_UCS4 c) noexcept:
    return c == 32 or c == 45  # ' ' or '-': how card numbers are grouped when written out


def pan_spans(str text not None):
    """Where ``text`` holds a card number: a list of ``(start, end)`` index pairs.

    A card number is 13 to 19 ASCII digits that pass the Luhn check, written
    either as one run (not part of a longer one, like :func:`luhn_run`) or
    as groups of digits joined by single spaces or hyphens, as people print
    and type them (``4761 7390 0101 0119``).  In a chain of groups, the
    longest stretch of whole groups that is a card number is taken; the
    chain is then searched again after it.
    """
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0, j, k, digits, best_end
    cdef int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef list spans = []
    cdef list groups
    if n < 13:
        return spans
    while i < n:
        if not _ascii_digit(PyUnicode_READ(kind, data, i)):
            i += 1
            continue
        # A chain of digit groups joined by single separators: [(start, end), ...].
        groups = []
        while True:
            j = i
            while j < n and _ascii_digit(PyUnicode_READ(kind, data, j)):
                j += 1
            groups.append((i, j))
            if j + 1 < n and _separator(PyUnicode_READ(kind, data, j)) and _ascii_digit(PyUnicode_READ(kind, data, j + 1)):
                i = j + 1
                continue
            break
        i = j
        j = 0
        while j < len(groups):
            digits = 0
            best_end = -1
            for k in range(j, len(groups)):
                digits += groups[k][1] - groups[k][0]
                if digits > 19:
                    break
                if digits >= 13 and _luhn_groups(kind, data, groups, j, k):
                    best_end = k
            if best_end >= 0:
                spans.append((groups[j][0], groups[best_end][1]))
                j = best_end + 1
            else:
                j += 1
    return spans


cdef bint _luhn_groups(int kind, void* data, list groups, Py_ssize_t first, Py_ssize_t last):
    """The Luhn check of the digits of ``groups[first..last]`` read as one number."""
    cdef Py_ssize_t g, start, end
    cdef int total = 0
    cdef bint double = False
    for g in range(last, first - 1, -1):
        start, end = groups[g]
        total = _luhn_add(kind, data, start, end, total, &double)
    return total % 10 == 0


def holds_pan(text):
    """Whether ``text`` (a str; anything else holds none) holds a card number, grouped or not."""
    return type(text) is str and bool(pan_spans(text))


def mask_pans(text):
    """``text`` with every card number in it masked by :func:`mask_pan`'s rule.

    The first 6 and last 4 digits stay, the others become ``*``; the
    separators of a grouped number stay where they were
    (``"4761 7390 0101 0119"`` -> ``"4761 73** **** 0119"``).  Anything but
    a str comes back unchanged.
    """
    cdef list spans, out
    cdef Py_ssize_t last = 0, start, end, i, seen, total
    if type(text) is not str:
        return text
    spans = pan_spans(text)
    if not spans:
        return text
    out = []
    for start, end in spans:
        out.append(text[last:start])
        total = 0
        for i in range(start, end):
            if "0" <= text[i] <= "9":
                total += 1
        seen = 0
        for i in range(start, end):
            ch = text[i]
            if "0" <= ch <= "9":
                out.append(ch if seen < 6 or seen >= total - 4 else "*")
                seen += 1
            else:
                out.append(ch)
        last = end
    out.append(text[last:])
    return "".join(out)
