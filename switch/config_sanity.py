"""Configuration checks of things that parse but cannot work: numbers that are
not numbers, routes that can never be chosen, two bundled simulators (or a
simulator and a listener) on one port, currencies that are none.

Each is called from :func:`switch.config._check` with its ``fail(path, message)``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import msgspec

from switch.core.currencies import is_currency
from switch.core.routing import prefix_range, shown_prefix


def check_finite(node: Any, path: str, fail: Callable[[str, str], None]) -> None:
    """TOML has ``nan`` and ``inf``: every comparison with NaN is false, so a
    ``response_timeout = nan`` passes "must be > 0" and then no deadline ever
    comes; an infinite one never ends a wait either.  Refused wherever a float is."""
    if isinstance(node, float):
        if not math.isfinite(node):
            fail(path, f"must be a finite number, got {node}")
    elif isinstance(node, msgspec.Struct):
        for name in node.__struct_fields__:
            check_finite(getattr(node, name), f"{path}.{name}" if path else name, fail)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            check_finite(item, f"{path}[{i}]", fail)
    elif isinstance(node, dict):
        for key, item in node.items():
            check_finite(item, f"{path}.{key}", fail)


_CONDITIONS = ("mti_classes", "processing_codes", "merchants", "currencies", "min_amount", "max_amount")


def check_shadowed_prefixes(cfg: Any, fail: Callable[[str, str], None]) -> None:
    """A prefix that an earlier route already has, of the same length and with no
    condition, is never chosen: the route table takes the first of equal rules
    (native.routing).  Almost always a copy-paste slip that sends every such card
    to the first route's acquirer, so it is refused, naming both."""
    catch_all: list[tuple] = []  # (wallet?, length, lo, hi, path, prefix, route name)
    for i, route in enumerate(cfg.routes):
        wallet = route.kind == "wallet"
        ranges = []
        for j, spec in enumerate(route.prefixes):
            try:
                lo, hi = prefix_range(spec)
            except ValueError:
                continue  # reported by the prefix check itself
            ranges.append((len(lo), int(lo), int(hi), f"routes[{i}].prefixes[{j}]", spec, route.name))
        for length, lo, hi, path, spec, _name in ranges:
            for other_wallet, other_length, other_lo, other_hi, other_path, other_spec, other_name in catch_all:
                if other_wallet == wallet and other_length == length and other_lo <= lo and hi <= other_hi:
                    fail(path, f"prefix {shown_prefix(spec)!r} is never used: `$.{other_path}` "
                               f"({shown_prefix(other_spec)!r}, route "
                               f"{other_name!r}) comes first and takes every such number, with no condition")
        if all(getattr(route, c) is None for c in _CONDITIONS):
            catch_all += [(wallet, *r) for r in ranges]


# The currency each bundled wallet type settles in (ISO 4217 numeric, alphabetic): neither
# wallet API names a currency in its requests, so the wallet charges in its own
# (adapters.wallet.messages.WALLET_CURRENCY).
WALLET_SETTLES_IN = {"wallet-tradepay": ("156", "CNY"), "wallet-micropay": ("156", "CNY")}


def check_currencies(cfg: Any, fail: Callable[[str, str], None]) -> None:
    """Every currency key names an ISO 4217 currency (:mod:`switch.core.currencies`):
    a terminal's field 49 in any other answers 30 (spec section 2), so a merchant
    settling in one, a wallet taking one or a route choosing by one could never
    see a payment.  A bundled wallet type takes only the currency its wallet settles
    in: configured with another, it would charge the customer that many yuan for a
    payment the terminal asked in another currency."""
    def check(path: str, code: str) -> None:
        if not is_currency(code):
            fail(path, f"expected the ISO 4217 numeric code of a currency, got {code!r}")

    for i, mc in enumerate(cfg.merchants):
        check(f"merchants[{i}].currency", mc.currency)
    for i, a in enumerate(cfg.acquirers):
        check(f"acquirers[{i}].currency", a.currency)
        settles = WALLET_SETTLES_IN.get(a.type)
        if settles is not None and a.currency != settles[0]:
            fail(f"acquirers[{i}].currency",
                 f"a {a.type} wallet settles in {settles[1]}: its currency must be \"{settles[0]}\", got {a.currency!r}")
    for i, route in enumerate(cfg.routes):
        for j, code in enumerate(route.currencies or ()):
            check(f"routes[{i}].currencies[{j}]", code)


_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def check_listener_ports(cfg: Any, fail: Callable[[str, str], None]) -> None:
    """No two listeners, nor a listener and ``[http]``, on one address and port: the second bind
    would always fail, so it is the file's mistake, not a port some other process holds."""
    bound: list[tuple[str, int, str]] = [(cfg.http.host, cfg.http.port, "http.port")]
    for i, lst in enumerate(cfg.listeners):
        for host, port, path in bound:
            if lst.port and lst.port == port and (lst.host == host or {lst.host, host} & set(_WILDCARD_HOSTS)):
                fail(f"listeners[{i}].port", f"port {lst.port} is already taken by `$.{path}`")
        bound.append((lst.host, lst.port, f"listeners[{i}].port"))


_LOOPBACK_OR_ALL = ("127.0.0.1", "localhost", "0.0.0.0", "::", "")


def check_simulator_ports(cfg: Any, fail: Callable[[str, str], None]) -> None:
    """Bundled simulators listen on 127.0.0.1: two on one port, or one on a port
    the switch itself listens on there, can never both start."""
    taken: dict[int, str] = {}
    for host, port, path in [(cfg.http.host, cfg.http.port, "http.port")] + [
        (lst.host, lst.port, f"listeners[{i}].port") for i, lst in enumerate(cfg.listeners)
    ]:
        if port and host in _LOOPBACK_OR_ALL:
            taken.setdefault(port, path)
    for i, sim in enumerate(cfg.simulators):
        if sim.port in taken:
            fail(f"simulators[{i}].port", f"port {sim.port} is already taken by `$.{taken[sim.port]}`")
        if sim.port:
            taken[sim.port] = f"simulators[{i}].port"


def check_refund_limits(cfg: Any, fail: Callable[[str, str], None]) -> None:
    """``refund_max`` and ``refund_daily_max`` of each merchant (spec section 6.1): a
    number of minor units (of the merchant's ``currency``), or a table of them by
    ISO 4217 currency.  An empty table would refuse every refund in a way no one
    means: leave the key out for no limit, or give 0 for none at all.  At most
    what field 4 carries (a day's total too: more than one refund of that size
    a day is no limit anyone means)."""
    from switch.config_places import MAX_AMOUNT  # config_security, which it imports, imports the configuration

    for i, mc in enumerate(cfg.merchants):
        for key in ("refund_max", "refund_daily_max"):
            value = getattr(mc, key)
            if value is None:
                continue
            if isinstance(value, dict) and not value:
                fail(f"merchants[{i}].{key}", "an empty table names no currency: leave the key out for no limit")
            for code, amount in (value.items() if isinstance(value, dict) else [(None, value)]):
                path = f"merchants[{i}].{key}" + ("" if code is None else f'["{code}"]')
                if code is not None and not is_currency(code):
                    fail(path, f"expected the ISO 4217 numeric code of a currency as the key, got {code!r}")
                if amount < 0:
                    fail(path, f"must be 0 or more, got {amount}")
                if amount > MAX_AMOUNT:  # a slip (a unit for a cent, digits too many): no refund is that large
                    fail(path, f"must be 0 or more and at most {MAX_AMOUNT} (field 4: 12 digits of minor units),"
                               f" got {amount}")
