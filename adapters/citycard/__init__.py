"""City-card (stored-value transit card) clearing centre: adapter and simulator.

- ``crypto``: DK derivation, retail MAC, TAC / MAC1 / MAC2 (spec 4.1)
- ``protocol``: the centre's wire protocol (length-prefixed JSON)
- ``centre``: the simulator's ledger rules, sans-I/O
- ``mapping``: switch Request/Result to and from centre messages, sans-I/O
- ``adapter``: :class:`CityCardAcquirer` (asyncio, switch process)
- ``sim``: the simulator's server and CLI (trio, its own process)

``CityCardAcquirer`` is imported lazily so that the trio simulator never loads
the asyncio adapter.
"""

__all__ = ["CityCardAcquirer"]


def __getattr__(name: str):
    if name == "CityCardAcquirer":
        from .adapter import CityCardAcquirer

        return CityCardAcquirer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
