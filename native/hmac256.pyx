# cython: language_level=3
"""HMAC-SHA256 with the key's two padded blocks hashed once, on OpenSSL's SHA-256 state (RFC 2104).

The request path takes two or three keyed digests per payment (the content
digest, the PAN hash, a customer token).  Through ``hashlib`` each is two
state copies (``EVP_MD_CTX`` objects allocated and freed), an ``update``, a
``digest`` bytes object and a ``hexdigest`` string: about 13,000
instructions for a 16-byte message, of which SHA-256's compression function
is some 3,000 (callgrind, ``benchmarks.loop_cpu --instructions``).  Here
the ipad/opad states are plain ``SHA256_CTX`` structs copied on the stack,
and the hex form is written straight into the result string.

The result is the standard HMAC-SHA256 (RFC 4231's vectors and the stdlib's
``hmac`` are held to it in tests/test_keyed_hash.py).  Each call holds the
interpreter lock and keeps its working state on its own stack, so one object
may be shared by threads; the key's states are wiped when it is freed.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    /* SHA256_Init & co. are deprecated in OpenSSL 3 for EVP, which allocates a
       context per digest: the very cost this module exists to avoid.  They
       are still exported and run the same block function. */
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #include <openssl/sha.h>
    """
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX *c) nogil
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t len) nogil
    int SHA256_Final(unsigned char *md, SHA256_CTX *c) nogil

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)

cdef enum:
    BLOCK = 64  # SHA-256's block size
    OUT = 32  # and its digest's

cdef const char *_HEX = b"0123456789abcdef"


cdef class HmacSha256:
    """HMAC-SHA256 under one key: ``digest(msg)`` (32 bytes), ``hexdigest(msg)`` (64 hex digits)."""

    cdef SHA256_CTX _inner
    cdef SHA256_CTX _outer

    def __init__(self, bytes key not None):
        cdef unsigned char pad[BLOCK]
        cdef unsigned char hashed[OUT]
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(key), i
        cdef SHA256_CTX c
        if n > BLOCK:  # RFC 2104: a key longer than a block is hashed first
            SHA256_Init(&c)
            SHA256_Update(&c, k, <size_t>n)
            SHA256_Final(hashed, &c)
            k = hashed
            n = OUT
        for i in range(BLOCK):
            pad[i] = (k[i] if i < n else 0) ^ 0x36
        SHA256_Init(&self._inner)
        SHA256_Update(&self._inner, pad, BLOCK)
        for i in range(BLOCK):
            pad[i] = (k[i] if i < n else 0) ^ 0x5C
        SHA256_Init(&self._outer)
        SHA256_Update(&self._outer, pad, BLOCK)
        OPENSSL_cleanse(pad, BLOCK)
        OPENSSL_cleanse(hashed, OUT)
        OPENSSL_cleanse(&c, sizeof(SHA256_CTX))

    cdef void _mac(self, bytes msg, unsigned char *out) noexcept:
        cdef SHA256_CTX c
        memcpy(&c, &self._inner, sizeof(SHA256_CTX))
        SHA256_Update(&c, PyBytes_AS_STRING(msg), <size_t>PyBytes_GET_SIZE(msg))
        SHA256_Final(out, &c)
        memcpy(&c, &self._outer, sizeof(SHA256_CTX))
        SHA256_Update(&c, out, OUT)
        SHA256_Final(out, &c)
        memset(&c, 0, sizeof(SHA256_CTX))

    def digest(self, bytes msg not None) -> bytes:
        cdef unsigned char out[OUT]
        self._mac(msg, out)
        return PyBytes_FromStringAndSize(<char *>out, OUT)

    def hexdigest(self, bytes msg not None, Py_ssize_t digits=2 * OUT) -> str:
        """The MAC in lower-case hex; ``digits`` (even, 2 to 64): only its first ones,
        as ``hexdigest(msg)[:digits]`` gives without the second string."""
        cdef unsigned char out[OUT]
        cdef char text[2 * OUT]
        cdef Py_ssize_t i
        if digits < 2 or digits > 2 * OUT or digits & 1:
            raise ValueError(f"hexdigest: digits is an even number from 2 to 64, got {digits}")
        self._mac(msg, out)
        for i in range(digits // 2):
            text[2 * i] = _HEX[out[i] >> 4]
            text[2 * i + 1] = _HEX[out[i] & 15]
        return PyUnicode_DecodeASCII(text, digits, NULL)

    def __repr__(self) -> str:
        return "HmacSha256(<key>)"

    def __reduce__(self):
        raise TypeError("an HmacSha256 holds a key and is not pickled")

    def __dealloc__(self):
        OPENSSL_cleanse(&self._inner, sizeof(SHA256_CTX))
        OPENSSL_cleanse(&self._outer, sizeof(SHA256_CTX))
