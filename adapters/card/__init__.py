"""Bank-card acquirers over an ISO 8583 host link (host-87-bcd dialect).

``HostLinkAcquirer`` (in :mod:`adapters.card.link`, asyncio) is imported
lazily, so the trio simulator (:mod:`adapters.card.sim`, deciding in
:mod:`adapters.card.sandbox`) and the sans-I/O core (:mod:`adapters.card.hostlink`
with :mod:`~adapters.card.messages`, :mod:`~adapters.card.inflight` and
:mod:`~adapters.card.breaker`) never pull asyncio into their process.
"""

__all__ = ["HostLinkAcquirer"]


def __getattr__(name: str):
    if name == "HostLinkAcquirer":
        from adapters.card.link import HostLinkAcquirer

        return HostLinkAcquirer
    raise AttributeError(f"module 'adapters.card' has no attribute {name!r}")
