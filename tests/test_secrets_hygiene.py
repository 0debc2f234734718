"""Issue 8, the smaller items: no field 48 value in decode errors, a Request's
repr without card data, ``payswitch send`` taking the PAN from the environment
or stdin, encrypted trade.pay keys, secrets withheld from simulator processes."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.wallet.signing import generate_rsa_pem
from native.iso8583 import DecodeError, dialect
from switch import config as config_mod
from switch.cli import _pan
from switch.config_security import secret_env_names
from switch.core.acquirer import Request
from switch.io.app import Children
from tests import samples

PAN = "4761739001010119"
TRACK2 = PAN + "=28121010000000000"
PIN = bytes.fromhex("0412AC89ABCDEF67")
WALLET_CODE = "287617390010101190"
ROOT = Path(__file__).resolve().parent.parent


def test_request_repr_holds_no_card_data():
    r = Request(txn_id=1, kind="card", mti="0200", processing_code="000000", amount=100, currency="978",
                terminal_id="DEMO0001", merchant_id="DEMO00000000001", stan="000001", transmission_time="1124065401",
                rrn="000000000001", pan=PAN, track2=TRACK2, pin_block=PIN, icc=b"\x5a\x08" + bytes.fromhex(PAN),
                tlv={"BC": WALLET_CODE})
    for text in (repr(r), str(r), f"{r}", repr([r])):
        assert PAN not in text and TRACK2 not in text and WALLET_CODE not in text
        assert PIN.hex() not in text.lower() and repr(PIN) not in text
        assert "476173******0119" in text and "pin_block=<8 bytes>" in text and "track2=<34 characters>" in text


def test_field_48_values_are_never_quoted_in_decode_errors(caplog):
    term = dialect("terminal-87")
    assert term.field_spec(48)["sensitive"] is True
    body = term.encode({"mti": "0200", 3: "000000", 4: "000000001000", 7: "1124065401", 11: "000001",
                        41: "DEMO0001", 42: "DEMO00000000001", 48: "BC" + "999" + WALLET_CODE})
    from switch.core.engine import Engine
    from switch.io.service import Switch  # noqa: F401 (the engine as the switch builds it)

    cfg = config_mod.default()
    engine = Engine(cfg, key=b"k" * 32)
    caplog.set_level(logging.DEBUG)
    gen = engine.handle(body, term)
    insert = next(gen)  # 7, 11 and 41 are read in front of 48: its 30 is journaled under that key
    assert insert.name == "insert" and WALLET_CODE[:12] not in repr(insert.args[0])
    assert WALLET_CODE not in caplog.text and WALLET_CODE[:12] not in caplog.text
    # the wire form: a byte that breaks field 48's format is not echoed either
    raw = bytearray(body)
    at = raw.index(WALLET_CODE.encode())
    raw[at + 3] = 0x01
    with pytest.raises(DecodeError) as e:
        term.decode(bytes(raw))
    assert WALLET_CODE[:6] not in str(e.value)


def args(**kw):
    base = dict(pan=None, pan_env=None, pan_stdin=False)
    return argparse.Namespace(**(base | kw))


def test_send_reads_the_pan_from_the_environment_or_stdin(monkeypatch, capsys):
    monkeypatch.setenv("CARD_UNDER_TEST", "5413330089010434\n")
    assert _pan(args(pan_env="CARD_UNDER_TEST")) == "5413330089010434"
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("4000056655665556\nrest\n"))
    assert _pan(args(pan_stdin=True)) == "4000056655665556"
    assert capsys.readouterr().err == ""
    assert _pan(args(pan=PAN)) == PAN  # a published test card: no warning
    assert capsys.readouterr().err == ""
    assert _pan(args(pan="4929123456789012")) == "4929123456789012"
    assert "--pan-env" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="once"):
        _pan(args(pan=PAN, pan_env="CARD_UNDER_TEST"))
    with pytest.raises(SystemExit, match="NOT_SET_ANYWHERE"):
        _pan(args(pan_env="NOT_SET_ANYWHERE"))
    with pytest.raises(SystemExit) as e:  # the card itself where its variable's name belongs
        _pan(args(pan_env="4929123456789012"))
    assert "4929123456789012" not in str(e.value) and "not shown" in str(e.value)


def test_trade_pay_merchant_key_may_be_an_encrypted_pem(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization

    from adapters.wallet.plugin import tradepay

    private, public = generate_rsa_pem(2048)
    phrase = "correct horse battery staple"
    key = serialization.load_pem_private_key(private, None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(phrase.encode()))
    (tmp_path / "merchant.pem").write_bytes(encrypted)
    (tmp_path / "wallet.pem").write_bytes(public)
    (tmp_path / "phrase").write_text(phrase + "\n")
    base = (f'[[acquirers]]\nname = "w"\ntype = "wallet-tradepay"\nendpoints = ["http://127.0.0.1:1"]\n'
            f'merchant_key_file = "{tmp_path / "merchant.pem"}"\nwallet_public_key_file = "{tmp_path / "wallet.pem"}"\n')
    from switch import wiring

    cfg = config_mod.loads(base + f'merchant_key_passphrase_file = "{tmp_path / "phrase"}"\n', "t.toml")
    assert wiring.build_acquirer(cfg.acquirers[0], 0, None, source="t.toml") is not None
    monkeypatch.setenv("PAYSWITCH_TEST_PHRASE", phrase)
    cfg = config_mod.loads(base + 'merchant_key_passphrase_env = "PAYSWITCH_TEST_PHRASE"\n', "t.toml")
    tradepay(cfg.acquirers[0])
    monkeypatch.setenv("PAYSWITCH_TEST_PHRASE", "wrong phrase")
    with pytest.raises(config_mod.ConfigError) as e:
        wiring.build_acquirer(cfg.acquirers[0], 0, None, source="t.toml")
    assert "wrong phrase" not in str(e.value) and phrase not in str(e.value)
    cfg = config_mod.loads(base, "t.toml")  # encrypted, and no pass phrase given
    with pytest.raises(config_mod.ConfigError):
        wiring.build_acquirer(cfg.acquirers[0], 0, None, source="t.toml")
    with pytest.raises(config_mod.ConfigError, match="not both"):
        config_mod.loads(base + 'merchant_key_passphrase_env = "A"\nmerchant_key_passphrase_file = "b"\n', "t.toml")


def test_simulators_do_not_inherit_the_switchs_secrets(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_JOURNAL_KEY", "aa" * 32)
    monkeypatch.setenv("PAYSWITCH_ADMIN_TOKEN", "t" * 32)
    cfg = config_mod.loads(
        '[http]\nadmin_token_env = "PAYSWITCH_ADMIN_TOKEN"\n[journal]\nhmac_key_env = "PAYSWITCH_JOURNAL_KEY"\n', "t.toml")
    withheld = secret_env_names(cfg)
    assert withheld == {"PAYSWITCH_JOURNAL_KEY", "PAYSWITCH_ADMIN_TOKEN"}
    children = Children(withhold_env=withheld)
    assert "PAYSWITCH_JOURNAL_KEY" not in children.env and "PAYSWITCH_ADMIN_TOKEN" not in children.env
    assert children.env.get("PATH") == os.environ["PATH"]
    # and a started simulator really runs without them
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(k for k in os.environ if k.startswith('PAYSWITCH_')))"],
                         env=children.env, capture_output=True, text=True, timeout=30)
    assert "PAYSWITCH_JOURNAL_KEY" not in out.stdout and "PAYSWITCH_ADMIN_TOKEN" not in out.stdout


def test_decode_errors_never_quote_card_data_read_through_a_damaged_bitmap():
    # One or two bitmap bits flipped shift every field after them: a field that
    # is not sensitive is then read from the PAN or track 2, and its error must
    # not quote those digits (a log line at INFO for every terminal format error).
    term = dialect("terminal-87")
    body = term.encode(samples.terminal_0200())
    # Five digits in a row of the PAN past its BIN, or of track 2 past the PAN's BIN.
    secrets = [s for text in (samples.PAN[6:], samples.TRACK2[6:]) for i in range(len(text) - 4)
               if (s := text[i:i + 5]).isdigit()]
    errors = 0
    for a in range(2, 65):
        for b in range(a, 65):
            damaged = bytearray(body)
            for bit in {a, b}:
                damaged[4 + (bit - 1) // 8] ^= 0x80 >> ((bit - 1) % 8)
            try:
                term.decode(bytes(damaged))
            except DecodeError as e:
                text = str(e)
                assert not any(s in text for s in secrets), (a, b, text)
                assert "b'" not in text and "\\x" not in text, (a, b, text)  # no byte of the message is quoted
                errors += 1
    assert errors


KEY = "0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B1C"  # a key pasted in by mistake
TOKEN = "kq3-Zx9Qm2Lp7Rt4Vw8Ys1N"


@pytest.mark.parametrize("section, key, value", [
    ("journal", "hmac_key_file", KEY),
    ("journal", "hmac_key_env", KEY),
    ("http", "admin_token_file", TOKEN),
    ("http", "admin_token_env", TOKEN),
])
def test_check_config_never_quotes_a_secret_written_where_its_reference_belongs(tmp_path, section, key, value):
    cfg = tmp_path / "switch.toml"
    journal = f'[journal]\nurl = "sqlite://{tmp_path / "journal.sqlite"}"\n'
    body = f'{key} = "{value}"\n'
    cfg.write_text(journal + body if section == "journal" else f"[http]\n{body}" + journal)
    out = subprocess.run([sys.executable, "-m", "switch.cli", "check-config", str(cfg)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 2
    assert f"{cfg}: " in out.stderr and f"- at `$.{section}.{key}`" in out.stderr
    assert "not shown" in out.stderr
    assert value not in out.stdout + out.stderr and value[:16] not in out.stderr


@pytest.mark.parametrize("option", ["--master-key-file", "--master-key-env"])
def test_payswitch_keys_never_quotes_a_master_key_given_in_place_of_its_file_or_variable(tmp_path, option, capsys,
                                                                                       monkeypatch):
    from switch.security import keycli

    monkeypatch.setattr(keycli, "no_core_dumps", lambda: None)  # not this process's limits
    assert keycli.main(["list", "--store", str(tmp_path / "keys.json"), option, KEY]) == 2
    err = capsys.readouterr().err
    assert "master key" in err and "not shown" in err and KEY[:16] not in err


def test_a_vas_secret_pasted_in_place_of_its_file_is_not_quoted():
    from switch.io.vas import read_secret

    with pytest.raises(config_mod.ConfigError) as e:
        read_secret("shop.toml", "secret file", KEY, None, "vas[0].secret_file")
    assert KEY[:16] not in str(e.value) and "`$.vas[0].secret_file`" in str(e.value)


@pytest.mark.parametrize("value, kind", [
    ("/etc/payswitch/journal.key", "file"), ("journal.key", "file"), ("secrets/admin-token", "file"),
    ("payswitch-journal.sqlite.token-DEMO00000000001-v1.key", "file"), ("PAYSWITCH_MASTER_KEY", "env"),
    ("payswitch_admin_token", "env"),
])
def test_ordinary_file_and_variable_names_are_still_quoted(value, kind):
    from switch.secret_refs import shown

    assert shown(value, kind) == value


def test_payswitch_send_masks_the_wallet_code_it_prints():
    from switch.client import describe

    text = "\n".join(describe({"mti": "0200", 22: "031", 48: "BC018" + WALLET_CODE + "LY004ABCD"}))
    assert WALLET_CODE not in text
    assert "'BC': '287617********1190'" in text and "'LY': 'ABCD'" in text


@pytest.mark.parametrize("option", ["--lmk-file", "--lmk-env"])
def test_the_hsm_simulator_never_quotes_an_lmk_given_in_place_of_its_file_or_variable(option, capsys):
    from adapters.hsm import sim

    assert sim.main([option, KEY, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsm sim: LMK") and "not shown" in err and KEY[:16] not in err
