"""Types of native/aead.pyx (AES-GCM through OpenSSL's EVP interface, the key schedule kept)."""

__all__ = ["AesGcm", "InvalidTag"]

class InvalidTag(ValueError):
    """The ciphertext, tag, nonce or associated data is not what was sealed (or another key)."""

class AesGcm:
    def __init__(self, key: bytes) -> None:
        """AES-GCM under key (16, 24 or 32 bytes); 12-byte nonces, 16-byte tags."""
    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """Ciphertext followed by the tag, as cryptography's AESGCM.encrypt gives."""
    def seal(self, prefix: bytes, data: bytes, aad: bytes) -> bytes:
        """prefix + a fresh 12-byte random nonce + ciphertext + tag."""
    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The plaintext of ciphertext + tag; InvalidTag if it does not open."""
