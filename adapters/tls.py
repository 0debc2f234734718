"""Client TLS for acquirer links: card host links, the city-card centre, https:// wallets.

Verification is always on (certificate chain and host name): ``tls_ca_file``
names the CA that signs the acquirer's certificate (without it, the system's
CAs); ``tls_cert_file`` / ``tls_key_file`` are our certificate and key when
the acquirer wants mutual TLS.  TLS 1.2 or later.  A file that can't be read
or a key that doesn't match is a ValueError naming the file (a configuration
error, see :mod:`switch.wiring`), never quoting its content.
"""
from __future__ import annotations

import ssl


def client_context(a) -> ssl.SSLContext | None:
    """The context for acquirer ``a``'s connections, or None for plain TCP."""
    if not (getattr(a, "tls", False) or a.tls_ca_file or a.tls_cert_file or a.tls_key_file):
        return None
    return make_context(a.tls_ca_file, a.tls_cert_file, a.tls_key_file)


def make_context(ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load TLS CA file {ca_file}: {getattr(e, 'strerror', None) or e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as e:
            why = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
            raise ValueError(f"cannot load TLS client certificate {cert_file} / key {key_file}: {why}") from None
    return ctx
