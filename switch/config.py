"""Configuration: TOML loaded into strict msgspec Structs.

A bad configuration never half-starts the switch: :func:`load` raises
:class:`ConfigError` naming the file, the key path and what was wrong, e.g.
``payswitch.toml: Expected `int`, got `str` - at `$.listeners[0].port```.

Secrets are never in the file itself: keys are referenced by file path or
environment variable name (``*_file`` / ``*_env`` keys).
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from native.iso8583 import dialect

__all__ = ["Config", "ConfigError", "load", "loads", "default"]


class ConfigError(ValueError):
    """The configuration is unusable; the message names file, key path and problem."""


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


class Http(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 9583


class Journal(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite://payswitch-journal.sqlite"  # sqlite://relative/path, sqlite:///absolute/path
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


class Acquirer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    type: Literal["card", "wallet-tradepay", "wallet-micropay", "citycard"]
    endpoints: list[str]  # "host:port" (card, citycard) or base URL (wallets)
    timeout: float = 25.0  # per-request deadline at the acquirer, seconds
    connections: int = 2
    acquirer_id: str = "00000000001"  # field 32 on card host links
    echo_interval: float = 30.0
    # Wallets: credentials are paths to key files (never keys in clear here).
    app_id: str = ""
    mch_id: str = ""  # micropay merchant number
    merchant_key_file: str | None = None  # trade.pay: merchant RSA private key (PEM)
    wallet_public_key_file: str | None = None  # trade.pay: wallet RSA public key (PEM)
    secret_file: str | None = None  # micropay: shared HMAC secret
    poll_interval: float = 3.0  # seconds between queries while the customer confirms
    cancel_margin: float = 10.0  # seconds kept before the deadline to cancel / reverse
    currency: str = "156"  # the only currency a wallet takes (field 49); others answer 12


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

    kind: Literal["acquirer", "wallet", "citycard"]
    name: str
    port: int
    args: list[str] = []


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listeners: list[Listener] = msgspec.field(default_factory=lambda: [Listener()])
    http: Http = msgspec.field(default_factory=Http)
    journal: Journal = msgspec.field(default_factory=Journal)
    response_timeout: float = 60.0  # the terminal's budget (spec section 6)
    reversal_retry: float = 5.0  # seconds between store-and-forward attempts
    merchants: list[Merchant] = []
    acquirers: list[Acquirer] = []
    routes: list[Route] = []
    simulators: list[Simulator] = []
    source: str = "<embedded default>"


_TERMINAL_RANGE = re.compile(r"^([A-Za-z ]*)(\d+)-([A-Za-z ]*)(\d+)$")
_PREFIX = re.compile(r"^\d{1,19}(-\d{1,19})?$")


def expand_terminals(spec: str) -> list[str]:
    """``"DEMO0001-DEMO0003"`` → ``["DEMO0001", "DEMO0002", "DEMO0003"]``."""
    m = _TERMINAL_RANGE.match(spec)
    if not m:
        return [spec]
    stem, lo, stem2, hi = m.groups()
    if stem != stem2 or len(lo) != len(hi) or int(lo) > int(hi):
        raise ValueError(f"bad terminal range {spec!r}")
    return [f"{stem}{n:0{len(lo)}d}" for n in range(int(lo), int(hi) + 1)]


def prefix_range(spec: str) -> tuple[str, str]:
    """``"4"`` → ``("4", "4")``; ``"25-30"`` → ``("25", "30")``."""
    if not _PREFIX.match(spec):
        raise ValueError(f"prefix {spec!r} is not digits or a digits-digits range")
    lo, _, hi = spec.partition("-")
    hi = hi or lo
    if len(lo) != len(hi):
        raise ValueError(f"prefix range {spec!r} has ends of different lengths")
    if int(lo) > int(hi):
        raise ValueError(f"prefix range {spec!r} starts after it ends")
    return lo, hi


def _check(cfg: Config, src: str) -> Config:
    """Cross-field checks msgspec can't express; errors carry key paths."""

    def fail(path: str, msg: str):
        raise ConfigError(f"{src}: {msg} - at `$.{path}`")

    names = set()
    for i, a in enumerate(cfg.acquirers):
        if a.name in names:
            fail(f"acquirers[{i}].name", f"duplicate acquirer name {a.name!r}")
        names.add(a.name)
        if not a.endpoints:
            fail(f"acquirers[{i}].endpoints", "needs at least one endpoint")
        if a.timeout <= 0 or a.timeout >= cfg.response_timeout:
            fail(
                f"acquirers[{i}].timeout",
                f"must be > 0 and shorter than response_timeout ({cfg.response_timeout})",
            )
        for j, ep in enumerate(a.endpoints):
            if a.type in ("card", "citycard"):
                host, sep, port = ep.rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                    fail(f"acquirers[{i}].endpoints[{j}]", f"expected 'host:port', got {ep!r}")
            elif not ep.startswith("http://"):
                fail(f"acquirers[{i}].endpoints[{j}]", f"expected an http:// URL, got {ep!r}")
        needed = {
            "wallet-tradepay": ("merchant_key_file", "wallet_public_key_file"),
            "wallet-micropay": ("secret_file",),
        }.get(a.type, ())
        for key in needed:
            if not getattr(a, key):
                fail(f"acquirers[{i}].{key}", f"a {a.type} acquirer needs {key}")
    for i, r in enumerate(cfg.routes):
        if not r.acquirers:
            fail(f"routes[{i}].acquirers", "needs at least one acquirer")
        for j, a in enumerate(r.acquirers):
            if a not in names:
                fail(f"routes[{i}].acquirers[{j}]", f"unknown acquirer {a!r}")
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
    for i, m in enumerate(cfg.merchants):
        if not (1 <= len(m.id) <= 15):
            fail(f"merchants[{i}].id", "merchant ID must be 1 to 15 characters")
        for j, t in enumerate(m.terminals):
            try:
                tids = expand_terminals(t)
            except ValueError as e:
                fail(f"merchants[{i}].terminals[{j}]", str(e))
            for tid in tids:
                if len(tid) > 8:
                    fail(f"merchants[{i}].terminals[{j}]", f"terminal ID {tid!r} is longer than 8")
                if tid in seen:
                    fail(f"merchants[{i}].terminals[{j}]", f"terminal {tid!r} already belongs to merchant {seen[tid]!r}")
                seen[tid] = m.id
    for i, lst in enumerate(cfg.listeners):
        if not 0 <= lst.port < 65536:
            fail(f"listeners[{i}].port", f"port {lst.port} out of range")
        if not 64 <= lst.max_frame <= 65535:
            fail(f"listeners[{i}].max_frame", "must be between 64 and 65535")
        if bool(lst.tls_cert_file) != bool(lst.tls_key_file):
            fail(f"listeners[{i}]", "TLS needs both tls_cert_file and tls_key_file")
        try:
            dialect(lst.dialect)
        except (OSError, ValueError) as e:
            fail(f"listeners[{i}].dialect", str(e))
    if cfg.journal.hmac_key_env and cfg.journal.hmac_key_env not in os.environ:
        fail("journal.hmac_key_env", f"environment variable {cfg.journal.hmac_key_env} is not set")
    return cfg


def loads(text: str, source: str = "<string>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    raw["source"] = source
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {e}") from None
    return _check(cfg, source)


def load(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    return loads(text, str(p))


def default() -> Config:
    """The embedded default of spec section 7 (demo merchant, sandbox simulators)."""
    return loads(DEFAULT_TOML, "<embedded default>")


DEFAULT_TOML = """
response_timeout = 60.0

[[listeners]]
host = "0.0.0.0"
port = 8583

# Spec section 7 (v1.1): terminals whose library sends hex-text bitmaps
# (pyiso8583's default_ascii) try the sandbox here.
[[listeners]]
host = "0.0.0.0"
port = 8584
dialect = "iso87-ascii"

[http]
host = "127.0.0.1"
port = 9583

[journal]
url = "sqlite://payswitch-journal.sqlite"

[[merchants]]
id = "DEMO00000000001"
name = "payswitch demo shop"
terminals = ["DEMO0001-DEMO0999"]

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
timeout = 10.0
acquirer_id = "10000000001"

[[acquirers]]
name = "bank-b"
type = "card"
endpoints = ["127.0.0.1:9102"]
timeout = 10.0
acquirer_id = "10000000002"

[[acquirers]]
name = "cup"
type = "card"
endpoints = ["127.0.0.1:9103"]
timeout = 10.0
acquirer_id = "10000000062"

[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:9301"]
timeout = 10.0
connections = 1

[[acquirers]]
name = "wallet-a"
type = "wallet-tradepay"
endpoints = ["http://127.0.0.1:9201"]
timeout = 45.0
merchant_key_file = "sandbox-keys/wallet-tradepay/merchant_private.pem"
wallet_public_key_file = "sandbox-keys/wallet-tradepay/wallet_public.pem"

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9202"]
timeout = 45.0
secret_file = "sandbox-keys/wallet-micropay/micropay_secret"

[[routes]]
name = "wallet-a"
kind = "wallet"
prefixes = ["25-30"]
acquirers = ["wallet-a"]

[[routes]]
name = "wallet-b"
kind = "wallet"
prefixes = ["10-15"]
acquirers = ["wallet-b"]

[[routes]]
name = "unionpay-qr"
kind = "wallet"
prefixes = ["62"]
acquirers = ["cup"]

[[routes]]
name = "citycard"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["citycard"]

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "mastercard"
kind = "card"
prefixes = ["5", "2"]
acquirers = ["bank-b"]

[[routes]]
name = "unionpay"
kind = "card"
prefixes = ["62"]
acquirers = ["cup"]

[[simulators]]
kind = "acquirer"
name = "bank-a"
port = 9101

[[simulators]]
kind = "acquirer"
name = "bank-b"
port = 9102

[[simulators]]
kind = "acquirer"
name = "cup"
port = 9103

[[simulators]]
kind = "citycard"
name = "citycard"
port = 9301

[[simulators]]
kind = "wallet"
name = "wallet-a"
port = 9201
args = ["--style", "tradepay"]

[[simulators]]
kind = "wallet"
name = "wallet-b"
port = 9202
args = ["--style", "micropay"]
"""
