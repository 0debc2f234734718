"""A configuration error read by others than the file's owner (``POST /admin/reload``'s
answer, the running switch's log) names the file, the key path and the problem, and
quotes no value of the file: any may be a secret pasted where its reference belongs."""
from __future__ import annotations

import pytest

from switch import config as config_mod
from switch.secret_refs import NOT_SHOWN

SECRET = "sk_live_PAYSWITCH_TOP_SECRET_42"
GOOD = """
[journal]
url = "sqlite://journal.sqlite"

[[merchants]]
id = "M1"
terminals = ["T0000001-T0000005"]
"""


def refused(tmp_path, text: str) -> tuple[str, str]:
    """The error of ``text`` as the local operator sees it, and as others do."""
    path = tmp_path / "switch.toml"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    return str(info.value), config_mod.error_for_others(info.value, path)


@pytest.mark.parametrize("text, problem, key", [
    # our own check quotes the value ...
    (GOOD.replace('[journal]', f'[journal]\nwriter = "{SECRET}"'),
     f'must be "thread" or "process", got {NOT_SHOWN}', "journal.writer"),
    # ... msgspec's does too
    (f'[[listeners]]\nheader = "{SECRET}"\n' + GOOD, f"Invalid enum value {NOT_SHOWN}", "listeners[0].header"),
    # a terminal ID far too long
    (GOOD.replace('"T0000001-T0000005"', f'"T0000001-T0000005", "{SECRET}"'),
     f"terminal ID {NOT_SHOWN} must be 1 to 8 characters", "merchants[0].terminals[1]"),
    # a URL's password, and a host that is no host
    (GOOD + f'\n[[acquirers]]\nname = "w"\ntype = "wallet-micropay"\nendpoints = ["ftp://user:{SECRET}@h"]\n'
     'secret_file = "k"\ntimeout = 10.0\n', f"expected an http:// or https:// URL, got {NOT_SHOWN}",
     "acquirers[0].endpoints[0]"),
])
def test_the_error_for_others_quotes_no_value_of_the_file(tmp_path, text, problem, key):
    path = tmp_path / "switch.toml"
    local, others = refused(tmp_path, text)
    assert SECRET in local or "***" in local  # the exception itself; printed, it reads as the others
    assert SECRET not in others and SECRET[:8] not in others, others
    assert others == f"{path}: {problem} - at `$.{key}`"


def test_a_value_quoted_in_part_is_withheld(tmp_path):
    """A terminal range's error quotes the range; a range is a value of the file."""
    _, others = refused(tmp_path, GOOD.replace('"T0000001-T0000005"', '"SKLIVE09-SKLIVE01"'))
    assert "SKLIVE" not in others and others.endswith(f"terminal range {NOT_SHOWN} starts after it ends"
                                                      " - at `$.merchants[0].terminals[0]`"), others


def test_a_key_file_path_is_withheld_and_words_of_the_message_stay(tmp_path):
    path = tmp_path / "switch.toml"
    path.write_text(GOOD)
    e = config_mod.ConfigError(f"{path}: cannot read journal key file /etc/payswitch/{SECRET}: "
                               "No such file or directory - at `$.journal.hmac_key_file`")
    path.write_text(GOOD.replace('[journal]', f'[journal]\nhmac_key_file = "/etc/payswitch/{SECRET}"'))
    assert config_mod.error_for_others(e, path) == (
        f"{path}: cannot read journal key file {NOT_SHOWN}: No such file or directory - at `$.journal.hmac_key_file`")


def test_key_material_and_card_numbers_are_withheld_even_when_not_values_of_the_file(tmp_path):
    e = config_mod.ConfigError("f.toml: key 00112233445566778899AABBCCDDEEFF, card 4761739001010119 - at `$.x`")
    assert config_mod.error_for_others(e, None) == f"f.toml: key {NOT_SHOWN}, card {NOT_SHOWN} - at `$.x`"


def test_the_words_a_key_chooses_from_stay_though_values_of_the_file(tmp_path):
    """A route's kind, an acquirer's type: words of the documentation, no secret (switch.config_choices)."""
    wallet = '[[acquirers]]\nname = "wallet-b"\ntype = "wallet-micropay"\nendpoints = ["http://127.0.0.1:9"]\n'
    route = '[[routes]]\nname = "cards"\nkind = "card"\nprefixes = ["4"]\nacquirers = ["wallet-b"]\n'
    _, others = refused(tmp_path, GOOD + wallet + 'secret_file = "k"\ntimeout = 10.0\n' + route)
    assert others.endswith(f": a card route cannot use acquirer {NOT_SHOWN}: type 'wallet-micropay' serves wallet"
                           " routes - at `$.routes[0].acquirers[0]`"), others


def test_an_error_quoting_nothing_of_the_file_is_unchanged(tmp_path):
    local, others = refused(tmp_path, GOOD + "response_timeout = -1.0\n")
    assert others == local


def test_the_file_is_named_as_given_or_as_load_writes_it(tmp_path, monkeypatch):
    """The file's own name is never withheld, even where it looks like key material."""
    monkeypatch.chdir(tmp_path)
    name = "0123456789abcdef0123.toml"  # a hex run of key length
    (tmp_path / name).write_text(GOOD + "response_timeout = -1.0\n")
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(f"./{name}")
    assert config_mod.error_for_others(info.value, f"./{name}") == str(info.value)
    assert str(info.value).startswith(f"{name}: ")


# -- the start-up refusal: stderr goes to journald, CI logs and tickets ----------------------

PAN = "4761 7390 0101 0119"  # as printed on a card: no digit run for a pattern to catch
ACQUIRER = """
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9"]
acquirer_id = "10000000001"
timeout = 5.0
"""

WALLET = f"""
[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9"]
timeout = 20.0
secret_file = "keys/{SECRET}"
"""


@pytest.mark.parametrize("text, key", [
    (GOOD.replace('[journal]', f'[journal]\nwriter = "{SECRET}"'), "journal.writer"),  # our own check
    (f'[[listeners]]\nheader = "{SECRET}"\n' + GOOD, "listeners[0].header"),  # msgspec's
    (GOOD + ACQUIRER.replace('"10000000001"', f'"{PAN}"'), "acquirers[0].acquirer_id"),
    (GOOD + ACQUIRER.replace('timeout = 5.0', f'timeout = 5.0\ndialect = "{PAN}"'), "acquirers[0].dialect"),
    # found after loading (switch.preflight): the file is read again for its values
    (GOOD + WALLET, "acquirers[0].secret_file"),
])
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_refused_start_quotes_no_secret_or_card_number_on_stderr(tmp_path, text, key, command):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "switch.toml"
    path.write_text(text)
    root = Path(__file__).resolve().parent.parent
    args = ["serve", "--config", str(path)] if command == "serve" else ["check-config", str(path)]
    p = subprocess.run([sys.executable, "-m", "switch.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(root)), timeout=60)
    said = p.stdout + p.stderr
    assert p.returncode == 2, said
    for value in (SECRET, SECRET[:8], PAN, PAN.replace(" ", ""), PAN[:9]):
        assert value not in said, said
    assert p.stderr.startswith(f"payswitch: configuration error: {path}: ") and f"- at `$.{key}`" in p.stderr, said
    assert NOT_SHOWN in p.stderr
