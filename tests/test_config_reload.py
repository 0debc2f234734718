"""reload_changes: what a reload applies, and every key path that needs a restart, by name."""
from __future__ import annotations

import pytest

from switch import config

BASE = """
response_timeout = 30.0

[[listeners]]
port = 8583

[http]
port = 9583

[journal]
url = "sqlite://journal.sqlite"

[[merchants]]
id = "M1"
terminals = ["T0000001-T0000005"]

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
timeout = 10.0
acquirer_id = "10000000001"

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9202"]
timeout = 20.0
secret_file = "keys/micropay_secret"

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]
"""

OLD = config.loads(BASE, "old.toml")


def changes(old_text: str, new_text: str) -> tuple[list[str], list[str]]:
    assert old_text in BASE, old_text
    return config.reload_changes(OLD, config.loads(BASE.replace(old_text, new_text, 1), "new.toml"))


def test_the_same_file_changes_nothing():
    assert config.reload_changes(OLD, config.loads(BASE, "other-name.toml")) == ([], [])


@pytest.mark.parametrize(
    "old, new, applied",
    [
        ('terminals = ["T0000001-T0000005"]', 'terminals = ["T0000001-T0000009"]', ["merchants[0].terminals[0]"]),
        ('prefixes = ["4"]', 'prefixes = ["4", "2"]', ["routes[0].prefixes"]),
        ("response_timeout = 30.0", "response_timeout = 40.0", ["response_timeout"]),
        ("response_timeout = 30.0", "response_timeout = 30.0\nreversal_retry = 1.0", ["reversal_retry"]),
        ("timeout = 10.0", "timeout = 12.5", ["acquirers[0].timeout"]),
    ],
)
def test_what_a_reload_applies(old, new, applied):
    assert changes(old, new) == (applied, [])


@pytest.mark.parametrize(
    "old, new, refused",
    [
        ('endpoints = ["127.0.0.1:9101"]', 'endpoints = ["127.0.0.1:9111"]', ["acquirers[0].endpoints[0]"]),
        ('endpoints = ["127.0.0.1:9101"]', 'endpoints = ["127.0.0.1:9101", "10.0.0.2:9101"]', ["acquirers[0].endpoints"]),
        ('secret_file = "keys/micropay_secret"', 'secret_file = "keys/new_secret"', ["acquirers[1].secret_file"]),
        ('acquirer_id = "10000000001"', 'acquirer_id = "10000000009"', ["acquirers[0].acquirer_id"]),
        ('acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nheader = "bcd2"', ["acquirers[0].header"]),
        ('acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nconnections = 4', ["acquirers[0].connections"]),
        ('type = "wallet-micropay"\nendpoints = ["http://127.0.0.1:9202"]',
         'type = "wallet-tradepay"\nendpoints = ["http://127.0.0.1:9202"]\nmerchant_key_file = "m.pem"\nwallet_public_key_file = "w.pem"',
         ["acquirers[1].type", "acquirers[1].merchant_key_file", "acquirers[1].wallet_public_key_file"]),
        ("port = 8583", "port = 8584", ["listeners[0].port"]),
        ("[http]\nport = 9583", "[http]\nport = 9584", ["http.port"]),
        ('url = "sqlite://journal.sqlite"', 'url = "sqlite://other.sqlite"', ["journal.url"]),
        ('url = "sqlite://journal.sqlite"', 'url = "sqlite://journal.sqlite"\nhmac_key_file = "k"', ["journal.hmac_key_file"]),
    ],
)
def test_what_needs_a_restart(old, new, refused):
    assert changes(old, new) == ([], refused)


def test_an_added_acquirer_is_refused_and_so_is_a_route_to_it():
    applied, refused = changes(
        '[[routes]]\nname = "visa"',
        '[[acquirers]]\nname = "bank-c"\ntype = "card"\nendpoints = ["127.0.0.1:9103"]\ntimeout = 5.0\n\n'
        '[[routes]]\nname = "visa"',
    )
    assert (applied, refused) == ([], ["acquirers[2] (added 'bank-c')"])
    applied, refused = changes(
        '[[routes]]\nname = "visa"',
        '[[acquirers]]\nname = "bank-c"\ntype = "card"\nendpoints = ["127.0.0.1:9103"]\ntimeout = 5.0\n\n'
        '[[routes]]\nname = "new"\nkind = "card"\nprefixes = ["5"]\nacquirers = ["bank-c"]\n\n'
        '[[routes]]\nname = "visa"',
    )
    assert applied == []
    assert refused == ["acquirers[2] (added 'bank-c')", "routes[0].acquirers[0] (acquirer 'bank-c' is not running)"]


def test_a_removed_acquirer_is_refused_and_other_changes_still_listed():
    text = BASE.replace('\n[[acquirers]]\nname = "wallet-b"', '\n[[ignored]]\nname = "wallet-b"', 1)
    text = text[: text.index("[[ignored]]")] + text[text.index("[[routes]]"):]
    text = text.replace("response_timeout = 30.0", "response_timeout = 45.0")
    applied, refused = config.reload_changes(OLD, config.loads(text, "new.toml"))
    assert applied == ["response_timeout"]
    assert refused == ["acquirers (removed 'wallet-b')"]


def test_reload_changes_is_pure():
    new = config.loads(BASE.replace("port = 8583", "port = 8584"), "new.toml")
    before = (config.reload_changes(OLD, new), OLD.listeners[0].port, new.listeners[0].port)
    assert config.reload_changes(OLD, new) == before[0]
    assert (OLD.listeners[0].port, new.listeners[0].port) == (8583, 8584)


# The terminals' security and which services a merchant's moments call are the
# engine's, rebuilt from every configuration it takes (Engine.apply); the
# security module and a service's own client are built once, at the start.
SECURED = BASE + """
[security.module]
kind = "software"
key_store = "/etc/payswitch/keys.json"
master_key_env = "PAYSWITCH_MASTER_KEY"

[[security.merchants]]
merchant = "M1"
policy = "mac"
[[security.merchants.terminals]]
terminals = "T0000001-T0000005"
tmk = "shop-tmk"

[[vas]]
name = "points"
type = "http"
url = "http://127.0.0.1:9301"
secret_env = "POINTS_SECRET"
merchants = ["M1"]
"""
SECURED_OLD = config.loads(SECURED, "old.toml")


@pytest.mark.parametrize(
    "old, new, applied, refused",
    [
        ('policy = "mac"', 'policy = "mac+pin"', ["security.merchants[0].policy"], []),
        ('tmk = "shop-tmk"', 'tmk = "new-tmk"', ["security.merchants[0].terminals[0].tmk"], []),
        ('master_key_env = "PAYSWITCH_MASTER_KEY"', 'master_key_env = "OTHER_KEY"', [],
         ["security.module.master_key_env"]),
        ('merchants = ["M1"]', 'merchants = ["M1"]\nmoments = ["after"]', ["vas[0].moments"], []),
        ('url = "http://127.0.0.1:9301"', 'url = "http://127.0.0.1:9302"', [], ["vas[0].url"]),
        ('merchants = ["M1"]', 'merchants = ["M1"]\n\n[[vas]]\nname = "more"\ntype = "http"\n'
         'url = "http://127.0.0.1:9303"\nsecret_env = "S"\nmerchants = ["M1"]', [], ["vas"]),
    ],
)
def test_security_and_services_are_reported_as_the_engine_takes_them(old, new, applied, refused):
    assert old in SECURED, old
    assert config.reload_changes(SECURED_OLD, config.loads(SECURED.replace(old, new, 1), "new.toml")) == (
        applied, refused)


def test_what_is_reported_applied_is_what_the_engine_runs_on():
    """The engine's terminal security and service map follow a reload, as reload_changes says."""
    from switch.core.engine import Engine

    engine = Engine(SECURED_OLD, key=b"k" * 32)
    assert engine.security.config.policy("M1") == "mac"
    assert [s.name for s in engine.vas.services[("M1", "after")]] == ["points"]
    new = config.loads(SECURED.replace('policy = "mac"', 'policy = "mac+pin"', 1)
                       .replace('merchants = ["M1"]', 'merchants = ["M1"]\nmoments = ["before"]', 1), "new.toml")
    engine.apply(new)
    assert engine.security.config.policy("M1") == "mac+pin"
    assert ("M1", "after") not in engine.vas.services
    assert config.reload_changes(SECURED_OLD, new) == (
        ["security.merchants[0].policy", "vas[0].moments"], [])
