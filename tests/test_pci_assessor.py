"""The switch as a PCI DSS assessor tests it: no full PAN, track data, CVV
or PIN block leaves the switch (logs, journal, error messages, CLI output,
partner calls); keys are never in clear in the configuration; the
sandbox's public keys never work outside the sandbox.
"""
from __future__ import annotations

import pytest

from native.iso8583 import build_tlv48
from tests import test_vas as tv
from tests.test_service import VISA, call, request
from tests.test_vas import plugin_registered  # noqa: F401  (autouse: the scripted service, its keys)

GROUPED = ("4761 7390 0101 0119", "4761-7390-0101-0119", "4761 739001 010119")


# -- free text: one masking rule ----------------------------------------------------


@pytest.mark.parametrize("text, masked", [
    ("card 4761739001010119 ok", "card 476173******0119 ok"),
    ("card 4761 7390 0101 0119 ok", "card 4761 73** **** 0119 ok"),
    ("4761-7390-0101-0119", "4761-73**-****-0119"),
    ("RRN 000000004711 4761739001010119", "RRN 000000004711 476173******0119"),
    ("+25 PTS BALANCE 1234", "+25 PTS BALANCE 1234"),
    ("4761739001010118", "4761739001010118"),          # not Luhn-valid: not a card number
    ("47617390010101190000", "47617390010101190000"),  # 20 digits: not a card number
])
def test_mask_pans_masks_card_numbers_in_free_text_grouped_or_not(text, masked):
    from native.panguard import holds_pan, mask_pans

    assert mask_pans(text) == masked
    assert holds_pan(text) == (text != masked)


# -- value-added services ---------------------------------------------------------------


@pytest.mark.parametrize("coupon", (VISA,) + GROUPED + ("CARD" + VISA,))
def test_a_coupon_holding_a_card_number_goes_to_no_service(coupon):
    tv.Plugin.behaviour = {"before": lambda p: {"line": f"COUPON {p['coupon']} UNKNOWN"},
                           "after": lambda p: {"line": "+25 PTS"}}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000002500", f48=build_tlv48({"CP": coupon})))
        assert resp[39] == "00"
        return resp

    resp = tv.run(scenario)
    assert tv.SEEN and all(p["coupon"] is None for _, p in tv.SEEN)
    assert "4761739001010119" not in tv.tags(resp)["LY"].replace(" ", "").replace("-", "")


def test_a_plain_coupon_still_goes_to_the_services():
    tv.Plugin.behaviour = {"before": lambda p: {}}

    async def scenario(sw):
        await call(sw, request(amount="000000002500", f48=build_tlv48({"CP": "SPRING10"})))

    tv.run(scenario)
    assert tv.SEEN and all(p["coupon"] == "SPRING10" for _, p in tv.SEEN)


@pytest.mark.parametrize("written", (VISA,) + GROUPED)
def test_a_receipt_line_from_a_service_never_carries_a_card_number(written):
    tv.Plugin.behaviour = {"before": lambda p: {"line": f"CARD {written} SEEN"},
                           "after": lambda p: {"line": f"MEMBER {written}"}}

    async def scenario(sw):
        return await call(sw, request(amount="000000002500"))

    line = tv.tags(tv.run(scenario))["LY"]
    digits = "".join(ch for ch in line if ch.isdigit() or ch == "*")
    assert "4761739001010119" not in line.replace(" ", "").replace("-", "")
    assert digits.count("476173******0119") == 2, line


# -- error messages of undecodable messages -------------------------------------------------


@pytest.mark.parametrize("written", GROUPED)
def test_a_decode_error_never_quotes_a_grouped_card_number(written):
    from native.iso8583 import DecodeError, dialect

    t87 = dialect("terminal-87")
    raw = bytearray(t87.encode({"mti": "0200", 3: "000000", 43: (written + "Z").ljust(40)}))
    raw[-3] = 0x01  # not a printable character: field 43 (merchant name, not a card field) cannot be decoded
    with pytest.raises(DecodeError) as e:
        msg = t87.decode(bytes(raw))
        msg[43]
    text = str(e.value)
    assert text == "field 43: expected 40 printable characters at offset 18, found a byte that is not an ASCII printable character at offset 55"
    assert "4761 7390 0" not in text and "4761-7390-0" not in text and "4761 739001" not in text


@pytest.mark.parametrize("written", (VISA,) + GROUPED)
def test_an_encode_error_never_quotes_a_card_number(written):
    from native.iso8583 import EncodeError, dialect

    with pytest.raises(EncodeError) as e:
        dialect("terminal-87").encode({"mti": "0200", 43: (written + "é").ljust(40)})
    assert "4761739001010119" not in str(e.value).replace(" ", "").replace("-", ""), str(e.value)


@pytest.mark.parametrize("written", GROUPED[:2])
def test_the_host_links_error_scrubber_masks_grouped_card_numbers(written):
    from adapters.card.messages import scrub

    assert "0101" not in scrub(f"field 43 value {written} bad")


# -- payswitch send -----------------------------------------------------------------------


def test_send_masks_card_numbers_in_every_field_it_prints():
    from switch.client import describe

    pan = bytes.fromhex("4761739001010119")
    answer = {"mti": "0210", 39: "00", 43: "SHOP 4761-7390-0101-0119",
              48: build_tlv48({"LY": "MEMBER 4761 7390 0101 0119", "CP": VISA}),
              55: b"\x5a\x08" + pan + b"\x57\x0c" + pan + bytes.fromhex("D2512201") + b"\x91\x02\x01\x02"}
    text = "\n".join(describe(answer))
    assert "0101" not in text and "010119" not in text and "4761739001010119" not in text, text
    assert "476173" in text  # masked, not dropped: first 6 and last 4
    assert "5A(withheld) 57(withheld) 91020102" in text  # the rest of the EMV data is shown


def test_send_masks_card_numbers_in_the_errors_it_prints(monkeypatch, capsys):
    from switch import cli, client

    class Broken:
        def __init__(self, *a, **kw):
            raise ValueError("answer cannot be decoded: field 43 b'4761 7390 0101 0119'")

    monkeypatch.setattr(client, "Terminal", Broken)
    assert cli.main(["send", "purchase", "--pan", "4111111111111111", "--amount", "100"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "0101 0119" not in err and "4761 73** **** 0119" in err


# -- the sandbox's public keys work in the sandbox only --------------------------------------


def _security_config(tmp_path, module: str, sandbox_flag: bool = False):
    from switch import config as config_mod
    from tests import test_service as ts

    text = ("sandbox = true\n" if sandbox_flag else "") + ts.CONFIG.format(
        timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + module
    path = tmp_path / "payswitch.toml"
    path.write_text(text)
    return config_mod.loads(text, str(path))


def test_the_sandbox_key_store_and_master_key_are_refused_outside_the_sandbox(tmp_path, monkeypatch):
    from switch import config as config_mod
    from switch.security import sandbox
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    module = f'\n[security.module]\nkind = "software"\nkey_store = "{sandbox.STORE}"\n' \
             f'master_key_file = "{sandbox.MASTER_KEY_FILE}"\n'
    with pytest.raises(config_mod.ConfigError) as e:
        _security_config(tmp_path, module)
    assert str(e.value).startswith(str(tmp_path / "payswitch.toml") + ": ")
    assert "sandbox's key store" in str(e.value) and str(e.value).endswith("- at `$.security.module.key_store`")
    _security_config(tmp_path, module, sandbox_flag=True)  # the sandbox says so
    assert config_mod.default().sandbox


def test_demo_keys_copied_into_another_store_or_under_the_demo_master_are_refused(tmp_path, monkeypatch):
    from switch import config as config_mod, preflight
    from switch.security import keystore, sandbox
    from switch.security.mac import kcv
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    master_file = tmp_path / "master.key"
    master_file.write_text(keystore.new_master_key() + "\n")
    master_file.chmod(0o600)
    master = keystore.read_master_key(str(master_file))
    store = tmp_path / "keys.json"
    keystore.create(store, master)
    clear = bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
    keystore.add(store, master, "tmk-shop", "tmk", "tdes", clear, kcv(clear, "tdes"))
    module = f'\n[security.module]\nkind = "software"\nkey_store = "{store}"\nmaster_key_file = "{master_file}"\n'
    cfg = _security_config(tmp_path, module)
    with pytest.raises(config_mod.ConfigError) as e:
        preflight._security(cfg)
    assert "key 'tmk-shop'" in str(e.value) and "public sandbox key" in str(e.value)
    assert sandbox.KEYS["demo-tmk-tdes"][2] not in str(e.value)
    assert str(e.value).endswith("- at `$.security.module.key_store`")
    preflight._security(_security_config(tmp_path, module, sandbox_flag=True))

    demo_master = tmp_path / "demo-master.key"
    demo_master.write_text(sandbox.MASTER_KEY_HEX + "\n")
    other = tmp_path / "other.json"
    keystore.create(other, bytes.fromhex(sandbox.MASTER_KEY_HEX))
    module = f'\n[security.module]\nkind = "software"\nkey_store = "{other}"\nmaster_key_file = "{demo_master}"\n'
    with pytest.raises(config_mod.ConfigError) as e:
        preflight._security(_security_config(tmp_path, module))
    assert "master key is the sandbox's" in str(e.value)
    assert str(e.value).endswith("- at `$.security.module.master_key_file`")


def test_the_demo_hsm_key_table_is_refused_outside_the_sandbox(tmp_path, monkeypatch):
    import json

    from switch import config as config_mod, preflight
    from switch.security import sandbox
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    table = tmp_path / "hsm-keys.json"
    table.write_text(json.dumps(sandbox.hsm_key_table()))
    module = f'\n[security.module]\nkind = "hsm"\nendpoints = ["127.0.0.1:9"]\nkey_table = "{table}"\n'
    with pytest.raises(config_mod.ConfigError) as e:
        preflight._security(_security_config(tmp_path, module))
    assert "demo key table" in str(e.value) and str(e.value).endswith("- at `$.security.module.key_table`")
    preflight._security(_security_config(tmp_path, module, sandbox_flag=True))


def test_keys_import_refuses_a_demo_key_unless_the_store_is_a_sandbox(tmp_path, monkeypatch, capsys):
    import io

    from switch.security import keycli, keystore, sandbox

    master = tmp_path / "master.key"
    master.write_text(keystore.new_master_key() + "\n")
    master.chmod(0o600)
    store = tmp_path / "keys.json"
    assert keycli.main(["init", "--store", str(store), "--master-key-file", str(master)]) == 0
    name, (kind, alg, clear) = "demo-tmk-aes", sandbox.KEYS["demo-tmk-aes"]
    from switch.security.mac import kcv

    argv = ["import", "--store", str(store), "--master-key-file", str(master), "--name", "k1", "--kind", kind,
            "--algorithm", alg, "--kcv", kcv(bytes.fromhex(clear), alg)]
    monkeypatch.setattr("sys.stdin", io.StringIO(clear + "\n"))
    assert keycli.main(argv) == 2
    err = capsys.readouterr().err
    assert "public sandbox key" in err and clear not in err
    assert keystore.load(store, keystore.read_master_key(str(master))) == {}
    monkeypatch.setattr("sys.stdin", io.StringIO(clear + "\n"))
    assert keycli.main(argv + ["--sandbox"]) == 0
    demo_master = tmp_path / "demo.key"
    demo_master.write_text(sandbox.MASTER_KEY_HEX)
    demo_master.chmod(0o600)
    assert keycli.main(["init", "--store", str(tmp_path / "d.json"), "--master-key-file", str(demo_master)]) == 2


# -- URLs with credentials -----------------------------------------------------------------


def _loads_with(tmp_path, extra: str):
    from switch import config as config_mod
    from tests import test_service as ts

    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + extra
    return config_mod.loads(text, str(tmp_path / "switch.toml"))


@pytest.mark.parametrize("extra, where", [
    ('\n[events]\nnats_url = "nats://relay:s3cretpw@nats.example:4222"\n', "events.nats_url"),
    ('\n[events]\n[[events.partners]]\nname = "p"\nmerchants = ["SHOP00000000001"]\n'
     'webhook = "https://hook:s3cretpw@partner.example/in"\nsecret_env = "X"\n', "events.partners[0].webhook"),
    ('\n[[vas]]\nname = "l"\nmerchants = ["SHOP00000000001"]\nurl = "https://svc:s3cretpw@loyalty.example"\n'
     'secret_env = "X"\n', "vas[0].url"),
    ('\n[[vas]]\nname = "l"\nmerchants = ["SHOP00000000001"]\nurl = "ftp://svc:s3cretpw@loyalty.example"\n'
     'secret_env = "X"\n', "vas[0].url"),
])
def test_a_url_with_credentials_in_the_configuration_is_refused_without_showing_them(tmp_path, monkeypatch, extra, where):
    from switch import config as config_mod
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    with pytest.raises(config_mod.ConfigError) as e:
        _loads_with(tmp_path, extra)
    text = str(e.value)
    assert "s3cretpw" not in text, text
    assert text.startswith(str(tmp_path / "switch.toml")) and text.endswith(f"- at `$.{where}`"), text
    if "ftp" not in extra:
        assert "credentials" in text and "***@" in text


def test_a_nats_url_with_credentials_comes_from_a_secret_reference(tmp_path, monkeypatch):
    from switch.events import nats_url
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    monkeypatch.setenv("TEST_NATS_URL", "nats://relay:s3cretpw@nats.example:4222")
    cfg = _loads_with(tmp_path, '\n[events]\nnats_url_env = "TEST_NATS_URL"\n')
    assert nats_url(cfg.events) == "nats://relay:s3cretpw@nats.example:4222"


def test_anything_that_prints_a_url_shows_its_credentials_as_stars():
    from switch.secret_refs import shown_url

    assert shown_url("nats://relay:pw@h:4222") == "nats://***@h:4222"
    assert shown_url("cannot reach https://a:b@h/x and http://h/y") == "cannot reach https://***@h/x and http://h/y"
    assert shown_url("https://h/p?q=a@b") == "https://h/p?q=a@b"


# -- keys never travel with the journal ------------------------------------------------------


def _with_journal_in(tmp_path, extra: str = "", key_in=None):
    from switch import config as config_mod

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    key = (key_in or tmp_path / "keys") / "journal.key"
    key.parent.mkdir(exist_ok=True)
    key.write_text("11" * 32)
    key.chmod(0o600)
    text = f'[journal]\nurl = "sqlite://{data / "journal.sqlite"}"\nhmac_key_file = "{key}"\n' + extra
    return config_mod.loads(text, str(tmp_path / "switch.toml")), data


def test_serve_refuses_the_journal_key_in_the_journals_directory(tmp_path):
    from switch import config as config_mod, preflight

    cfg, data = _with_journal_in(tmp_path, key_in=tmp_path / "data")
    with pytest.raises(config_mod.ConfigError) as e:
        preflight.check(cfg)  # serve's check, not only check-config's
    assert "journal's directory" in str(e.value) and str(e.value).endswith("- at `$.journal.hmac_key_file`")


def test_any_key_file_in_the_journals_directory_is_refused(tmp_path):
    from switch import config as config_mod, preflight

    (tmp_path / "data").mkdir()
    token = tmp_path / "data" / "admin.token"
    token.write_text("a" * 32)
    token.chmod(0o600)
    cfg, data = _with_journal_in(tmp_path, f'\n[http]\nadmin_token_file = "{token}"\n')
    with pytest.raises(config_mod.ConfigError) as e:
        preflight.check(cfg)
    assert "journal's directory" in str(e.value) and str(e.value).endswith("- at `$.http.admin_token_file`")
    # The sandbox keeps them together on purpose.
    sandbox = config_mod.loads(
        f'sandbox = true\n[journal]\nurl = "sqlite://{data / "journal.sqlite"}"\nhmac_key_file = "{data / "k.key"}"\n',
        "sandbox.toml")
    assert preflight.keys_beside_journal(sandbox) == []


# -- links in clear ---------------------------------------------------------------------------


def test_every_link_configured_in_clear_is_warned_about_by_its_key_path(tmp_path, monkeypatch, caplog):
    import logging

    from switch import config as config_mod, preflight
    from switch.clear_links import links_in_clear
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    monkeypatch.setenv("TEST_ADMIN", "t" * 32)
    monkeypatch.setenv("X", "22" * 32)
    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV)
    text = text.replace('endpoints = ["127.0.0.1:1"]', 'endpoints = ["10.1.2.3:7000"]', 1)
    text = text.replace('endpoints = ["http://127.0.0.1:3"]', 'endpoints = ["http://wallet.example"]', 1)
    secret = tmp_path / "micropay.secret"
    secret.write_text("33" * 32)
    secret.chmod(0o600)
    text = text.replace('secret_file = "never-read"', f'secret_file = "{secret}"')
    text = (text + '\n[[listeners]]\nhost = "0.0.0.0"\nport = 8583\n\n[http]\nhost = "0.0.0.0"\nadmin_token_env = "TEST_ADMIN"\n'
            '\n[[vas]]\nname = "l"\nmerchants = ["SHOP00000000001"]\nurl = "http://loyalty.example"\n'
            'secret_env = "X"\n')
    cfg = config_mod.loads(text, "clear.toml")
    warnings = links_in_clear(cfg)
    where = sorted(w.rsplit("- at ", 1)[1] for w in warnings)
    assert where == sorted(["`$.listeners[0]`", "`$.http.host`", "`$.acquirers[0].endpoints[0]`",
                            "`$.acquirers[2].endpoints[0]`", "`$.vas[0].url`"]), warnings
    assert all(w.startswith("clear.toml: ") and "in clear (no TLS)" in w for w in warnings)
    with caplog.at_level(logging.WARNING, logger="payswitch"):
        preflight.check(cfg)
    assert sum("in clear (no TLS)" in r.getMessage() for r in caplog.records) == 5
    # The same links on loopback, or a listener with a certificate: nothing to say.
    local = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV)
    assert links_in_clear(config_mod.loads(local + '\n[[listeners]]\nhost = "127.0.0.1"\n', "local.toml")) == []


# -- the acquirer simulator's ledger ------------------------------------------------------------


def test_the_simulators_ledger_names_a_card_by_a_keyed_hash_not_a_plain_one():
    import hashlib
    import hmac

    from adapters.card import sandbox as sb

    name = sb.card_key(VISA)
    masked, _, digest = name.partition("#")
    assert masked == "476173******0119"
    # A plain hash of the PAN is found by trying the million middles a masked PAN leaves.
    assert digest != hashlib.sha256(VISA.encode()).hexdigest()[:16]
    from adapters.card.card_names import use_key

    use_key(b"k" * 32)
    try:
        assert sb.card_key(VISA) == masked + "#" + hmac.new(b"k" * 32, VISA.encode(), hashlib.sha256).hexdigest()[:16]
    finally:
        use_key(None)


def test_the_ledger_names_field_55_by_a_keyed_digest_never_a_plain_hash():
    """Field 55 carries the PAN (tag 5A) and the track 2 equivalent (57): a plain SHA-256 of it
    is a PAN-derived value anyone with the ledger could test guesses against, as a card's."""
    import hashlib
    import hmac

    from adapters.card.card_names import use_key
    from adapters.card.hostlink import fields_view
    from adapters.card.sandbox import Sandbox

    icc = bytes.fromhex("5A08" + VISA + "5713" + VISA + "D2812101000000000F" + "9F02060000000025009F2701 80".replace(" ", ""))
    msg = fields_view({"mti": "0200", 2: VISA, 3: "000000", 4: "000000002500", 7: "1114221320", 11: "000001",
                       32: "10000000001", 37: "331822000001", 41: "TERM0001", 42: "SHOP00000000001", 49: "978",
                       55: icc})
    use_key(b"k" * 32)
    try:
        [record] = Sandbox().handle(msg)[1]
    finally:
        use_key(None)
    assert "icc_sha256" not in record and hashlib.sha256(icc).hexdigest() not in str(record)
    assert record["icc_hmac"] == hmac.new(b"k" * 32, b"payswitch sandbox field 55\0" + icc, hashlib.sha256).hexdigest()


def test_a_ledgers_card_key_is_kept_beside_it_private_so_a_restart_names_cards_alike(tmp_path):
    from adapters.card.card_names import ledger_key

    ledger = tmp_path / "bank-a.jsonl"
    key = ledger_key(str(ledger))
    assert len(key) == 32 and ledger_key(str(ledger)) == key
    assert (tmp_path / "bank-a.jsonl.key").stat().st_mode & 0o777 == 0o600


# -- no core dump, no ptrace by another user ----------------------------------------------------


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="prctl is Linux's")
def test_a_process_holding_keys_is_not_dumpable():
    import subprocess
    import sys

    code = ("import ctypes; from switch.security.coredump import no_core_dumps; no_core_dumps(); "
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")  # PR_GET_DUMPABLE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0", out


def test_the_journal_writer_and_workers_turn_dumping_off_first(monkeypatch):
    from switch.io import workers
    from switch.journal import writer
    from switch.security import coredump

    calls = []
    monkeypatch.setattr(coredump, "no_core_dumps", lambda: calls.append(1) or (_ for _ in ()).throw(SystemExit(9)))
    for main, argv in ((writer.main, ["writer", "-1"]), (workers.worker_main, ["--index", "0"])):
        with pytest.raises(SystemExit):
            main(argv)
    assert len(calls) == 2
