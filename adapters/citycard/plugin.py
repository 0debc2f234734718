"""Entry point ``payswitch.acquirers`` → ``citycard``: the city-card clearing centre from configuration."""
from __future__ import annotations


def citycard(a, index: int = 0, on_state=None):
    from adapters.citycard.adapter import CityCardAcquirer
    from adapters.tls import client_context

    if a.options:
        raise ValueError(f"citycard acquirers take no options table (got {', '.join(sorted(a.options))})")
    endpoints = []
    for ep in a.endpoints:
        host, _, port = ep.rpartition(":")
        endpoints.append((host, int(port)))
    return CityCardAcquirer(name=a.name, endpoints=endpoints, connections=a.connections, connect_timeout=2.0,
                            ssl=client_context(a))


citycard.kinds = frozenset({"citycard"})
