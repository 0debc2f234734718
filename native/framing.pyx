"""Length-prefixed framing of the terminal interface (spec section 1), sans-I/O.

Every message on a terminal connection is preceded by a length header that
counts the bytes that follow it. ``Framer.feed()`` takes bytes as they come off
the socket and returns the payloads of the frames they complete;
``Framer.encode()`` puts the header in front of an outgoing payload. Nothing
here touches a socket, a loop or a clock.

setup.py compiles with boundscheck=False and wraparound=False: every pointer
access below is guarded by an explicit length check next to it.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


class FrameError(ValueError):
    """The peer broke the framing rules; the caller closes that connection.

    ``offset`` is the stream offset of the offending frame's length header
    (None when the error is not tied to a stream position). ``frames`` holds
    the payloads that ``feed()`` had completed, in the same call, before it
    reached the violation: they were well framed, and the caller decides
    whether to serve them before closing.
    """

    def __init__(self, message, offset=None):
        super().__init__(message)
        self.offset = offset
        self.frames = []


# name -> (kind, header bytes, largest length the header can express)
cdef dict _HEADERS = {
    "binary2": (HEADER_BINARY2, 2, 0xFFFF),
    "bcd2": (HEADER_BCD2, 2, 9999),
    "ascii4": (HEADER_ASCII4, 4, 9999),
}

cdef enum:
    TPDU_LEN = 5      # 60 DDDD SSSS
    TPDU_ID = 0x60


cdef class Framer:
    """Cuts a byte stream into frames and puts headers on outgoing payloads.

    ``header`` is ``"binary2"`` (2-byte unsigned big-endian, the spec's
    default), ``"bcd2"`` (2 bytes packed BCD) or ``"ascii4"`` (4 ASCII
    digits). With ``tpdu=True`` every payload starts with the 5-byte TPDU
    (``60 DDDD SSSS``), which stays in the payloads that ``feed()`` returns
    and must be in those given to ``encode()``. ``max_frame`` bounds the
    declared length (TPDU included). With ``keepalive=True`` a frame of
    declared length 0 is a keepalive: taken off the stream, no payload;
    otherwise it is a violation.
    """

    def __cinit__(self, *args, **kwargs):
        # Safe state even if a subclass skips __init__.
        self.header = "binary2"
        self._kind = HEADER_BINARY2
        self._hlen = 2
        self.max_frame = 8192
        self.tpdu = False
        self.keepalive = False
        self._hfill = 0
        self._bfill = 0
        self._pending = -1
        self._body = None
        self._offset = 0
        self._broken = None

    def __init__(self, str header="binary2", *, bint tpdu=False, Py_ssize_t max_frame=8192,
                 bint keepalive=False):
        spec = _HEADERS.get(header)
        if spec is None:
            raise ValueError(
                f"unknown length header {header!r}: expected 'binary2', 'bcd2' or 'ascii4'"
            )
        kind, hlen, capacity = spec
        least = TPDU_LEN if tpdu else 1
        if not least <= max_frame <= capacity:
            raise ValueError(
                f"max_frame {max_frame} out of range {least}..{capacity} for header {header!r}"
                + (" with a TPDU" if tpdu else "")
            )
        self.header = header
        self._kind = kind
        self._hlen = hlen
        self.tpdu = tpdu
        self.max_frame = max_frame
        self.keepalive = keepalive

    def __repr__(self):
        return (
            f"Framer({self.header!r}, tpdu={bool(self.tpdu)}, max_frame={self.max_frame}, "
            + ("keepalive=True, " if self.keepalive else "") +
            f"buffered={self._hfill + self._bfill})"
        )

    @property
    def buffered(self):
        """Bytes held waiting for the rest of a frame (header included)."""
        return self._hfill + self._bfill

    def feed(self, data):
        """Take the next bytes of the stream; return the payloads of the frames they complete.

        Raises FrameError on a protocol violation, as soon as the header that
        violates it is complete; from then on every call raises.
        """
        cdef Py_buffer view
        cdef list out = []
        cdef const unsigned char *p
        cdef Py_ssize_t n, pos = 0
        if self._broken is not None:
            raise FrameError(f"framer is broken by an earlier error: {self._broken}")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>view.buf
            n = view.len
            if self._hfill:
                # Finish the frame that started in an earlier feed.
                pos = self._continue(p, n, out)
                if self._hfill:
                    return out
            pos += self._scan(p + pos, n - pos, out)
            if pos < n:
                self._continue(p + pos, n - pos, out)
        except FrameError as exc:
            exc.frames = out
            self._broken = str(exc)
            self._body = None
            self._hfill = self._bfill = 0
            raise
        finally:
            PyBuffer_Release(&view)
        return out

    cdef Py_ssize_t _declared_length(self, const unsigned char *h) except -1:
        # h points at self._hlen readable bytes.
        cdef Py_ssize_t length
        cdef int i
        if self._kind == HEADER_BINARY2:
            length = (<Py_ssize_t>h[0] << 8) | h[1]
        elif self._kind == HEADER_BCD2:
            if (h[0] >> 4) > 9 or (h[0] & 0x0F) > 9 or (h[1] >> 4) > 9 or (h[1] & 0x0F) > 9:
                # A header is never quoted: out of step with the stream, it is
                # any bytes of a message, maybe of a packed-BCD PAN.
                i = 0 if (h[0] >> 4) > 9 or (h[0] & 0x0F) > 9 else 1
                raise FrameError(
                    f"length header is not 4 packed BCD digits: byte {self._offset + i} is not two BCD digits"
                    f" (frame at stream offset {self._offset})",
                    self._offset,
                )
            length = ((h[0] >> 4) * 1000 + (h[0] & 0x0F) * 100
                      + (h[1] >> 4) * 10 + (h[1] & 0x0F))
        else:
            length = 0
            for i in range(4):
                if h[i] < 0x30 or h[i] > 0x39:
                    raise FrameError(
                        f"length header is not 4 ASCII digits: byte {self._offset + i} is not a digit"
                        f" (frame at stream offset {self._offset})",
                        self._offset,
                    )
                length = length * 10 + (h[i] - 0x30)
        if length > self.max_frame:
            raise FrameError(
                f"declared length {length} exceeds maximum {self.max_frame}"
                f" (frame at stream offset {self._offset})",
                self._offset,
            )
        if length == 0:
            if self.keepalive:
                return 0
            raise FrameError(
                f"declared length 0 (frame at stream offset {self._offset})", self._offset
            )
        if self.tpdu and length < TPDU_LEN:
            raise FrameError(
                f"declared length {length} is shorter than the {TPDU_LEN}-byte TPDU"
                f" (frame at stream offset {self._offset})",
                self._offset,
            )
        return length

    cdef int _check_tpdu_id(self, unsigned char first, Py_ssize_t at) except -1:
        if first != TPDU_ID:
            raise FrameError(
                f"TPDU ID 0x{first:02x} is not 0x60 (frame at stream offset {self._offset},"
                f" byte {self._offset + at})",
                self._offset,
            )
        return 0

    cdef Py_ssize_t _scan(self, const unsigned char *p, Py_ssize_t n, list out) except -1:
        """Slice every whole frame out of p[0:n]; return the bytes they took."""
        cdef Py_ssize_t pos = 0, length, hlen = self._hlen
        while n - pos >= hlen:
            length = self._declared_length(p + pos)
            if n - pos - hlen < length:
                break
            if length:  # 0: a keepalive, nothing to hand out
                # length >= 1, so the TPDU ID byte is inside p[0:n].
                if self.tpdu:
                    self._check_tpdu_id(p[pos + hlen], hlen)
                out.append(PyBytes_FromStringAndSize(<char *>p + pos + hlen, length))
            pos += hlen + length
            self._offset += hlen + length
        return pos

    cdef Py_ssize_t _continue(self, const unsigned char *p, Py_ssize_t n, list out) except -1:
        """Move bytes from p[0:n] into the frame that spans feeds; return the bytes taken.

        Completes at most one frame (appended to out, and _hfill back to 0).
        """
        cdef Py_ssize_t pos = 0, take
        if self._hfill < self._hlen:
            take = min(self._hlen - self._hfill, n)
            memcpy(&self._hdr[self._hfill], p, take)
            self._hfill += take
            pos = take
            if self._hfill < self._hlen:
                return pos
            self._pending = self._declared_length(self._hdr)
            # Grown with the bytes that actually arrive, never to the declared
            # length up front: a 2-byte header must not reserve 8 KiB.
            self._body = bytearray()
            self._bfill = 0
        take = min(self._pending - self._bfill, n - pos)
        if take > 0:
            if self.tpdu and self._bfill == 0:
                self._check_tpdu_id(p[pos], self._hlen)
            # _bfill + take <= _pending <= max_frame.
            PyByteArray_Resize(self._body, self._bfill + take)
            memcpy(PyByteArray_AS_STRING(self._body) + self._bfill, p + pos, take)
            self._bfill += take
            pos += take
        if self._bfill == self._pending:
            if self._pending:  # 0: a keepalive, nothing to hand out
                out.append(PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._body), self._pending))
            self._offset += self._hlen + self._pending
            self._body = None
            self._hfill = self._bfill = 0
            self._pending = -1
        return pos

    def encode(self, payload):
        """Return the length header followed by payload."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        cdef unsigned char *o
        cdef const unsigned char *p
        cdef bytes frame
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>view.buf
            n = view.len
            if n == 0:
                raise FrameError("cannot encode an empty payload")
            if n > self.max_frame:
                raise FrameError(f"payload of {n} bytes exceeds maximum {self.max_frame}")
            if self.tpdu:
                if n < TPDU_LEN:
                    raise FrameError(
                        f"payload of {n} bytes is shorter than the {TPDU_LEN}-byte TPDU"
                    )
                if p[0] != TPDU_ID:
                    raise FrameError(f"TPDU ID 0x{p[0]:02x} is not 0x60")
            # n <= max_frame <= the header's capacity (checked in __init__).
            frame = PyBytes_FromStringAndSize(NULL, self._hlen + n)
            o = <unsigned char *>PyBytes_AS_STRING(frame)
            if self._kind == HEADER_BINARY2:
                o[0] = <unsigned char>(n >> 8)
                o[1] = <unsigned char>(n & 0xFF)
            elif self._kind == HEADER_BCD2:
                o[0] = <unsigned char>(((n // 1000) << 4) | ((n // 100) % 10))
                o[1] = <unsigned char>((((n // 10) % 10) << 4) | (n % 10))
            else:
                o[0] = <unsigned char>(0x30 + n // 1000)
                o[1] = <unsigned char>(0x30 + (n // 100) % 10)
                o[2] = <unsigned char>(0x30 + (n // 10) % 10)
                o[3] = <unsigned char>(0x30 + n % 10)
            memcpy(o + self._hlen, p, n)
            return frame
        finally:
            PyBuffer_Release(&view)


def split_tpdu(payload):
    """Split a payload into its 5-byte TPDU and the message after it."""
    cdef const unsigned char[::1] view = payload
    if view.shape[0] < TPDU_LEN:
        raise FrameError(
            f"payload of {view.shape[0]} bytes is shorter than the {TPDU_LEN}-byte TPDU"
        )
    if view[0] != TPDU_ID:
        raise FrameError(f"TPDU ID 0x{view[0]:02x} is not 0x60")
    data = bytes(payload)
    return data[:TPDU_LEN], data[TPDU_LEN:]


def reply_tpdu(tpdu):
    """Return the TPDU for the answer: destination and source swapped (60 DDDD SSSS -> 60 SSSS DDDD)."""
    cdef const unsigned char[::1] t = tpdu
    if t.shape[0] != TPDU_LEN:
        raise FrameError(f"TPDU must be {TPDU_LEN} bytes, got {t.shape[0]}")
    if t[0] != TPDU_ID:
        raise FrameError(f"TPDU ID 0x{t[0]:02x} is not 0x60")
    return bytes((TPDU_ID, t[3], t[4], t[1], t[2]))
