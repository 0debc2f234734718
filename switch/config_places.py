"""Configuration checks of where things are and how big they may be: the
file's own encoding, the addresses the switch listens on and connects to
(host:port keys and the hosts inside URLs),
the range of every number, and the merchants a route names.

Called from :func:`switch.config._check` (after its own checks, whose
messages stay as they were) with its ``fail(path, message)``, and from
:func:`switch.config.load` for the file's text.  No file is looked at here
(:mod:`switch.preflight` does that).
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable

from switch.config_security import address_problem

Fail = Callable[[str, str], None]

_DAY = 86400.0

# (key, lowest, highest, lowest excluded): seconds unless said.  Wide enough for any
# deployment, narrow enough that a slip of the finger (a missing dot, ms for s) fails.
_TOP = (
    ("response_timeout", 0.0, 600.0, True),
    ("reversal_retry", 0.01, 3600.0, False),  # below it a failing acquirer is asked in a loop
    ("reversal_backoff_max", 0.0, _DAY, False),
    ("reversal_not_found_window", 0.0, 7 * _DAY, False),
    ("retransmission_window", 0.0, 7 * _DAY, False),
    ("card_retention", 0.0, 31 * _DAY, False),
    ("drain_timeout", 0.0, 3600.0, False),
    ("max_connections", 1, 1_000_000, False),
    ("max_connections_per_address", 1, 1_000_000, False),
    ("max_in_flight_per_terminal", 1, 65535, False),
)
_LISTENER = (
    ("max_in_flight", 1, 65535, False),
    ("frame_timeout", 0.0, 3600.0, True),
    ("idle_timeout", 0.0, 7 * _DAY, True),
)
_ACQUIRER = (
    ("connections", 1, 256, False),
    ("echo_interval", 0.0, _DAY, True),
    ("breaker_threshold", 1, 1000, False),
    ("breaker_cooldown", 0.0, 3600.0, True),
    ("poll_interval", 0.0, 600.0, True),
    ("cancel_margin", 0.0, 600.0, False),
)
_HSM = (
    ("timeout", 0.0, 60.0, True),
    ("header_length", 0, 64, False),
)
_VAS = (("connections", 1, 256, False),)
_EVENTS = (
    ("retry_max", 0.0, _DAY, True),
    ("audit_days", 0.0, 36500.0, False),
)
_TOKEN_KEY = (("version", 1, 1_000_000, False),)
MAX_AMOUNT = 999_999_999_999  # field 4: n12, minor units
_ROUTE = (
    ("min_amount", 0, MAX_AMOUNT, False),
    ("max_amount", 0, MAX_AMOUNT, False),
)


def decode_problem(data: bytes) -> str | None:
    """What keeps ``data`` from being the UTF-8 text TOML is, where, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return (f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column {column} "
                "(a TOML file is UTF-8: save it as UTF-8)")
    return None


def _bounds(obj: Any, table: tuple, prefix: str, fail: Fail) -> None:
    for key, low, high, open_low in table:
        value = getattr(obj, key)
        if value is None:
            continue  # unset (drain_timeout, amounts): its default applies
        if (value <= low if open_low else value < low) or value > high:
            low_text = f"above {low}" if open_low else f"at least {low}"
            fail(f"{prefix}{key}", f"must be {low_text} and at most {high}, got {value}")


def check_bounds(cfg: Any, fail: Fail) -> None:
    """Every number of the configuration within a lower and an upper bound."""
    _bounds(cfg, _TOP, "", fail)
    for i, lst in enumerate(cfg.listeners):
        _bounds(lst, _LISTENER, f"listeners[{i}].", fail)
    for i, a in enumerate(cfg.acquirers):
        _bounds(a, _ACQUIRER, f"acquirers[{i}].", fail)
    module = cfg.security.module
    if module is not None and hasattr(module, "key_table"):
        _bounds(module, _HSM, "security.module.", fail)
    for i, s in enumerate(cfg.vas):
        _bounds(s, _VAS, f"vas[{i}].", fail)
    _bounds(cfg.events, _EVENTS, "events.", fail)
    for i, k in enumerate(cfg.token_keys):
        _bounds(k, _TOKEN_KEY, f"token_keys[{i}].", fail)
    for i, r in enumerate(cfg.routes):
        _bounds(r, _ROUTE, f"routes[{i}].", fail)


def host_problem(host: str) -> str | None:
    """What is wrong with a host name or IP address to listen on or connect to, or None."""
    if not host.strip():
        return "empty host: name an address (0.0.0.0 or :: for every interface, 127.0.0.1 for this machine only)"
    if host != host.strip():
        return f"host {host!r} has spaces around it"
    if host.startswith("[") or host.endswith("]"):
        inner = host.strip("[]")
        return f"write the IPv6 address without brackets: {inner} (not {host})"
    return address_problem(host)


def _endpoint_problem(endpoint: str) -> str | None:
    """The host of a ``host:port`` endpoint (split at its last colon: ``::1:9101`` is ::1, port 9101)."""
    host, sep, _ = endpoint.rpartition(":")
    if not sep:
        return None  # the caller's own check names a missing port
    if host.startswith("[") and host.endswith("]"):
        return f"write the IPv6 address without brackets: {host[1:-1]}{endpoint[len(host):]} (not {endpoint})"
    return host_problem(host)


def check_hosts(cfg: Any, fail: Fail) -> None:
    for i, lst in enumerate(cfg.listeners):
        problem = host_problem(lst.host)
        if problem:
            fail(f"listeners[{i}].host", problem)
    problem = host_problem(cfg.http.host)
    if problem:
        fail("http.host", problem)
    from switch.config import _HOSTPORT_TYPES  # the bundled types whose endpoints are host:port

    for i, a in enumerate(cfg.acquirers):
        if a.type not in _HOSTPORT_TYPES:
            continue
        for j, ep in enumerate(a.endpoints):
            problem = _endpoint_problem(ep)
            if problem:
                fail(f"acquirers[{i}].endpoints[{j}]", problem)
    module = cfg.security.module
    for j, ep in enumerate(getattr(module, "endpoints", None) or ()):
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"security.module.endpoints[{j}]", f"expected 'host:port', got {ep!r}")
        problem = _endpoint_problem(ep)
        if problem:
            fail(f"security.module.endpoints[{j}]", problem)
    if cfg.events.metrics_listen is not None:
        problem = _endpoint_problem(cfg.events.metrics_listen)
        if problem:
            fail("events.metrics_listen", problem)


# Letters, digits, dots, hyphens (and the underscore of container and compose names).
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def url_problem(url: str) -> str | None:
    """What is wrong with the host or port of ``url`` (scheme://[user@]host[:port][/...]), or None.

    The scheme is the caller's to check.  Never quotes the user or password: an error
    names the key path, and the part at fault only when it is the host or the port."""
    _, _, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]  # after user:password@
    if authority.startswith("["):  # an IPv6 address, in brackets as RFC 3986 3.2.2 writes it
        host, bracket, port = authority[1:].partition("]")
        if not bracket:
            return "the URL's host opens a [ it does not close"
        if port and not port.startswith(":"):
            return "the URL's host is followed by something other than :port"
        try:
            ipaddress.IPv6Address(host)
        except ValueError as e:
            return f"invalid IP address: {e}"
        return _port_problem(port[1:]) if port else None
    host, colon, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if ":" in host:
        return f"an IPv6 address in a URL goes in brackets: [{host}]:{port}"
    if not host:
        return "the URL names no host"
    if any(c.isspace() for c in host):
        return "the URL's host has a space in it"
    if not _HOST_NAME.fullmatch(host):
        return f"the URL's host {host!r} has characters a host name cannot have"
    return address_problem(host) or (_port_problem(port) if colon else None)


def _port_problem(port: str) -> str | None:
    if port.isdigit() and 0 < int(port) < 65536:
        return None
    return f"the URL's port must be 1 to 65535, got {int(port) if port.isdigit() else repr(port)}"


def check_urls(cfg: Any, fail: Fail) -> None:
    """The hosts of URL-valued keys (their schemes are checked with each key's other rules)."""
    from switch.config import _URL_TYPES  # the bundled types whose endpoints are URLs

    urls = [(f"acquirers[{i}].endpoints[{j}]", ep) for i, a in enumerate(cfg.acquirers) if a.type in _URL_TYPES
            for j, ep in enumerate(a.endpoints)]
    urls += [(f"vas[{i}].url", s.url) for i, s in enumerate(cfg.vas) if s.type == "http"]
    urls += [(f"events.partners[{i}].webhook", p.webhook) for i, p in enumerate(cfg.events.partners) if p.webhook]
    # The NATS URL, in the file or in the variable that may give it a password too; the
    # NATS client reads one without a scheme as nats://.
    env = cfg.events.nats_url_env
    for path, nats in (("events.nats_url", cfg.events.nats_url), ("events.nats_url_env", env and os.environ.get(env))):
        if nats:
            urls.append((path, nats if "://" in nats else f"nats://{nats}"))
    for path, url in urls:
        problem = url_problem(url)
        if problem:
            fail(path, problem)


def check_route_merchants(cfg: Any, fail: Fail) -> None:
    """A route's ``merchants``: merchant IDs the configuration has, each once, and not an empty list."""
    known = {mc.id for mc in cfg.merchants}
    for i, r in enumerate(cfg.routes):
        if r.merchants is None:
            continue
        if not r.merchants:
            fail(f"routes[{i}].merchants", "an empty list matches no merchant: leave the key out for every merchant")
        seen: set[str] = set()
        for j, mid in enumerate(r.merchants):
            where = f"routes[{i}].merchants[{j}]"
            if not 1 <= len(mid) <= 15 or mid != mid.strip():
                fail(where, f"expected a merchant ID (field 42: 1 to 15 characters, no spaces around), got {mid!r}")
            if mid in seen:
                fail(where, f"merchant {mid!r} is named twice")
            seen.add(mid)
            if mid not in known:
                fail(where, f"unknown merchant {mid!r}: the route would never match it (merchants are "
                     "configured in [[merchants]])")


def check(cfg: Any, fail: Fail) -> None:
    check_bounds(cfg, fail)
    check_hosts(cfg, fail)
    check_urls(cfg, fail)
    check_route_merchants(cfg, fail)
