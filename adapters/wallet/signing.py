"""Signatures of the two wallet API styles.

trade.pay style: RSA-SHA256 (PKCS#1 v1.5), base64.  A request is signed over
its parameters sorted by name, ``name=value`` joined by ``&`` (empty values
and ``sign`` left out); a response over the exact bytes of its response
object as sent.

micropay style: HMAC-SHA256 with the merchant's shared secret, upper-case hex,
over the sorted ``name=value&...`` string followed by ``&key=<secret>`` (the
string the real API signs).  The secret is ASCII text.

Keys come in as PEM / secret bytes from the caller; nothing here reads files.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def signing_string(params: Mapping[str, str]) -> str:
    """``a=1&b=2``: the parameters but ``sign`` and empty ones, sorted by name."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")


class RsaSigner:
    def __init__(self, private_key_pem: bytes, password: bytes | None = None):
        key = serialization.load_pem_private_key(private_key_pem, password=password)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"expected an RSA private key, got {type(key).__name__}")
        self._key = key

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


class RsaVerifier:
    def __init__(self, public_key_pem: bytes):
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"expected an RSA public key, got {type(key).__name__}")
        self._key = key

    def verify(self, data: bytes, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
            self._key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def hmac_sign(secret: bytes, params: Mapping[str, str]) -> str:
    text = f"{signing_string(params)}&key={secret.decode('ascii')}"
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest().upper()


def hmac_verify(secret: bytes, params: Mapping[str, str]) -> bool:
    given = params.get("sign", "")
    return hmac.compare_digest(given.encode(), hmac_sign(secret, params).encode())


def generate_rsa_pem(bits: int = 2048) -> tuple[bytes, bytes]:
    """A fresh (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
