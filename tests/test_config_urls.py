"""The host inside a URL-valued key is checked as a host:port key's is (switch.config_places):
a wallet's endpoints, a value-added service's URL, a webhook, the NATS URL.  The error names
the key path and the file, and never quotes the URL's user or password."""
from __future__ import annotations

import pytest

from tests.test_sre_ops import BASE, refused_config
from tests import test_service as ts

SECRET = "Pa55-TOP-SECRET"


def wallet(url: str) -> str:
    return BASE + (f'\n[[acquirers]]\nname = "w"\ntype = "wallet-micropay"\nendpoints = ["{url}"]\n'
                   'secret_file = "k"\ntimeout = 10.0\n')


def vas(url: str) -> str:
    return BASE + (f'\n[[vas]]\nname = "loyalty"\nmerchants = ["SHOP00000000001"]\nurl = "{url}"\n'
                   'secret_env = "HOME"\n')


def webhook(url: str) -> str:
    return BASE + (f'\n[[events.partners]]\nname = "p"\nmerchants = ["SHOP00000000001"]\nwebhook = "{url}"\n'
                   'secret_env = "HOME"\n')


def nats(url: str) -> str:
    return BASE + f'\n[events]\nnats_url = "{url}"\n'


KEYS = [(wallet, "acquirers[1].endpoints[0]", "https"), (vas, "vas[0].url", "http"),
        (webhook, "events.partners[0].webhook", "https"), (nats, "events.nats_url", "nats")]


@pytest.mark.parametrize("config, path, scheme", KEYS)
@pytest.mark.parametrize("authority, why", [
    ("", "the URL names no host"),
    (":8080", "the URL names no host"),
    ("10.0.0.256:8080", "invalid IP address: "),
    ("1.2.3", "invalid IP address: "),
    ("[::g]:8080", "invalid IP address: "),
    ("[::1", "the URL's host opens a [ it does not close"),
    ("::1:8080", "an IPv6 address in a URL goes in brackets: [::1]:8080"),
    ("bank a.example", "the URL's host has a space in it"),
    ("bank/a:80", None),  # a path, no host: "bank" is the host, fine
    ("wallet.example:0", "the URL's port must be 1 to 65535, got 0"),
    ("wallet.example:99999", "the URL's port must be 1 to 65535, got 99999"),
    ("wallet.example:https", "the URL's port must be 1 to 65535, got 'https'"),
])
def test_the_host_of_a_url_is_checked(config, path, scheme, authority, why):
    text = config(f"{scheme}://{authority}/pay")
    if why is None:
        ts.config_mod.loads(text, "sw.toml")
        return
    msg = refused_config(text)
    assert msg.startswith("sw.toml: " + why) and msg.endswith(f" - at `$.{path}`"), msg


@pytest.mark.parametrize("config, path, scheme", KEYS)
@pytest.mark.parametrize("authority", ["wallet.example", "wallet.example:8443", "10.0.0.7:80", "[::1]:9201",
                                       "[fe80::1]", "bank_a-1.internal:80"])
def test_good_hosts_are_taken(config, path, scheme, authority):
    ts.config_mod.loads(config(f"{scheme}://{authority}/pay"), "sw.toml")


@pytest.mark.parametrize("url, why", [
    ("10.0.0.256:4222", "invalid IP address: "),
    ("::1:4222", "an IPv6 address in a URL goes in brackets: [::1]:4222"),
    ("[::1]:4222", None),
    ("127.0.0.1:4222", None),
    ("nats.internal", None),
])
def test_a_nats_url_without_a_scheme_is_read_as_nats_url(url, why):
    """The NATS client puts nats:// before a URL without a scheme: it is checked so."""
    if why is None:
        ts.config_mod.loads(nats(url), "sw.toml")
        return
    msg = refused_config(nats(url))
    assert msg.startswith("sw.toml: " + why) and msg.endswith(" - at `$.events.nats_url`"), msg


@pytest.mark.parametrize("authority, why", [
    (f"relay:{SECRET}@10.0.0.300:4222", "invalid IP address: "),
    (f"relay:{SECRET}@:4222", "the URL names no host"),
    (f"relay:{SECRET}@::1:4222", "an IPv6 address in a URL goes in brackets: [::1]:4222"),
])
def test_the_nats_url_from_the_environment_is_checked_without_quoting_its_password(monkeypatch, authority, why):
    """The one place a URL may carry a user and password (never in the file): the variable's."""
    monkeypatch.setenv("PAYSWITCH_TEST_NATS", f"nats://{authority}")
    msg = refused_config(BASE + '\n[events]\nnats_url_env = "PAYSWITCH_TEST_NATS"\n')
    assert msg.startswith("sw.toml: " + why) and msg.endswith(" - at `$.events.nats_url_env`"), msg
    assert SECRET not in msg and "relay" not in msg
