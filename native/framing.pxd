# C-level interface of native/framing.pyx: length-prefixed framing of the
# terminal interface (spec/terminal-interface.md, section 1).

cdef enum HeaderKind:
    HEADER_BINARY2 = 0   # 2-byte unsigned big-endian
    HEADER_BCD2 = 1      # 2 bytes packed BCD, 0..9999
    HEADER_ASCII4 = 2    # 4 ASCII digits, 0..9999


cdef class Framer:
    cdef readonly str header
    cdef readonly bint tpdu
    cdef readonly Py_ssize_t max_frame
    cdef readonly bint keepalive    # a declared length 0 is a keepalive, not a violation

    cdef HeaderKind _kind
    cdef Py_ssize_t _hlen           # bytes in the length header: 2 or 4

    # The one frame that spans feeds. Frames that lie whole inside a fed
    # chunk are sliced straight out of the chunk and never pass through here.
    cdef unsigned char _hdr[4]      # its length header so far
    cdef Py_ssize_t _hfill          # bytes of _hdr received
    cdef bytearray _body            # its payload so far (grows as bytes arrive)
    cdef Py_ssize_t _bfill          # bytes of _body received
    cdef Py_ssize_t _pending        # its declared length, -1 until the header is complete

    cdef unsigned long long _offset  # stream offset of the next frame's header
    cdef str _broken                # message of the FrameError that broke this framer

    cdef Py_ssize_t _declared_length(self, const unsigned char *h) except -1
    cdef int _check_tpdu_id(self, unsigned char first, Py_ssize_t at) except -1
    cdef Py_ssize_t _scan(self, const unsigned char *p, Py_ssize_t n, list out) except -1
    cdef Py_ssize_t _continue(self, const unsigned char *p, Py_ssize_t n, list out) except -1
