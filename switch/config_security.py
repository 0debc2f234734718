"""Configuration checks of issue 8 that need no file access: connection caps
and deadlines, the admin token, TLS settings of acquirer links.

Called from :func:`switch.config._check` with its ``fail(path, message)``.
"""
from __future__ import annotations

import ipaddress
import os

from switch.config import ConfigError
from switch.secret_refs import shown, shown_url, url_credentials


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for anything else (0.0.0.0 included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def address_problem(host: str) -> str | None:
    """What is wrong with ``host`` if it is meant as an IP address, else None.

    Only digits and dots, or any colon, is an IP literal, never a host name (a
    name's last label is not all digits): ``999.1.1.1``, ``1.2.3`` (which the
    resolver would read as 1.2.0.3) and ``::g`` are refused here rather than
    resolved, or taken for a non-loopback address needing a token.
    """
    literal = host.strip("[]")  # an IPv6 address may come in brackets, as in a URL
    try:
        if ":" in literal:
            ipaddress.IPv6Address(literal)
        elif literal and not literal.strip("0123456789."):
            ipaddress.IPv4Address(literal)
    except ValueError as e:
        return f"invalid IP address: {e}"  # ipaddress names the address and what is wrong in it
    return None


def check_limits(cfg, fail) -> None:
    from switch.security.sandbox_only import check_paths

    check_acquirer_tls(cfg, fail)
    check_paths(cfg, fail)
    check_url_credentials(cfg, fail)
    hosts = [(f"listeners[{i}].host", lst.host) for i, lst in enumerate(cfg.listeners)] + [("http.host", cfg.http.host)]
    for path, host in hosts:  # before the token rule below, which reads any other text as a remote address
        problem = address_problem(host)
        if problem:
            fail(path, problem)
    for key in ("max_connections", "max_connections_per_address", "max_in_flight_per_terminal"):
        if getattr(cfg, key) < 1:
            fail(key, f"must be at least 1, got {getattr(cfg, key)}")
    for i, lst in enumerate(cfg.listeners):
        for key in ("frame_timeout", "idle_timeout"):
            if getattr(lst, key) <= 0:
                fail(f"listeners[{i}].{key}", f"must be > 0, got {getattr(lst, key)}")
    http = cfg.http
    if http.admin_token_file and http.admin_token_env:
        fail("http", "set admin_token_file or admin_token_env, not both")
    if not (http.admin_token_file or http.admin_token_env) and not is_loopback(http.host):
        fail(
            "http.host",
            f"the admin API on non-loopback address {http.host!r} needs a bearer token "
            "(admin_token_file or admin_token_env)",
        )


def load_admin_token(http, source: str = "") -> bytes | None:
    """The admin bearer token the ``[http]`` section names, or None when it names none.

    ``check-config`` and ``serve`` read it before anything starts, so a missing
    or short token is the same one-line configuration error in both.
    """
    if http.admin_token_env:
        key = "http.admin_token_env"
        value = os.environ.get(http.admin_token_env, "")
        where = f"environment variable {shown(http.admin_token_env, 'env')}"
    elif http.admin_token_file:
        key = "http.admin_token_file"
        where = f"admin_token_file {shown(http.admin_token_file, 'file')}"
        try:
            with open(http.admin_token_file, "rb") as f:
                value = f.read().decode("ascii", "replace")
        except OSError as e:
            raise ConfigError(f"{source}: cannot read {where}: {e.strerror} - at `$.{key}`") from None
    else:
        return None
    token = value.strip()
    if len(token) < 16:
        raise ConfigError(f"{source}: the admin token in {where} is missing or shorter than 16 characters - at `$.{key}`")
    return token.encode()


_TLS_TYPES = ("card", "citycard", "wallet-tradepay", "wallet-micropay")


def tls_wanted(a) -> bool:
    return bool(a.tls or a.tls_ca_file or a.tls_cert_file or a.tls_key_file)


def check_acquirer_tls(cfg, fail) -> None:
    for i, a in enumerate(cfg.acquirers):
        if a.merchant_key_passphrase_file and a.merchant_key_passphrase_env:
            fail(f"acquirers[{i}]", "set merchant_key_passphrase_file or merchant_key_passphrase_env, not both")
        if (a.merchant_key_passphrase_file or a.merchant_key_passphrase_env) and a.type != "wallet-tradepay":
            fail(f"acquirers[{i}].merchant_key_passphrase_file", "a pass phrase applies to a wallet-tradepay merchant key")
        if not tls_wanted(a):
            continue
        if a.type not in _TLS_TYPES:
            fail(f"acquirers[{i}].tls", f"a {a.type} acquirer takes its TLS settings in its options table")
        if bool(a.tls_cert_file) != bool(a.tls_key_file):
            fail(f"acquirers[{i}]", "mutual TLS needs both tls_cert_file and tls_key_file")
        if a.type.startswith("wallet-"):
            for j, ep in enumerate(a.endpoints):
                if not ep.startswith("https://"):
                    fail(f"acquirers[{i}].endpoints[{j}]", f"TLS settings need an https:// URL, got {ep!r}")


def check_url_credentials(cfg, fail) -> None:
    """No URL in the file holds a user and password (PCI DSS 8.3.2): the file is read by many,
    copied into tickets and kept in version control.  A NATS URL that needs them comes from
    an environment variable (``events.nats_url_env``); webhooks and services are signed
    with their own secrets instead."""
    import msgspec

    def walk(value, path: str) -> None:
        if isinstance(value, msgspec.Struct):
            for f in value.__struct_fields__:
                walk(getattr(value, f), f"{path}.{f}" if path else f)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, str) and url_credentials(value):
            fail(path, f"a URL with credentials (user:password@) is not kept in the configuration, got "
                       f"{shown_url(value)!r}: take the credentials out, or give the URL by a secret "
                       "reference (events.nats_url_env for NATS)")

    walk(cfg, "")


def secret_env_names(cfg) -> set[str]:
    """Every environment variable the configuration reads a secret from (keys ending ``_env``).

    Child processes (the sandbox simulators) are started without them.
    """
    import msgspec

    names: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, msgspec.Struct):
            for f in value.__struct_fields__:
                v = getattr(value, f)
                if f.endswith("_env") and isinstance(v, str) and v:
                    names.add(v)
                else:
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(cfg)
    return names
