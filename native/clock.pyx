# cython: language_level=3
"""Whether a terminal's clock fields are a real date and time (spec section 2: 7, 12, 13).

Field 7 is MMDDhhmmss, 12 hhmmss, 13 MMDD, none with a year (so February has
a 29th).  The codec has checked that they are digits of the right length;
this checks the calendar, on every request, in a few dozen instructions
(the same in Python cost 2 µs a request).
"""

cdef int _MONTH_DAYS[12]
_MONTH_DAYS[:] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef inline int _two(str v, Py_ssize_t i) except -2:
    cdef Py_UCS4 a = v[i], b = v[i + 1]
    if not (u'0' <= a <= u'9' and u'0' <= b <= u'9'):
        return -1
    return (<int>a - 48) * 10 + (<int>b - 48)


cdef bint _date(str v, Py_ssize_t i) except -1:
    cdef int month = _two(v, i), day = _two(v, i + 2)
    return 1 <= month <= 12 and 1 <= day <= _MONTH_DAYS[month - 1]


cdef bint _time(str v, Py_ssize_t i) except -1:
    cdef int h = _two(v, i), mi = _two(v, i + 2), s = _two(v, i + 4)
    return 0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 60


def impossible_clock(object v7, object v12, object v13) -> int:
    """The first of fields 7, 12, 13 (each a str or None) that is not a real date / time, else 0."""
    if v7 is not None and not (type(v7) is str and len(<str>v7) == 10 and _date(<str>v7, 0) and _time(<str>v7, 4)):
        return 7
    if v12 is not None and not (type(v12) is str and len(<str>v12) == 6 and _time(<str>v12, 0)):
        return 12
    if v13 is not None and not (type(v13) is str and len(<str>v13) == 4 and _date(<str>v13, 0)):
        return 13
    return 0
