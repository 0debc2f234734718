"""The ISO 8583 codec's errors: DecodeError (the peer's fault) and EncodeError (ours).

The functions below build their messages, on cold paths only. A DecodeError
names the field, the byte offset, the length and what was expected, and
describes what was found without quoting a byte of it: through a damaged
bitmap any field may start on another one's bytes, and with a packed-BCD
dialect those may be a PAN or track 2 that no run-of-digits check sees
(PCI DSS 3.4). The offset is enough to find the byte in a capture.
"""


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


cdef int _bad_prefix(const FieldSpec *fs, int f, Py_ssize_t pos) except -1:
    cdef str kind
    cdef int digits
    if fs.pfx == P_BCD:
        kind, digits = "BCD", fs.pfx_bytes * 2
    elif fs.pfx == P_EBCDIC:
        kind, digits = "EBCDIC", fs.pfx_bytes
    else:
        kind, digits = "ASCII", fs.pfx_bytes
    raise DecodeError(
        f"field {f}: length prefix at offset {pos} is not {digits} {kind} digit{'' if digits == 1 else 's'}"
        f" ({fs.pfx_bytes} byte{'' if fs.pfx_bytes == 1 else 's'}, not shown)", f, pos
    )


cdef str _a(str noun):
    return ("an " if noun[0] in "aeiouAEIOU" else "a ") + noun


cdef str _not_a(const FieldSpec *fs, Py_ssize_t wire, Py_ssize_t cnt, Py_ssize_t bad):
    """What the byte at index ``bad`` of a field is not, e.g. 'a byte that is not a digit'."""
    if fs.kind == K_BCD:
        track = " track" if fs.fmt == F_Z else ""
        if cnt & 1 and bad == (wire - 1 if fs.pad_right else 0):
            return f"a byte that is not a BCD{track} digit and the pad nibble {fs.pad_nibble:X}"
        return f"a byte that is not two BCD{track} digits"
    enc = "EBCDIC " if fs.translate else "ASCII "
    if fs.fmt == F_XN:
        return f"a first byte that is not {enc}'C' or 'D'" if bad == 0 else f"a byte that is not an {enc}digit"
    return "a byte that is not " + _a(enc + _FMT_WORDS[fs.fmt][0])


cdef int _bad_content(const FieldSpec *fs, int f, Py_ssize_t pos, Py_ssize_t wire,
                      Py_ssize_t cnt, Py_ssize_t bad) except -1:
    """The field's bytes are never quoted, sensitive or not: they may be a neighbour's."""
    raise DecodeError(
        f"field {f}: expected {_describe(fs, cnt)} at offset {pos}, found {_not_a(fs, wire, cnt, bad)}"
        f" at offset {pos + bad}", f, pos
    )


cdef int _bad_bitmap(str which, Py_ssize_t pos, Py_ssize_t bad) except -1:
    raise DecodeError(
        f"{which} bitmap at offset {pos}: expected 16 hex digits, found a byte that is not a hex digit"
        f" at offset {pos + bad}", None, pos
    )


cdef int _bad_mti(bint bcd, Py_ssize_t bad) except -1:
    if bcd:
        raise DecodeError(
            f"MTI at offset 0: expected 4 BCD digits, found a byte that is not two BCD digits at offset {bad}",
            None, 0
        )
    raise DecodeError(f"MTI at offset 0: expected 4 digits, found a byte that is not a digit at offset {bad}", None, 0)


cdef int _bad_value(const FieldSpec *fs, int f, object value, Py_ssize_t bad) except -1:
    if fs.sensitive:
        found = f"an invalid character at index {bad} (value not shown)"
    elif len(value) > ECHO_MAX:
        found = repr(mask_pans(value)[:ECHO_MAX]) + "..."
    else:
        found = repr(mask_pans(value))
    raise EncodeError(f"field {f}: expected {_describe(fs, len(value))}, found {found}", f)
