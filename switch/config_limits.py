"""Configuration checks of issue 8: connection caps and deadlines, the admin
token, TLS files of host links, wallet URLs and journal-key placement rules
that need no file access.

Called from :func:`switch.config._check` with its ``fail(path, message)``.
"""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for anything else (0.0.0.0 included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_limits(cfg, fail) -> None:
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
