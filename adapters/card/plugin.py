"""Entry point ``payswitch.acquirers`` → ``card``: a bank-card host link from configuration.

Options: ``endpoints`` ("host:port", tried in order), ``acquirer_id`` (field
32), ``connections``, ``echo_interval``, ``dialect`` (a name in
native/dialects/ or a path to a dialect TOML file; default host-87-bcd) and
``header`` (binary2, bcd2 or ascii4 length framing; default binary2),
``mac`` and ``mac_key`` (host-link MACs under a zone MAC key held by the
switch's security module, handed to the adapter by
``use_security_module`` at start-up: :mod:`adapters.card.hostmac`).
Serves card routes, and wallet routes whose codes the card host takes
(UnionPay QR).
"""
from __future__ import annotations


def _hostport(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host, int(port)


def card(a, index: int = 0, on_state=None):
    from adapters.card.link import HostLinkAcquirer
    from adapters.tls import client_context

    options = {}
    if a.dialect:
        options["dialect"] = a.dialect
    if a.header:
        options["header"] = a.header
    if a.options:
        raise ValueError(f"card acquirers take no options table (got {', '.join(sorted(a.options))})")
    return HostLinkAcquirer(
        name=a.name,
        endpoints=[_hostport(e) for e in a.endpoints],
        acquirer_id=a.acquirer_id,
        connections=a.connections,
        echo_interval=a.echo_interval,
        connect_timeout=2.0,
        breaker_threshold=a.breaker_threshold,
        breaker_cooldown=a.breaker_cooldown,
        ssl=client_context(a),
        mac=a.mac,
        mac_key=a.mac_key,
        **options,
    )


card.kinds = frozenset({"card", "wallet"})
