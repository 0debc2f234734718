"""Types of native/hmac256.pyx (HMAC-SHA256 on OpenSSL's SHA-256 state, the key's pads hashed once)."""

__all__ = ["HmacSha256"]

class HmacSha256:
    def __init__(self, key: bytes) -> None:
        """HMAC-SHA256 under key (any length; longer than 64 bytes: hashed first, RFC 2104)."""
    def digest(self, msg: bytes) -> bytes:
        """The 32-byte MAC of msg."""
    def hexdigest(self, msg: bytes, digits: int = 64) -> str:
        """The MAC in lower-case hex, its first digits (even, 2 to 64) only."""
