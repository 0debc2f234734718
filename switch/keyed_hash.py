"""HMAC-SHA256 with the key's two padded blocks hashed once (RFC 2104).

``hmac.digest(key, msg, "sha256")`` costs ~7.7 µs here (OpenSSL 3 looks the
digest up by name on every call) and ``hmac.new`` ~4 µs; the request path
takes two keyed digests per payment (the PAN hash, the content digest).
Hashing ``key XOR ipad`` and ``key XOR opad`` once per key and copying those
states per message gives the same HMAC for ~0.9 µs.
"""
from __future__ import annotations

import functools
import hashlib

_BLOCK = 64  # SHA-256's block size


class HmacSha256:
    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, msg: bytes) -> str:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __repr__(self) -> str:
        return "HmacSha256(<key>)"


@functools.lru_cache(maxsize=64)
def keyed(key: bytes) -> HmacSha256:
    """The (cached) HMAC-SHA256 of ``key``: a handful of keys live for the process."""
    return HmacSha256(key)
