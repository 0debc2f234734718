"""Configuration of value-added services, customer tokens and the event relay (issue 11).

Kept beside :mod:`switch.config`, which takes these structs into its
``Config``; docs/value-added-services.md describes every key.
"""
from __future__ import annotations

import msgspec


class TokenKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A merchant group's customer-token key: a file or an environment variable holding hex.

    With neither, a key file is created beside the journal on first start
    (``<journal>.token-<group>-v<version>.key``, mode 0600), like the journal key.
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
    subject_prefix: str = "payswitch.events"  # subjects: <prefix>.<merchant>.<event>
    stream_prefix: str = "PAYSWITCH"  # one JetStream stream per merchant: <prefix>_<merchant>
    state_file: str | None = None  # relay cursors and audit log (default: beside the journal)
    partners: list[Partner] = []
    retry_max: float = 30.0  # longest wait between two tries of a webhook
