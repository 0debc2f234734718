"""Entry point ``payswitch.acquirers`` → ``citycard``: the city-card clearing centre from configuration."""
from __future__ import annotations

# The currency of a city card's field 49 when the configuration names none
# (``options = { currency = "..." }``): the demo merchants' (spec 7), which a
# third-party client of the sandbox sends, as do ``payswitch send`` and the
# shop day of loadtest/ with a city card (switch.client).
DEFAULT_CURRENCY = "156"


def citycard(a, index: int = 0, on_state=None):
    from adapters.citycard.adapter import CityCardAcquirer
    from adapters.tls import client_context

    endpoints = []
    for ep in a.endpoints:
        host, _, port = ep.rpartition(":")
        endpoints.append((host, int(port)))
    return CityCardAcquirer(name=a.name, endpoints=endpoints, connections=a.connections, connect_timeout=2.0,
                            ssl=client_context(a), currency=currency(a.options))


def currency(options: dict) -> str:
    """The centre's currency from the acquirer's options table (its only key); ValueError naming the key."""
    from switch.core.currencies import is_currency

    unknown = sorted(set(options) - {"currency"})
    if unknown:
        raise ValueError(f"citycard acquirers take only options.currency (got {', '.join(unknown)})")
    code = options.get("currency", DEFAULT_CURRENCY)
    if not isinstance(code, str) or not is_currency(code):
        raise ValueError(f"options.currency: expected the ISO 4217 numeric code of a currency, got {code!r}")
    return code


citycard.kinds = frozenset({"citycard"})
