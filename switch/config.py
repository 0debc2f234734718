"""Configuration: TOML loaded into strict msgspec Structs.

A bad configuration never half-starts the switch: :func:`load` raises
:class:`ConfigError` naming the file, the key path and what was wrong, e.g.
``payswitch.toml: Expected `int`, got `str` - at `$.listeners[0].port```.

Secrets are never in the file itself: keys are referenced by file path or
environment variable name (``*_file`` / ``*_env`` keys).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

# Terminal ranges and prefix ranges are rules of the switch's core, which
# must not import the configuration.
from switch.core.routing import MAX_TERMINALS, expand_terminals, prefix_range
from switch.security import config as security_config
from switch import config_sanity, config_timing, config_vas
from switch.config_choices import choices
from switch.config_dialect import dialect_problem
from switch.config_hint import unknown_key_hint
from switch.config_reload import reload_changes  # noqa: F401 (re-exported)
from switch.config_terminals import check_order_prefixes
from switch.sandbox_default import DEFAULT_TOML, HOST_MACS
from switch.secret_refs import shown, shown_url, strings_in, withheld

__all__ = ["Config", "ConfigError", "load", "loads", "default", "reload_changes", "journal_url_problem", "error_line",
           "error_for_others"]


class ConfigError(ValueError):
    """The configuration is unusable; the message names file, key path and problem."""

    #: The string values of the file (set by :func:`loads` once it parsed): what
    #: :func:`error_for_others` leaves out.
    values: frozenset[str] = frozenset()


def error_line(e: ConfigError, path: str | os.PathLike | None) -> str:
    """The one line ``serve``, ``check-config`` and the other commands that load ``path``
    print for a configuration problem (exit 2), quoting no value of the file as
    :func:`error_for_others`: their stderr ends in the journal of systemd, a CI log or a
    ticket, read by others than the file's owner, who finds the value at the key path."""
    return f"payswitch: configuration error: {error_for_others(e, path)}"


def error_for_others(e: ConfigError, path: str | os.PathLike | None) -> str:
    """``str(e)`` for readers other than the file's owner: the answer to ``POST
    /admin/reload``, the running switch's log line, a refused start's stderr.  The file,
    the key path and the problem, quoting no value of the file (any may be a secret or
    a card number pasted where it does not belong, a URL may carry a password:
    :func:`switch.secret_refs.withheld`); numbers (a port) and the words a key chooses
    from (:mod:`switch.config_choices`) stay.  ``path``, the file, is read again for
    what an error raised after loading quotes (a key file's name, an acquirer's)."""
    values = set(e.values)
    if path:
        try:
            values |= strings_in(tomllib.loads(Path(path).read_text("utf-8")))
        except (OSError, ValueError):  # unreadable, not UTF-8, not TOML: its error quotes none of it
            pass
    values -= choices(Config)
    text = str(e)
    # The file as the error names it: as given (``read_config``), or as Path writes it (``load``).
    keep = next((k for k in (str(path), str(Path(path))) if text.startswith(f"{k}: ")), "") if path else ""
    return withheld(text, values, keep=keep)


class Listener(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "0.0.0.0"
    port: int = 8583
    header: Literal["binary2", "bcd2", "ascii4"] = "binary2"
    tpdu: bool = False
    max_frame: int = 8192
    max_in_flight: int = 256  # per connection; reading pauses beyond it (back-pressure)
    # The terminals' ISO 8583 dialect: a shipped one (terminal-87, iso87-ascii,
    # host-87-bcd) or the path of a dialect file (schema: native/dialects/terminal-87.toml).
    # Answers go out in the request's dialect.
    dialect: str = "terminal-87"
    # TLS 1.2+ (spec section 1), same framing inside: PEM certificate chain and key files.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Spec section 1 v1.1: seconds for a frame to arrive whole after its first
    # byte, and seconds a connection may sit with no bytes and nothing in flight.
    frame_timeout: float = 10.0
    idle_timeout: float = 1800.0


class Http(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 9583
    # Bearer token for /admin/*: a file holding it or an environment variable.
    # Required when host is not a loopback address.
    admin_token_file: str | None = None
    admin_token_env: str | None = None


class Server(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Worker processes serving terminals (switch.io.workers): 1 is one process
    # as always; N > 1 (or "auto": one per core) starts a supervisor, one
    # journal writer process and N workers, each with its own SO_REUSEPORT
    # listener, so the kernel spreads connections between them.
    workers: int | str = 1


MAX_WORKERS = 256


def worker_count(workers: int | str) -> int:
    """The number of worker processes ``[server] workers`` asks for ("auto": one per core)."""
    if workers == "auto":
        return os.cpu_count() or 1
    return int(workers)


class Journal(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite://payswitch-journal.sqlite"  # sqlite://relative/path, sqlite:///absolute/path
    # Where the database runs: "thread" (a writer thread in the switch) or
    # "process" (a writer process of its own: the event loop never waits for it).
    writer: str = "thread"
    # HMAC key for PAN look-ups: a file holding the key (hex) or an environment
    # variable holding it (hex).  With neither, a key file is created beside the
    # journal on first start (mode 0600).
    hmac_key_file: str | None = None
    hmac_key_env: str | None = None


class Merchant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    # Terminal IDs, each either "DEMO0001" or a range "DEMO0001-DEMO0999"
    # (same alphabetic stem, numeric suffix range).
    terminals: list[str]
    name: str = ""
    currency: str = "156"  # field 49 when a request has none (settlement totals, section 6.1)
    # Section 6.1: refunds without an original, minor units (a number: of `currency`; a table: per currency).
    refund_max: int | dict[str, int] | None = None  # largest single refund
    refund_daily_max: int | dict[str, int] | None = None  # refunds approved per UTC day, each currency apart
    group: str = ""  # merchant group of its customer tokens (default: the merchant id)


class Acquirer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    # A registered acquirer type (entry points ``payswitch.acquirers``): the
    # bundled card, citycard, wallet-tradepay, wallet-micropay or an installed
    # adapter package's (docs/adapters.md).
    type: str
    endpoints: list[str]  # "host:port" (card, citycard) or base URL (wallets)
    timeout: float = 25.0  # per-request deadline at the acquirer, seconds
    connections: int = 2
    acquirer_id: str = "00000000001"  # field 32 on card host links
    echo_interval: float = 30.0
    # Card host links: an endpoint whose transactions time out this many times in
    # a row is skipped (failover) until, after the cool-down, one request probes it.
    breaker_threshold: int = 5
    breaker_cooldown: float = 10.0
    # Wallets: credentials are paths to key files (never keys in clear here).
    app_id: str = ""
    mch_id: str = ""  # micropay merchant number
    merchant_key_file: str | None = None  # trade.pay: merchant RSA private key (PEM)
    # trade.pay: the pass phrase of an encrypted merchant key, from a file or an environment variable.
    merchant_key_passphrase_file: str | None = None
    merchant_key_passphrase_env: str | None = None
    wallet_public_key_file: str | None = None  # trade.pay: wallet RSA public key (PEM)
    secret_file: str | None = None  # micropay: shared HMAC secret
    poll_interval: float = 3.0  # seconds between queries while the customer confirms
    cancel_margin: float = 10.0  # seconds kept before the deadline to cancel / reverse
    currency: str = "156"  # the only currency a wallet takes (field 49); others answer 12
    # Card host links: the host's dialect (a name in native/dialects/ or a path
    # to a dialect TOML file; default host-87-bcd) and length header (default binary2).
    dialect: str | None = None
    header: Literal["binary2", "bcd2", "ascii4"] | None = None
    # TLS to the acquirer (card, citycard; wallets on https://): the CA that
    # signs its certificate (verification always on; none: the system's CAs),
    # and our client certificate and key for mutual TLS.  `tls = true` with no
    # file: TLS against the system's CAs.
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Card host links: the MAC of every message to and from the acquirer (field
    # 64, or 128 with a secondary bitmap): "tdes-retail" (ISO 9797-1 algorithm
    # 3, padding 1) or "aes-cmac" (truncated to 8 bytes), under the zone MAC key
    # named `mac_key` in the security module (kind zak; never a key in clear here).
    mac: Literal["none", "tdes-retail", "aes-cmac"] = "none"
    mac_key: str | None = None
    # Options of a third-party adapter type, passed to it as they are.
    options: dict[str, str | int | float | bool | list[str]] = {}


class Route(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: Literal["card", "wallet", "citycard"]
    # Digit prefixes or ranges of prefixes of the PAN / payment code:
    # "4", "51-55", "400000-499999".
    prefixes: list[str]
    acquirers: list[str]  # tried in order (fallback)
    mti_classes: list[str] | None = None  # "01", "02", ...
    processing_codes: list[str] | None = None  # 2-digit transaction types
    merchants: list[str] | None = None
    currencies: list[str] | None = None
    min_amount: int | None = None
    max_amount: int | None = None


class Simulator(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A bundled simulator started as a child process beside the switch."""

    kind: Literal["acquirer", "wallet", "citycard", "loyalty"]
    name: str
    port: int
    args: list[str] = []


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The sandbox of spec 7 (the embedded default says so): its public demo keys,
    # master key and HSM key table are refused anywhere else (switch.security.sandbox_only).
    sandbox: bool = False
    listeners: list[Listener] = msgspec.field(default_factory=lambda: [Listener()])
    http: Http = msgspec.field(default_factory=Http)
    journal: Journal = msgspec.field(default_factory=Journal)
    server: Server = msgspec.field(default_factory=Server)
    response_timeout: float = 60.0  # the terminal's budget (spec section 6)
    reversal_retry: float = 5.0  # seconds before a reversal's first repeat (then doubling)
    reversal_backoff_max: float = 60.0  # longest wait between two repeats of a reversal
    # A reversal answered 25 ("no such original") may have overtaken its
    # original: it is repeated for this long before it counts as nothing to reverse.
    reversal_not_found_window: float = 120.0
    retransmission_window: float = 86400.0  # section 6.1: how long 41 + 11 + 7 names one request
    # How long an approved card payment keeps its card number sealed in the
    # journal, for the 0420 of a terminal's 0400 that does not carry it (0:
    # dropped with the answer, and such a reversal goes without field 2).
    card_retention: float = 86400.0
    # On SIGTERM: how long in-flight requests may take to finish (unset: drain_budget).
    drain_timeout: float | None = None
    # Spec section 1 v1.1 caps (switch.config_security checks them).
    max_connections: int = 10000  # terminal connections over all listeners
    max_connections_per_address: int = 1000  # from one source IP address
    max_in_flight_per_terminal: int = 256  # requests open per terminal ID, over all its connections (91 beyond)
    merchants: list[Merchant] = []
    acquirers: list[Acquirer] = []
    routes: list[Route] = []
    simulators: list[Simulator] = []
    # Spec section 8: per-merchant policy, terminal and acquirer key names, the security module.
    security: security_config.Security = msgspec.field(default_factory=security_config.Security)
    # Value-added services, customer tokens, the event relay (switch.config_vas).
    token_keys: list[config_vas.TokenKey] = []
    vas: list[config_vas.VasService] = []
    events: config_vas.Events = msgspec.field(default_factory=config_vas.Events)
    source: str = "<embedded default>"
    left_out: tuple[str, ...] = ()  # of LEFT_OUT, the sections the file has none of: their defaults apply

    @property
    def drain_budget(self) -> float:
        """Seconds a stop drains: drain_timeout, else response_timeout (within which a request
        taken just before SIGTERM is answered: the stop gives up none still answerable)."""
        return self.response_timeout if self.drain_timeout is None else self.drain_timeout


# What the bundled acquirer types expect of their endpoints and files.
_HOSTPORT_TYPES = ("card", "citycard")
_URL_TYPES = ("wallet-tradepay", "wallet-micropay")
_NEEDED_FILES = {
    "wallet-tradepay": ("merchant_key_file", "wallet_public_key_file"),
    "wallet-micropay": ("secret_file",),
}
_NOT_ISO8583_TYPES = ("citycard",) + _URL_TYPES  # bundled types that take no dialect or header
JOURNAL_SCHEMES = ("sqlite",)


def journal_url_problem(url: str) -> str | None:
    """What is wrong with a journal URL, or None.  Never quotes the URL (it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return "journal URL has no scheme: expected sqlite://PATH, e.g. sqlite://payswitch-journal.sqlite"
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return f"journal URL scheme {scheme!r} is not supported yet: use sqlite://PATH"
    if scheme not in JOURNAL_SCHEMES:
        return f"unknown journal URL scheme {scheme!r} (supported: {', '.join(JOURNAL_SCHEMES)})"
    if not rest:
        return "journal URL sqlite:// names no file (sqlite://PATH; sqlite://:memory: for a throwaway one)"
    return None


def _check(cfg: Config, src: str) -> Config:
    """Cross-field checks msgspec can't express; errors carry key paths.

    Files are not looked at here (see :mod:`switch.preflight`), so a reload
    and ``check-config`` on another machine see the same answer.
    """

    def fail(path: str, msg: str):
        raise ConfigError(f"{src}: {shown_url(msg)} - at `$.{path}`")

    from switch.wiring import acquirer_factory, acquirer_types

    config_sanity.check_finite(cfg, "", fail)  # before any comparison: NaN passes them all
    if cfg.response_timeout <= 0:
        fail("response_timeout", "must be > 0")
    if cfg.reversal_retry <= 0:
        fail("reversal_retry", "must be > 0")
    problem = journal_url_problem(cfg.journal.url)
    if problem:
        fail("journal.url", problem)
    if cfg.journal.writer not in ("thread", "process"):
        fail("journal.writer", f"must be \"thread\" or \"process\", got {cfg.journal.writer!r}")
    if cfg.journal.hmac_key_file and cfg.journal.hmac_key_env:
        fail("journal", "set hmac_key_file or hmac_key_env, not both")
    if cfg.journal.hmac_key_env and cfg.journal.hmac_key_env not in os.environ:
        fail("journal.hmac_key_env", f"environment variable {shown(cfg.journal.hmac_key_env, 'env')} is not set")
    if not 0 <= cfg.http.port < 65536:
        fail("http.port", f"port {cfg.http.port} out of range")
    _check_server(cfg, fail)

    types = acquirer_types()
    by_name: dict[str, tuple[int, Acquirer]] = {}
    for i, a in enumerate(cfg.acquirers):
        if a.name in by_name:
            fail(f"acquirers[{i}].name", f"duplicate acquirer name {a.name!r}")
        by_name[a.name] = (i, a)
        if a.type not in types:
            fail(f"acquirers[{i}].type", f"unknown acquirer type {a.type!r} (registered: {', '.join(types)})")
        if not a.endpoints:
            fail(f"acquirers[{i}].endpoints", "needs at least one endpoint")
        if a.timeout <= 0 or a.timeout >= cfg.response_timeout:
            fail(
                f"acquirers[{i}].timeout",
                f"must be > 0 and shorter than response_timeout ({cfg.response_timeout})",
            )
        if a.connections < 1:
            fail(f"acquirers[{i}].connections", f"must be at least 1, got {a.connections}")
        if not (a.acquirer_id.isdigit() and 1 <= len(a.acquirer_id) <= 11):
            fail(f"acquirers[{i}].acquirer_id", f"must be 1 to 11 digits (field 32), got {a.acquirer_id!r}")
        for key in ("echo_interval", "poll_interval"):
            if getattr(a, key) <= 0:
                fail(f"acquirers[{i}].{key}", "must be > 0")
        for j, ep in enumerate(a.endpoints):
            if a.type in _HOSTPORT_TYPES:
                host, sep, port = ep.rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                    fail(f"acquirers[{i}].endpoints[{j}]", f"expected 'host:port', got {ep!r}")
            elif a.type in _URL_TYPES and not ep.startswith(("http://", "https://")):
                fail(f"acquirers[{i}].endpoints[{j}]", f"expected an http:// or https:// URL, got {ep!r}")
        for key in _NEEDED_FILES.get(a.type, ()):
            if not getattr(a, key):
                fail(f"acquirers[{i}].{key}", f"a {a.type} acquirer needs {key}")
        if a.mac != "none" or a.mac_key is not None:
            _check_host_mac(cfg, i, a, fail)
        if a.type in _NOT_ISO8583_TYPES:
            for key in ("dialect", "header"):
                if getattr(a, key) is not None:
                    fail(f"acquirers[{i}].{key}", f"{key} applies to card host links, not to a {a.type} acquirer")
    kinds = {name: getattr(acquirer_factory(a, i, src, types), "kinds", None) for name, (i, a) in by_name.items()}
    route_names: set[str] = set()
    for i, r in enumerate(cfg.routes):
        if r.name in route_names:
            fail(f"routes[{i}].name", f"duplicate route name {r.name!r}")
        route_names.add(r.name)
        if r.min_amount is not None and r.max_amount is not None and r.min_amount > r.max_amount:
            fail(f"routes[{i}].min_amount", f"{r.min_amount} is above max_amount {r.max_amount}: the route never matches")
        if not r.acquirers:
            fail(f"routes[{i}].acquirers", "needs at least one acquirer")
        for j, a in enumerate(r.acquirers):
            if a not in by_name:
                fail(f"routes[{i}].acquirers[{j}]", f"unknown acquirer {a!r}")
            served = kinds[a]
            if served is not None and r.kind not in served:
                fail(
                    f"routes[{i}].acquirers[{j}]",
                    f"a {r.kind} route cannot use acquirer {a!r}: type {by_name[a][1].type!r} "
                    f"serves {', '.join(sorted(served))} routes",
                )
        if not r.prefixes:
            fail(f"routes[{i}].prefixes", "needs at least one prefix: a route without one never matches")
        for j, p in enumerate(r.prefixes):
            try:
                prefix_range(p)
            except ValueError as e:
                fail(f"routes[{i}].prefixes[{j}]", str(e))
        for j, c in enumerate(r.mti_classes or ()):
            if not (len(c) == 2 and c.isdigit()):
                fail(f"routes[{i}].mti_classes[{j}]", f"expected 2 digits, got {c!r}")
        for j, c in enumerate(r.processing_codes or ()):
            if not (len(c) == 2 and c.isdigit()):
                fail(f"routes[{i}].processing_codes[{j}]", f"expected 2 digits, got {c!r}")
    seen = {}
    merchant_ids: set[str] = set()
    for i, mc in enumerate(cfg.merchants):
        if not (1 <= len(mc.id) <= 15):
            fail(f"merchants[{i}].id", "merchant ID must be 1 to 15 characters")
        if mc.id in merchant_ids:
            fail(f"merchants[{i}].id", f"duplicate merchant ID {mc.id!r}")
        merchant_ids.add(mc.id)
        if not mc.terminals:
            fail(f"merchants[{i}].terminals", "needs at least one terminal ID or range: no terminal can pay a merchant without one")
        for j, t in enumerate(mc.terminals):
            try:
                tids = expand_terminals(t, MAX_TERMINALS - len(seen))
            except ValueError as e:
                fail(f"merchants[{i}].terminals[{j}]", str(e))
            for tid in tids:
                if not 1 <= len(tid) <= 8:
                    fail(f"merchants[{i}].terminals[{j}]", f"terminal ID {tid!r} must be 1 to 8 characters")
                if tid in seen:
                    fail(f"merchants[{i}].terminals[{j}]", f"terminal {tid!r} already belongs to merchant {seen[tid]!r}")
                seen[tid] = mc.id
    check_order_prefixes(cfg, fail)
    config_sanity.check_shadowed_prefixes(cfg, fail)
    for i, lst in enumerate(cfg.listeners):
        if not 0 <= lst.port < 65536:
            fail(f"listeners[{i}].port", f"port {lst.port} out of range")
        if not 64 <= lst.max_frame <= 65535:
            fail(f"listeners[{i}].max_frame", "must be between 64 and 65535")
        if lst.max_in_flight < 1:
            fail(f"listeners[{i}].max_in_flight", "must be at least 1")
        if bool(lst.tls_cert_file) != bool(lst.tls_key_file):
            fail(f"listeners[{i}]", "TLS needs both tls_cert_file and tls_key_file")
        problem = dialect_problem(lst.dialect)
        if problem:
            fail(f"listeners[{i}].dialect", problem)
    config_sanity.check_listener_ports(cfg, fail)
    config_sanity.check_simulator_ports(cfg, fail)
    sim_names: set[str] = set()
    for i, sim in enumerate(cfg.simulators):
        if not 0 <= sim.port < 65536:
            fail(f"simulators[{i}].port", f"port {sim.port} out of range")
        if sim.name in sim_names:
            fail(f"simulators[{i}].name", f"duplicate simulator name {sim.name!r}")
        sim_names.add(sim.name)
    config_sanity.check_currencies(cfg, fail)  # merchants, wallets, route conditions
    config_sanity.check_refund_limits(cfg, fail)  # amounts, and the currencies a table names
    _check_security(cfg, fail)
    config_timing.check(cfg, fail)  # the reversal, window and retention seconds, and their order
    from switch.config_security import check_limits

    check_limits(cfg, fail)
    config_vas.check(cfg, fail)  # value-added services, token keys, the event relay
    from switch import config_places

    config_places.check(cfg, fail)  # every number's range, hosts and endpoints, routes' merchants
    return cfg


def _check_host_mac(cfg: Config, i: int, a: Acquirer, fail) -> None:
    """``mac`` and ``mac_key`` of a card acquirer: both or neither, and a security module to hold the key."""
    if a.type != "card":
        fail(f"acquirers[{i}].mac", f"host-link MACs apply to card acquirers, not to a {a.type} acquirer")
    if a.mac == "none":
        fail(f"acquirers[{i}].mac", "mac_key is set: name the MAC algorithm too (\"tdes-retail\" or \"aes-cmac\")")
    if not a.mac_key:
        fail(f"acquirers[{i}].mac_key", f"mac = {a.mac!r} needs the name of the acquirer's zone MAC key (ZAK)")
    if cfg.security.module is None:
        fail(f"acquirers[{i}].mac_key", "a host-link MAC needs a security module (security.module) holding the key")


def _check_server(cfg: Config, fail) -> None:
    workers = cfg.server.workers
    if isinstance(workers, str):
        if workers != "auto":
            fail("server.workers", f"expected a number of worker processes or \"auto\", got {workers!r}")
        check_workers(cfg, worker_count(workers), fail)
        return
    if isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        fail("server.workers", f"must be 1 to {MAX_WORKERS} or \"auto\", got {workers!r}")
    check_workers(cfg, workers, fail)


def check_workers(cfg: Config, workers: int, fail) -> None:
    """What N > 1 workers need of the rest of the configuration (also for ``serve --workers``)."""
    if workers <= 1:
        return
    for i, lst in enumerate(cfg.listeners):
        if lst.port == 0:
            fail(f"listeners[{i}].port", "port 0 (any free port) cannot be shared by several workers: name a port")
    if cfg.http.port:
        # The supervisor's HTTP on http.port, worker i's own on http.port + 1 + i.
        last = cfg.http.port + workers
        if last > 65535:
            fail("http.port", f"{workers} workers serve HTTP on ports {cfg.http.port + 1} to {last}: beyond 65535")
        for i, lst in enumerate(cfg.listeners):
            if cfg.http.port < lst.port <= last:
                fail(f"listeners[{i}].port", f"port {lst.port} is worker {lst.port - cfg.http.port - 1}'s HTTP port "
                     f"(http.port + 1 + worker index, {workers} workers)")


def _check_security(cfg: Config, fail) -> None:
    """Spec section 8: the security structs' own checks, and names that must exist elsewhere."""
    for path, msg in security_config.check(cfg.security):
        fail(path, msg)
    merchants = {mc.id for mc in cfg.merchants}
    for i, ms in enumerate(cfg.security.merchants):
        if ms.merchant not in merchants:
            fail(f"security.merchants[{i}].merchant", f"no merchant {ms.merchant!r} in merchants")
    acquirers = {a.name for a in cfg.acquirers}
    for i, ak in enumerate(cfg.security.acquirers):
        if ak.acquirer not in acquirers:
            fail(f"security.acquirers[{i}].acquirer", f"no acquirer {ak.acquirer!r} in acquirers")


_NOT_KEYS = frozenset({"source", "left_out"})  # Config fields set by the loader, never keys of a file
# Sections whose absence check-config points out: no listeners is the default one, no merchants none at all.
LEFT_OUT = ("listeners", "merchants")


def loads(text: str, source: str = "<string>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    for key in sorted(_NOT_KEYS & raw.keys()):  # set here from where the file came from, never keys of it
        raise ConfigError(f"{source}: Object contains unknown field `{key}`")
    values = frozenset(strings_in(raw))
    raw["source"], raw["left_out"] = source, [key for key in LEFT_OUT if key not in raw]
    try:
        try:
            cfg = msgspec.convert(raw, Config)
        except msgspec.ValidationError as e:
            raise ConfigError(f"{source}: {e}{unknown_key_hint(str(e), Config, _NOT_KEYS)}") from None
        return _check(cfg, source)
    except ConfigError as e:
        e.values = values
        raise


def load(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    from switch.config_places import decode_problem

    problem = decode_problem(data)
    if problem:
        raise ConfigError(f"{p}: {problem}")
    return loads(data.decode("utf-8"), str(p))


def default() -> Config:
    """The embedded default of spec section 7 (demo merchants, sandbox simulators).

    The second demo merchant's keys (spec 7, v1.1) are the sandbox's public
    ones, in the key store shipped with the package: its path is only known
    here, so the security section is added to the parsed TOML, and with it
    the host-link MACs of :data:`~switch.sandbox_default.HOST_MACS` (their
    keys are in that store).
    """
    from switch.security import sandbox

    raw = tomllib.loads(DEFAULT_TOML)
    raw["security"] = msgspec.to_builtins(sandbox.security_config())
    for a in raw["acquirers"]:
        if a["name"] in HOST_MACS:
            a["mac"], a["mac_key"] = HOST_MACS[a["name"]]
    for sim in raw["simulators"]:
        if sim["kind"] == "acquirer" and sim["name"] in HOST_MACS:
            sim["args"] = [*sim.get("args", []), "--mac", HOST_MACS[sim["name"]][0]]
    raw["source"] = "<embedded default>"
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:  # pragma: no cover - the default is tested
        raise ConfigError(f"<embedded default>: {e}") from None
    return _check(cfg, "<embedded default>")
