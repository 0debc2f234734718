"""Configuration of value-added services, customer tokens and the event relay (issue 11).

Kept beside :mod:`switch.config`, which takes these structs into its
``Config``; docs/value-added-services.md describes every key.
"""
from __future__ import annotations

import os

import msgspec

from switch.secret_refs import shown


class TokenKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A merchant group's customer-token key: a file or an environment variable holding hex.

    With neither, a key file is created beside the journal key on first start
    (``<journal>.token-<group>-v<version>.key``, mode 0600); with the journal key
    in an environment variable there is no such folder, and a group without one
    is a configuration error (never a file in the working directory).
    The highest version of a group is the one in use.
    """

    group: str
    version: int = 1
    key_file: str | None = None
    key_env: str | None = None


class VasService(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A value-added service called at payment (docs/value-added-services.md)."""

    name: str
    merchants: list[str]  # the merchants whose payments it sees
    # "http" (JSON over HTTP, HMAC-signed, keep-alive pool) or a plugin type
    # registered under the entry points ``payswitch.vas``.
    type: str = "http"
    url: str = ""
    secret_file: str | None = None  # HMAC key of the requests (hex); never in this file
    secret_env: str | None = None
    deadline: float = 0.05  # seconds; past it the payment goes on without the service
    moments: list[str] = msgspec.field(default_factory=lambda: ["before", "after"])
    connections: int = 4
    options: dict[str, str | int | float | bool | list[str]] = {}


class Partner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A partner of the event stream, granted merchants explicitly."""

    name: str
    merchants: list[str]
    webhook: str | None = None  # POST URL; None: the partner reads NATS
    secret_file: str | None = None  # HMAC key of the webhook signatures (hex)
    secret_env: str | None = None


class Events(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The relay from the journal's outbox (``payswitch relay``); off until configured."""

    nats_url: str | None = None  # e.g. "nats://127.0.0.1:4222"; None: no NATS
    # The NATS URL from this environment variable instead: the one way to give it a
    # user and password (never in this file: switch.config_security.check_url_credentials).
    nats_url_env: str | None = None
    subject_prefix: str = "payswitch.events"  # subjects: <prefix>.<merchant>.<event>
    stream_prefix: str = "PAYSWITCH"  # one JetStream stream per merchant: <prefix>_<merchant>
    state_file: str | None = None  # relay cursors and audit log (default: beside the journal)
    partners: list[Partner] = []
    retry_max: float = 30.0  # longest wait between two tries of a webhook
    metrics_listen: str | None = None  # "host:port" of the relay's /metrics (Prometheus); None: not served
    audit_days: float = 90.0  # days the relay's audit log keeps a row (pruned hourly); 0: kept for ever


_MOMENTS = ("before", "after")
_MAX_DEADLINE = 1.0  # seconds: a service is a garnish on the payment, never its bottleneck


_NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def check(cfg, fail) -> None:
    """Cross-field checks (no files read); ``fail(path, message)`` raises."""
    merchants = {mc.id for mc in cfg.merchants}
    names: set[str] = set()
    for i, s in enumerate(cfg.vas):
        if s.name in names:
            fail(f"vas[{i}].name", f"service {s.name!r} is configured twice")
        names.add(s.name)
        if not 0 < s.deadline <= _MAX_DEADLINE:
            fail(f"vas[{i}].deadline", f"must be > 0 and at most {_MAX_DEADLINE} s, got {s.deadline}")
        for j, moment in enumerate(s.moments):
            if moment not in _MOMENTS:
                fail(f"vas[{i}].moments[{j}]", f"expected before or after, got {moment!r}")
        for j, merchant_id in enumerate(s.merchants):
            if merchant_id not in merchants:
                fail(f"vas[{i}].merchants[{j}]", f"unknown merchant {merchant_id!r}")
        if s.type == "http":
            if not s.url.startswith(("http://", "https://")):
                fail(f"vas[{i}].url", f"an http service needs an http(s):// URL, got {s.url!r}")
            if not (s.secret_file or s.secret_env):
                fail(f"vas[{i}]", "an http service needs secret_file or secret_env (requests are signed)")
        if s.connections < 1:
            fail(f"vas[{i}].connections", "must be 1 or more")
    for i, k in enumerate(cfg.token_keys):
        if k.version < 1:
            fail(f"token_keys[{i}].version", f"must be 1 or more, got {k.version}")
        if k.key_file and k.key_env:
            fail(f"token_keys[{i}]", "key_file or key_env, not both")
    if cfg.events.retry_max <= 0:  # the webhook retry wait doubles up to it; 0 or less would retry at once, forever
        fail("events.retry_max", f"must be > 0, got {cfg.events.retry_max}")
    if cfg.events.nats_url and cfg.events.nats_url_env:
        fail("events", "set nats_url or nats_url_env, not both")
    if cfg.events.nats_url_env and cfg.events.nats_url_env not in os.environ:
        fail("events.nats_url_env", f"environment variable {shown(cfg.events.nats_url_env, 'env')} is not set")
    url = cfg.events.nats_url or (os.environ.get(cfg.events.nats_url_env) if cfg.events.nats_url_env else None)
    if url is not None and ("://" in url and not url.startswith(_NATS_SCHEMES) or not url.strip()):
        fail("events.nats_url", f"expected host:port or a URL of {', '.join(_NATS_SCHEMES)}, got {url!r}")
    if cfg.events.audit_days < 0:
        fail("events.audit_days", f"must be 0 (kept for ever) or more, got {cfg.events.audit_days}")
    listen = cfg.events.metrics_listen
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            fail("events.metrics_listen", f"expected 'host:port', got {listen!r}")
    partners: set[str] = set()
    for i, p in enumerate(cfg.events.partners):
        if p.name in partners:  # the name keys the partner's cursor in the relay's state file
            fail(f"events.partners[{i}].name", f"partner {p.name!r} is configured twice")
        partners.add(p.name)
        for j, merchant_id in enumerate(p.merchants):
            if merchant_id not in merchants:
                fail(f"events.partners[{i}].merchants[{j}]", f"unknown merchant {merchant_id!r}")
        if p.webhook is not None and not p.webhook.startswith(("http://", "https://")):
            fail(f"events.partners[{i}].webhook", f"expected an http(s):// URL, got {p.webhook!r}")
        if p.webhook and not (p.secret_file or p.secret_env):
            fail(f"events.partners[{i}]", "a webhook partner needs secret_file or secret_env (webhooks are signed)")
