"""HMAC-SHA256 with the key's two padded blocks hashed once (RFC 2104).

``hmac.digest(key, msg, "sha256")`` costs ~7.7 µs here (OpenSSL 3 looks the
digest up by name on every call) and ``hmac.new`` ~4 µs; the request path
takes two keyed digests per payment (the PAN hash, the content digest).
:class:`native.hmac256.HmacSha256` hashes ``key XOR ipad`` and ``key XOR
opad`` once per key and copies those SHA-256 states on the stack per
message, without a Python object between the steps.
"""
from __future__ import annotations

import functools

from native.hmac256 import HmacSha256

__all__ = ["HmacSha256", "keyed"]


@functools.lru_cache(maxsize=64)
def _cached(key: bytes) -> HmacSha256:
    return HmacSha256(key)


def keyed(key: bytes) -> HmacSha256:
    """The (cached) HMAC-SHA256 of ``key``: a handful of keys live for the process.

    The request path asks for the same key on every payment (the content digest):
    the key asked for last is answered by an identity check, before the cache's
    hash and look-up."""
    global _last
    last = _last
    if last[0] is key:
        return last[1]
    mac = _cached(key)
    _last = (key, mac)  # one tuple, replaced whole: safe from any thread
    return mac


# (key, keyed(key)) of the last call.
_last: tuple = (None, None)
