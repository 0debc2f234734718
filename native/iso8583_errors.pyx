"""The ISO 8583 codec's errors: DecodeError (the peer's fault) and EncodeError (ours).

The functions below build their messages, on cold paths only: an error names
the field, the byte offset, what was expected and what was found, and never
quotes the bytes of a sensitive field (PAN, track data, PIN block...).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t

from native.panguard import mask_pans
from native.iso8583_dialect cimport (
    F_A, F_AN, F_ANS, F_AS, F_B, F_HEX, F_N, F_NS, F_XN, F_Z, K_BCD, K_BIN, P_BCD, P_EBCDIC, FieldSpec,
)

__all__ = ["DecodeError", "EncodeError"]


class DecodeError(ValueError):
    """Bytes that are not a valid message of the dialect (the peer's fault).

    ``field`` is the field number (None for the MTI, a bitmap or the message
    as a whole) and ``offset`` the byte offset the message names.
    """

    __module__ = "native.iso8583"  # its public home, which re-exports it (and pickles name)

    def __init__(self, message, field=None, offset=None):
        ValueError.__init__(self, message)
        self.field = field
        self.offset = offset

    def __reduce__(self):
        return (type(self), (self.args[0], self.field, self.offset))


class EncodeError(ValueError):
    """Values that the dialect cannot encode (our own fault).

    ``field`` is the field number (None for the MTI).
    """

    __module__ = "native.iso8583"

    def __init__(self, message, field=None):
        ValueError.__init__(self, message)
        self.field = field
        self.offset = None

    def __reduce__(self):
        return (type(self), (self.args[0], self.field))


# ---------------------------------------------------------------------------
# Error messages


cdef str _echo(const uint8_t *p, Py_ssize_t n):
    if n > ECHO_MAX:
        return repr(PyBytes_FromStringAndSize(<const char *>p, ECHO_MAX)) + "..."
    return repr(PyBytes_FromStringAndSize(<const char *>p, n))


cdef inline bint _text_digit(uint8_t c) noexcept:
    return 0x30 <= c <= 0x39 or 0xF0 <= c <= 0xF9  # ASCII or EBCDIC


cdef inline bint _group_separator(uint8_t c) noexcept:
    return c == 0x20 or c == 0x2D or c == 0x40 or c == 0x60  # space or hyphen, ASCII or EBCDIC


cdef Py_ssize_t _digit_run(const uint8_t *p, Py_ssize_t n, bint bcd):
    """The longest run of decimal digits in ``p[:n]``: ASCII or EBCDIC digits, and,
    with ``bcd``, bytes whose two nibbles are both 0-9 (two digits each).

    A single space or hyphen between two digits does not end a run: a card
    number written in groups (``4761 7390 0101 0119``) is one run of 16.
    """
    cdef Py_ssize_t i, run = 0, longest = 0
    cdef uint8_t c
    for i in range(n):
        c = p[i]
        if bcd and (c >> 4) <= 9 and (c & 0x0F) <= 9:
            run += 2
        elif _text_digit(c):
            run += 1
        elif run and _group_separator(c) and i + 1 < n and _text_digit(p[i + 1]):
            pass
        else:
            run = 0
        if run > longest:
            longest = run
    return longest


cdef str _quote(const uint8_t *p, Py_ssize_t n, bint bcd):
    """``_echo(p, n)``, unless what it would show holds more than 4 digits in a row.

    A damaged bitmap shifts every field after it, so the bytes an error finds
    in a field that is not sensitive may be a neighbour's PAN or track 2: a
    run of digits longer than the last four that a receipt may show is
    described, never quoted (PCI DSS 3.4).
    """
    cdef Py_ssize_t shown = n if n <= ECHO_MAX else ECHO_MAX
    cdef Py_ssize_t run = _digit_run(p, shown, bcd)
    if run > 4:
        return f"{n} bytes holding {run} digits in a row (value not shown)"
    return _echo(p, n)


cdef dict _FMT_WORDS = {
    F_N: ("digit", "digits"),
    F_A: ("alphabetic character", "alphabetic characters"),
    F_AN: ("alphanumeric character", "alphanumeric characters"),
    F_ANS: ("printable character", "printable characters"),
    F_AS: ("alphabetic or special character", "alphabetic or special characters"),
    F_NS: ("numeric or special character", "numeric or special characters"),
    F_Z: ("track data character (digits, '=', 'D')", "track data characters (digits, '=', 'D')"),
    F_HEX: ("hex digit", "hex digits"),
    F_B: ("byte", "bytes"),
}


cdef str _describe(const FieldSpec *fs, Py_ssize_t cnt):
    """What a field of ``cnt`` units must hold, e.g. '12 digits'."""
    if fs.fmt == F_XN:
        return f"'C' or 'D' and {cnt - 1} digit{'' if cnt == 2 else 's'}"
    one, many = _FMT_WORDS[fs.fmt]
    if fs.kind == K_BCD:
        if fs.fmt == F_Z:
            return f"{cnt} BCD track digit{'' if cnt == 1 else 's'} (0-9, D)"
        return f"{cnt} BCD digit{'' if cnt == 1 else 's'}"
    text = f"{cnt} {one if cnt == 1 else many}"
    if fs.translate:
        text += " (EBCDIC)"
    return text


cdef str _unit(const FieldSpec *fs):
    if fs.kind == K_BIN:
        return "bytes"
    if fs.fmt == F_N or fs.kind == K_BCD:
        return "digits"
    return "characters"


cdef int _fail(str message, object field, object offset) except -1:
    raise DecodeError(message, field, offset)


cdef int _truncated(Py_ssize_t size, str where, Py_ssize_t need) except -1:
    raise DecodeError(f"message ends at offset {size} inside {where} (needs {need} bytes)", None, size)


cdef int _truncated_field(Py_ssize_t size, int f, str what, Py_ssize_t need) except -1:
    raise DecodeError(f"message ends at offset {size} inside {what}field {f} (needs {need} bytes)", f, size)


cdef int _bad_prefix(const FieldSpec *fs, int f, const uint8_t *q, Py_ssize_t pos) except -1:
    cdef str kind
    cdef int digits
    if fs.pfx == P_BCD:
        kind, digits = "BCD", fs.pfx_bytes * 2
    elif fs.pfx == P_EBCDIC:
        kind, digits = "EBCDIC", fs.pfx_bytes
    else:
        kind, digits = "ASCII", fs.pfx_bytes
    raise DecodeError(
        f"field {f}: length prefix {_echo(q, fs.pfx_bytes)} at offset {pos} is not {digits} {kind} digits", f, pos
    )


cdef int _bad_content(const FieldSpec *fs, int f, const uint8_t *q, Py_ssize_t pos, Py_ssize_t wire,
                      Py_ssize_t cnt, Py_ssize_t bad) except -1:
    if fs.sensitive:
        found = f"an invalid byte at offset {pos + bad} (value not shown)"
    else:
        found = _quote(q, wire, fs.kind == K_BCD)
    raise DecodeError(f"field {f}: expected {_describe(fs, cnt)} at offset {pos}, found {found}", f, pos)


cdef int _bad_value(const FieldSpec *fs, int f, object value, Py_ssize_t bad) except -1:
    if fs.sensitive:
        found = f"an invalid character at index {bad} (value not shown)"
    elif len(value) > ECHO_MAX:
        found = repr(mask_pans(value)[:ECHO_MAX]) + "..."
    else:
        found = repr(mask_pans(value))
    raise EncodeError(f"field {f}: expected {_describe(fs, len(value))}, found {found}", f)
