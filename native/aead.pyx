# cython: language_level=3
"""AES-GCM with the key schedule kept: OpenSSL's EVP interface, one context per key and direction.

``cryptography``'s ``AESGCM.encrypt`` sets a cipher context up on every call
(fetch the algorithm, expand the key, build the GHASH table): about 5,600
instructions per 16-byte seal, and in the request path, where those tables
have left the cache, about 20 µs of the event loop per card payment
(measured with ``benchmarks.loop_cpu``).  :class:`AesGcm` expands its key
once and only sets a new nonce per call.

The output is what ``cryptography`` gives and takes (ciphertext followed by
the 16-byte tag), so the two interoperate and the tests hold this one to it.

Each call runs with the interpreter lock held and calls no Python between
its steps, so one object may be shared by threads: the lock serialises
them, and a context is never used by two at once.  A forked child's copy of
a context is its own.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy, memset

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    const EVP_CIPHER *EVP_aes_128_gcm()
    const EVP_CIPHER *EVP_aes_192_gcm()
    const EVP_CIPHER *EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG

cdef extern from "openssl/rand.h" nogil:
    int RAND_bytes(unsigned char *buf, int num)

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)

cdef extern from "pthread.h" nogil:
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)

cdef enum:
    NONCE = 12
    TAG = 16
    # Far above anything sealed here (card numbers, key blocks); keeps int arithmetic safe.
    MAX_DATA = 1 << 20
    BLOCK = 4096


# -- random bytes --------------------------------------------------------------
#
# RAND_bytes costs about 1.8 µs whatever it draws (OpenSSL 3 finds the
# thread's generator and takes its lock on each call): 12 bytes cost as much
# as 2 KiB.  So nonces are slices of a 4 KiB block.  Every call holds the
# interpreter lock from start to end, which is what serialises threads here,
# and os.urandom (which releases it, and then waits for a busy journal
# writer to hand it back) is never called.

cdef unsigned char _block[BLOCK]
cdef Py_ssize_t _pos = BLOCK


cdef void _forget_block() noexcept nogil:
    # A forked child must never hand out what its parent will (OpenSSL
    # reseeds the child's generator itself).
    global _pos
    OPENSSL_cleanse(_block, BLOCK)
    _pos = BLOCK


if pthread_atfork(NULL, NULL, _forget_block) != 0:
    raise ImportError("native.aead: pthread_atfork failed")


cdef int _draw(unsigned char *out, Py_ssize_t n) except -1:
    global _pos
    if n > BLOCK // 4:
        if RAND_bytes(out, <int>n) != 1:
            raise RuntimeError("OpenSSL's random generator failed")
        return 0
    if _pos + n > BLOCK:
        if RAND_bytes(_block, BLOCK) != 1:
            raise RuntimeError("OpenSSL's random generator failed")
        _pos = 0
    memcpy(out, _block + _pos, n)
    memset(_block + _pos, 0, n)  # what is handed out does not stay behind
    _pos += n
    return 0


def random_bytes(Py_ssize_t n) -> bytes:
    """``n`` bytes from OpenSSL's random generator (a NIST SP 800-90A DRBG), never handed out twice."""
    if n < 0 or n > MAX_DATA:
        raise ValueError(f"random_bytes: 0 to 1 MiB, got {n}")
    out = PyBytes_FromStringAndSize(NULL, n)
    _draw(<unsigned char *>PyBytes_AS_STRING(out), n)
    return out


class InvalidTag(ValueError):
    """The ciphertext, its tag, the nonce or the associated data is not what was sealed (or another key)."""


cdef const EVP_CIPHER *_cipher(Py_ssize_t key_len) except NULL:
    if key_len == 32:
        return EVP_aes_256_gcm()
    if key_len == 16:
        return EVP_aes_128_gcm()
    if key_len == 24:
        return EVP_aes_192_gcm()
    raise ValueError(f"an AES-GCM key is 16, 24 or 32 bytes, got {key_len}")


cdef inline Py_ssize_t _len(bytes v, Py_ssize_t lo, Py_ssize_t hi, str what) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v)
    if n < lo or n > hi:
        raise ValueError(f"{what}, got {n}")
    return n


cdef inline const unsigned char *_ptr(bytes v):
    return <const unsigned char *>PyBytes_AS_STRING(v)


cdef class AesGcm:
    """AES-GCM under one key, its schedule expanded once; 12-byte nonces, 16-byte tags."""

    cdef EVP_CIPHER_CTX *_enc
    cdef EVP_CIPHER_CTX *_dec

    def __cinit__(self, bytes key not None):
        cdef const EVP_CIPHER *cipher = _cipher(PyBytes_GET_SIZE(key))
        self._enc = EVP_CIPHER_CTX_new()
        self._dec = EVP_CIPHER_CTX_new()
        if self._enc == NULL or self._dec == NULL:
            raise MemoryError("EVP_CIPHER_CTX_new")
        if (EVP_EncryptInit_ex(self._enc, cipher, NULL, _ptr(key), NULL) != 1
                or EVP_DecryptInit_ex(self._dec, cipher, NULL, _ptr(key), NULL) != 1):
            raise RuntimeError("OpenSSL refused the AES-GCM key set-up")

    def __dealloc__(self):
        # Freeing a context cleanses the key schedule it held.
        EVP_CIPHER_CTX_free(self._enc)
        EVP_CIPHER_CTX_free(self._dec)

    def __repr__(self):
        return "AesGcm(<key>)"

    def __reduce__(self):
        raise TypeError("an AesGcm holds a key and is not pickled")

    cdef int _encrypt_into(self, const unsigned char *nonce, bytes data, Py_ssize_t size,
                           bytes aad, Py_ssize_t aad_size, unsigned char *out) except -1:
        cdef int n = 0
        cdef int fin = 0
        if EVP_EncryptInit_ex(self._enc, NULL, NULL, NULL, nonce) != 1:
            raise RuntimeError("AES-GCM: setting the nonce failed")
        if aad_size and EVP_EncryptUpdate(self._enc, NULL, &n, _ptr(aad), <int>aad_size) != 1:
            raise RuntimeError("AES-GCM: associated data refused")
        n = 0
        if size and EVP_EncryptUpdate(self._enc, out, &n, _ptr(data), <int>size) != 1:
            raise RuntimeError("AES-GCM: encryption failed")
        if EVP_EncryptFinal_ex(self._enc, out + n, &fin) != 1:
            raise RuntimeError("AES-GCM: finishing failed")
        if EVP_CIPHER_CTX_ctrl(self._enc, EVP_CTRL_GCM_GET_TAG, TAG, out + n + fin) != 1:
            raise RuntimeError("AES-GCM: reading the tag failed")
        return 0

    def encrypt(self, bytes nonce not None, bytes data not None, bytes aad not None) -> bytes:
        """Ciphertext and tag of ``data`` under ``nonce`` (12 bytes) with ``aad``, as ``cryptography`` gives."""
        _len(nonce, NONCE, NONCE, "an AES-GCM nonce is 12 bytes")
        cdef Py_ssize_t size = _len(data, 0, MAX_DATA, "AES-GCM data is at most 1 MiB")
        cdef Py_ssize_t aad_size = _len(aad, 0, MAX_DATA, "AES-GCM associated data is at most 1 MiB")
        out = PyBytes_FromStringAndSize(NULL, size + TAG)
        self._encrypt_into(_ptr(nonce), data, size, aad, aad_size, <unsigned char *>PyBytes_AS_STRING(out))
        return out

    def seal(self, bytes prefix not None, bytes data not None, bytes aad not None) -> bytes:
        """``prefix`` + a fresh random nonce + ciphertext + tag of ``data`` with ``aad``.

        The nonce comes from :func:`random_bytes`.
        """
        cdef Py_ssize_t size = _len(data, 0, MAX_DATA, "AES-GCM data is at most 1 MiB")
        cdef Py_ssize_t aad_size = _len(aad, 0, MAX_DATA, "AES-GCM associated data is at most 1 MiB")
        cdef Py_ssize_t p = PyBytes_GET_SIZE(prefix)
        if p > 64:
            raise ValueError(f"a sealed value's prefix is at most 64 bytes, got {p}")
        out = PyBytes_FromStringAndSize(NULL, p + NONCE + size + TAG)
        cdef unsigned char *buf = <unsigned char *>PyBytes_AS_STRING(out)
        memcpy(buf, _ptr(prefix), p)
        _draw(buf + p, NONCE)
        self._encrypt_into(buf + p, data, size, aad, aad_size, buf + p + NONCE)
        return out

    def decrypt(self, bytes nonce not None, bytes data not None, bytes aad not None) -> bytes:
        """The plaintext of ``data`` (ciphertext + tag); :class:`InvalidTag` if it does not open."""
        _len(nonce, NONCE, NONCE, "an AES-GCM nonce is 12 bytes")
        cdef int size = <int>(_len(data, TAG, MAX_DATA + TAG, "AES-GCM input is a 16-byte tag after at most 1 MiB") - TAG)
        cdef Py_ssize_t aad_size = _len(aad, 0, MAX_DATA, "AES-GCM associated data is at most 1 MiB")
        cdef int n = 0
        cdef int fin = 0
        cdef bint ok
        out = PyBytes_FromStringAndSize(NULL, size)
        cdef unsigned char *buf = <unsigned char *>PyBytes_AS_STRING(out)
        if EVP_DecryptInit_ex(self._dec, NULL, NULL, NULL, _ptr(nonce)) != 1:
            raise RuntimeError("AES-GCM: setting the nonce failed")
        if aad_size and EVP_DecryptUpdate(self._dec, NULL, &n, _ptr(aad), <int>aad_size) != 1:
            raise RuntimeError("AES-GCM: associated data refused")
        n = 0
        if size and EVP_DecryptUpdate(self._dec, buf, &n, _ptr(data), size) != 1:
            raise RuntimeError("AES-GCM: decryption failed")
        if EVP_CIPHER_CTX_ctrl(self._dec, EVP_CTRL_GCM_SET_TAG, TAG, <void *>(_ptr(data) + size)) != 1:
            raise RuntimeError("AES-GCM: setting the tag failed")
        ok = EVP_DecryptFinal_ex(self._dec, buf + n, &fin) == 1
        if not ok:
            # Never hand back (or leave lying in memory) what failed authentication.
            OPENSSL_cleanse(buf, size)
            raise InvalidTag("AES-GCM: the tag does not match")
        return out
