"""The software security module, its key store, the terminal side and the key CLI."""
import asyncio
import logging
import os
import subprocess
import sys
import tomllib

import msgspec
import pytest

from native.iso8583 import dialect
from switch.security import dukpt, keys, keystore, pinblock, sandbox, terminal
from switch.security.ciphers import tdes_decrypt
from switch.security.config import Security, check
from switch.security.mac import kcv, terminal_mac
from switch.security.module import (
    CheckValueMismatch,
    DukptKey,
    KsnError,
    SecurityModule,
    SessionKey,
    UnknownKey,
    WrongKeyKind,
)
from switch.security.software import SoftwareModule

run = asyncio.run
TERMINAL = dialect("terminal-87")
PAN = "4761739001010010"
TMK_TDES = bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
TMK_AES = bytes.fromhex(sandbox.KEYS["demo-tmk-aes"][2])
BDK = bytes.fromhex(sandbox.KEYS["demo-bdk-tdes"][2])
ZPK_A = bytes.fromhex(sandbox.ZPKS["bank-a"])
KSN = "FFFF9876543210E00005"


@pytest.fixture
def hsm():
    return sandbox.module()


def signed_request(key, algorithm, terminal_id="SEC00001", extra=None):
    fields = {"mti": "0200", 3: "000000", 4: "000000001000", 11: "000123", 41: terminal_id, 42: "DEMOSEC00000001"}
    fields.update(extra or {})
    fields[64] = bytes(8)
    return terminal.sign(TERMINAL.encode(fields), key, algorithm)


def sign_on(hsm, terminal_id, tmk_name, tmk, algorithm):
    tak_name, tpk_name = keys.session_key_names(terminal_id)
    answer = run(hsm.generate_session_keys(tmk_name, tak_name, tpk_name))
    assert answer.algorithm == algorithm
    tak, tpk = terminal.session_keys(tmk, algorithm, answer.field48())
    return SessionKey(tak_name), SessionKey(tpk_name), tak, tpk


def test_software_module_is_a_security_module(hsm):
    assert isinstance(hsm, SecurityModule)
    assert run(hsm.diagnostics()).ok


@pytest.mark.parametrize("tmk_name, tmk, algorithm", [("demo-tmk-tdes", TMK_TDES, "tdes"), ("demo-tmk-aes", TMK_AES, "aes")])
def test_session_keys_mac_both_ways(hsm, tmk_name, tmk, algorithm):
    tak_ref, _, tak, _ = sign_on(hsm, "SEC00001", tmk_name, tmk, algorithm)
    message = signed_request(tak, algorithm)
    assert TERMINAL.decode(message).get(64) == message[-8:]
    assert run(hsm.verify_mac(tak_ref, terminal.mac_data(message), message[-8:]))
    # one flipped bit anywhere in the covered bytes, or in the MAC, fails
    tampered = bytearray(message)
    tampered[20] ^= 1
    assert not run(hsm.verify_mac(tak_ref, terminal.mac_data(bytes(tampered)), message[-8:]))
    assert not run(hsm.verify_mac(tak_ref, terminal.mac_data(message), bytes(8)))
    assert not run(hsm.verify_mac(tak_ref, terminal.mac_data(message), message[-8:-1]))
    # the response MAC, checked by the terminal
    response = TERMINAL.encode({"mti": "0210", 11: "000123", 39: "00", 41: "SEC00001", 64: bytes(8)})
    mac = run(hsm.generate_mac(tak_ref, terminal.mac_data(response)))
    assert terminal.verify(response[:-8] + mac, tak, algorithm)


def test_new_sign_on_replaces_session_keys(hsm):
    tak_ref, _, old_tak, _ = sign_on(hsm, "SEC00002", "demo-tmk-tdes", TMK_TDES, "tdes")
    _, _, new_tak, _ = sign_on(hsm, "SEC00002", "demo-tmk-tdes", TMK_TDES, "tdes")
    assert old_tak != new_tak
    message = signed_request(old_tak, "tdes", "SEC00002")
    assert not run(hsm.verify_mac(tak_ref, terminal.mac_data(message), message[-8:]))


def test_dukpt_mac_request_and_response(hsm):
    mac_key, _, algorithm = terminal.dukpt_keys(BDK, KSN)
    message = signed_request(mac_key, algorithm, "SEC00200", {48: "KS020" + KSN})
    ref = DukptKey("demo-bdk-tdes", KSN)
    assert run(hsm.verify_mac(ref, terminal.mac_data(message), message[-8:]))
    assert not run(hsm.verify_mac(DukptKey("demo-bdk-tdes", "FFFF9876543210E00006"), terminal.mac_data(message), message[-8:]))
    mac = run(hsm.generate_mac(ref, b"response bytes"))
    assert mac == terminal_mac(mac_key, b"response bytes", "tdes")  # section 8: under the request's key
    response_variant = dukpt.tdes_working_key(BDK, bytes.fromhex(KSN), "mac-response")
    assert mac != terminal_mac(response_variant, b"response bytes", "tdes")
    with pytest.raises(KsnError, match="more than 10 one-bits"):
        run(hsm.verify_mac(DukptKey("demo-bdk-tdes", "FFFF9876543210E007FF"), b"x", bytes(8)))


def zpk_a_pin(block, pan=PAN):
    return pinblock.decode(tdes_decrypt(ZPK_A, block), pan)


def test_translate_tpk_to_zpk_format0(hsm):
    _, tpk_ref, _, tpk = sign_on(hsm, "SEC00003", "demo-tmk-tdes", TMK_TDES, "tdes")
    block = terminal.pin_block("1234", PAN, tpk, "tdes")
    out = run(hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0))
    assert out != block and zpk_a_pin(out) == (0, "1234")
    out3 = run(hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 3))
    assert zpk_a_pin(out3) == (3, "1234")


def test_translate_aes_format4_to_zpk_format0(hsm):
    _, tpk_ref, _, tpk = sign_on(hsm, "SEC00100", "demo-tmk-aes", TMK_AES, "aes")
    block = terminal.pin_block("987654", PAN, tpk, "aes")
    assert len(block) == 16
    out = run(hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0))
    assert zpk_a_pin(out) == (0, "987654")
    with pytest.raises(pinblock.PinBlockError, match="format 4 is not accepted"):
        run(hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0, accept=(0, 3)))


def test_translate_dukpt_to_zpk(hsm):
    _, pin_key, algorithm = terminal.dukpt_keys(BDK, KSN)
    block = terminal.pin_block("1234", PAN, pin_key, algorithm)
    out = run(hsm.translate_pin(DukptKey("demo-bdk-tdes", KSN), block, PAN, "zpk-bank-b", 0))
    assert pinblock.decode(tdes_decrypt(bytes.fromhex(sandbox.ZPKS["bank-b"]), out), PAN) == (0, "1234")


def test_translate_zpk_to_zpk_and_import_under_zmk(hsm):
    zmk = bytes.fromhex("89E88CF7931444F334BD7547FC3F380C")
    new_zpk = bytes.fromhex("F039121BEC83D26B169BDCD5B22AAF8F")
    mod = SoftwareModule({**hsm._keys, "zmk-x": keystore.Entry("zmk-x", "zmk", "tdes", kcv(zmk, "tdes"), zmk)})
    under = keys.wrap(zmk, "tdes", new_zpk, "tdes")
    with pytest.raises(CheckValueMismatch):
        run(mod.import_key("zpk-x", "zpk", "tdes", "zmk-x", under, "000000"))
    with pytest.raises(UnknownKey):
        run(mod.key_info("zpk-x"))
    info = run(mod.import_key("zpk-x", "zpk", "tdes", "zmk-x", under, kcv(new_zpk, "tdes")))
    assert info.kcv == kcv(new_zpk, "tdes")
    block = pinblock.encipher(ZPK_A, "tdes", 0, "4321", PAN)
    out = run(mod.translate_pin(SessionKey("zpk-bank-a"), block, PAN, "zpk-x", 0))
    assert pinblock.decode(tdes_decrypt(new_zpk, out), PAN) == (0, "4321")


def test_translate_refuses_format1_in_and_out(hsm):
    format1 = bytes.fromhex("141234ABCDEF0123")  # format 1: not bound to the PAN
    from switch.security.ciphers import tdes_encrypt

    with pytest.raises(pinblock.PinBlockError, match=f"^{pinblock.UNUSABLE}$"):  # no more said (an oracle)
        run(hsm.translate_pin(SessionKey("zpk-bank-b"), tdes_encrypt(bytes.fromhex(sandbox.ZPKS["bank-b"]), format1), PAN, "zpk-bank-a", 0))
    block = pinblock.encipher(bytes.fromhex(sandbox.ZPKS["bank-b"]), "tdes", 0, "1234", PAN)
    with pytest.raises(pinblock.PinBlockError, match="format 1 cannot be produced"):
        run(hsm.translate_pin(SessionKey("zpk-bank-b"), block, PAN, "zpk-bank-a", 1))


def test_garbage_block_is_pin_error_not_crash(hsm):
    _, tpk_ref, _, _ = sign_on(hsm, "SEC00004", "demo-tmk-tdes", TMK_TDES, "tdes")
    failures = 0
    for i in range(64):
        try:
            run(hsm.translate_pin(tpk_ref, os.urandom(8), PAN, "zpk-bank-a", 0))
        except pinblock.PinBlockError:
            failures += 1
    assert failures >= 60  # a random block is almost never a valid one
    with pytest.raises(pinblock.PinBlockError, match="8 bytes"):
        run(hsm.translate_pin(tpk_ref, os.urandom(16), PAN, "zpk-bank-a", 0))


def test_keys_are_used_for_their_purpose_only(hsm):
    with pytest.raises(WrongKeyKind, match="zpk, not usable for mac"):
        run(hsm.verify_mac(SessionKey("zpk-bank-a"), b"x", bytes(8)))
    with pytest.raises(WrongKeyKind):
        run(hsm.translate_pin(SessionKey("demo-tmk-tdes"), bytes(8), PAN, "zpk-bank-a", 0))
    with pytest.raises(WrongKeyKind):
        run(hsm.generate_session_keys("zpk-bank-a", "x.tak", "x.tpk"))
    with pytest.raises(UnknownKey, match="'nope'"):
        run(hsm.generate_mac(SessionKey("nope"), b"x"))


def test_no_pin_block_pin_or_key_in_errors_or_logs(hsm, caplog):
    caplog.set_level(logging.DEBUG)
    _, tpk_ref, _, tpk = sign_on(hsm, "SEC00005", "demo-tmk-tdes", TMK_TDES, "tdes")
    block = terminal.pin_block("1234", PAN, tpk, "tdes")
    secrets_ = [block.hex(), tpk.hex(), PAN, ZPK_A.hex(), TMK_TDES.hex()]
    texts = []
    for call in (
        lambda: hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 1),
        lambda: hsm.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0, accept=(3,)),
        lambda: hsm.translate_pin(tpk_ref, block[:7], PAN, "zpk-bank-a", 0),
        lambda: hsm.translate_pin(tpk_ref, block, PAN + "x", "zpk-bank-a", 0),
        lambda: hsm.translate_pin(SessionKey("zpk-bank-a"), block, PAN, "nope", 0),
    ):
        with pytest.raises(Exception) as e:
            run(call())
        texts += [str(e.value), repr(e.value)]
    texts += [r.getMessage() for r in caplog.records] + [repr(hsm), repr(DukptKey("b", KSN))]
    texts += [repr(e) for e in hsm._keys.values()]
    for text in texts:
        for s in secrets_:
            assert s.lower() not in text.lower(), text


# -- key store ------------------------------------------------------------------

def _store(tmp_path, master):
    path = tmp_path / "keys.json"
    keystore.create(path, master)
    return path


def test_key_store_round_trip_and_mode(tmp_path):
    master = bytes.fromhex(keystore.new_master_key())
    path = _store(tmp_path, master)
    keystore.add(path, master, "tmk-1", "tmk", "tdes", TMK_TDES, "08d7b4")
    keystore.add(path, master, "tmk-2", "tmk", "aes", TMK_AES, kcv(TMK_AES, "aes"))
    loaded = keystore.load(path, master)
    assert loaded["tmk-1"].key == TMK_TDES and loaded["tmk-2"].key == TMK_AES
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text().lower()
    assert TMK_TDES.hex() not in text and TMK_AES.hex() not in text and master.hex() not in text


def test_key_store_wrong_master_key_is_a_clear_error(tmp_path):
    master = bytes.fromhex(keystore.new_master_key())
    path = _store(tmp_path, master)
    keystore.add(path, master, "tmk-1", "tmk", "tdes", TMK_TDES, "08D7B4")
    other = bytes.fromhex(keystore.new_master_key())
    with pytest.raises(keystore.KeyStoreError, match=r"keys.json: the master key does not open this store \(wrong master key\?\)") as e:
        keystore.load(path, other)
    assert other.hex() not in str(e.value).lower() and master.hex() not in str(e.value).lower()


def test_key_store_refuses_kcv_mismatch(tmp_path):
    master = bytes.fromhex(keystore.new_master_key())
    path = _store(tmp_path, master)
    with pytest.raises(keystore.KeyStoreError, match="key 'tmk-1': check value mismatch"):
        keystore.add(path, master, "tmk-1", "tmk", "tdes", TMK_TDES, "000000")
    assert keystore.load(path, master) == {}


def test_key_store_edited_entry_is_refused(tmp_path):
    master = bytes.fromhex(keystore.new_master_key())
    path = _store(tmp_path, master)
    keystore.add(path, master, "tmk-1", "tmk", "tdes", TMK_TDES, "08D7B4")
    for old, new in (('"tmk"', '"zpk"'), ('"08D7B4"', '"000000"')):
        text = path.read_text()
        path.write_text(text.replace(old, new))
        with pytest.raises(keystore.KeyStoreError, match=r"key 'tmk-1' \(\$\.keys\[0\]\): does not open"):
            keystore.load(path, master)
        path.write_text(text)
    keystore.load(path, master)


def test_master_key_from_file_and_env(tmp_path, monkeypatch):
    hexkey = keystore.new_master_key()
    (tmp_path / "m").write_text(hexkey + "\n")
    assert keystore.read_master_key(tmp_path / "m") == bytes.fromhex(hexkey)
    monkeypatch.setenv("PS_TEST_MASTER", hexkey)
    assert keystore.read_master_key(env="PS_TEST_MASTER") == bytes.fromhex(hexkey)
    monkeypatch.setenv("PS_TEST_MASTER", "zz" + hexkey[2:])
    with pytest.raises(keystore.KeyStoreError, match="PS_TEST_MASTER: expected 64 hex digits") as e:
        keystore.read_master_key(env="PS_TEST_MASTER")
    assert hexkey[2:] not in str(e.value)
    with pytest.raises(keystore.KeyStoreError, match="PS_TEST_NOT_SET is not set"):
        keystore.read_master_key(env="PS_TEST_NOT_SET")


def test_sandbox_store_matches_published_demo_keys():
    keys_ = keystore.load(sandbox.STORE, keystore.read_master_key(sandbox.MASTER_KEY_FILE))
    for name, (kind, algorithm, clear) in sandbox.KEYS.items():
        assert (keys_[name].kind, keys_[name].algorithm, keys_[name].key.hex().upper()) == (kind, algorithm, clear)
    assert keys_["demo-tmk-tdes"].kcv == "08D7B4"


# -- CLI ------------------------------------------------------------------------

def _keys_cli(*args, stdin=""):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(
        [sys.executable, "-m", "switch.cli", "keys", *args], input=stdin, capture_output=True, text=True, env=env
    )


def test_keys_cli_import_reads_the_key_from_stdin(tmp_path):
    master, store = tmp_path / "master.key", tmp_path / "keys.json"
    assert _keys_cli("new-master", "--out", str(master)).returncode == 0
    assert oct(master.stat().st_mode & 0o777) == "0o600"
    m = ["--store", str(store), "--master-key-file", str(master)]
    assert _keys_cli("init", *m).returncode == 0
    # two components, XORed: 0123..3210 = (0123..3210 ^ FF..FF) ^ FF..FF
    comp1 = bytes(b ^ 0xFF for b in TMK_TDES).hex()
    # The demo TMK (spec 7): a sandbox's store (--sandbox), refused in any other.
    done = _keys_cli("import", *m, "--sandbox", "--name", "tmk-a", "--kind", "tmk", "--algorithm", "tdes", "--kcv", "08D7B4",
                     stdin=f"{comp1}\n{'FF' * 16}\n")
    assert done.returncode == 0, done.stderr
    assert "kcv 08D7B4" in done.stdout and TMK_TDES.hex() not in (done.stdout + done.stderr).lower()
    bad = _keys_cli("import", *m, "--sandbox", "--name", "tmk-b", "--kind", "tmk", "--algorithm", "tdes", "--kcv", "123456",
                    stdin=TMK_TDES.hex())
    assert bad.returncode == 2 and "check value mismatch" in bad.stderr
    listed = _keys_cli("list", *m)
    assert listed.stdout.splitlines() == ["tmk-a\ttmk\ttdes\t08D7B4"]


# -- configuration ----------------------------------------------------------------

SAMPLE = """
[module]
kind = "software"
key_store = "/etc/payswitch/keys.json"
master_key_env = "PAYSWITCH_MASTER_KEY"

[[merchants]]
merchant = "SHOP00000000001"
policy = "mac+pin"
[[merchants.terminals]]
terminals = "SHOP0001-SHOP0099"
tmk = "shop-tmk"
[[merchants.terminals]]
terminals = "SHOP0100-SHOP0101"
bdk = "shop-bdk"
pin_formats = [0]
[merchants.terminals.dukpt_devices]
SHOP0100 = "FFFF9876543210E00000"
SHOP0101 = ["FFFF9876543212E00000", "FFFF9876543214E00000"]

[[acquirers]]
acquirer = "bank-a"
zpk = "bank-a-zpk"
"""


def test_config_decodes_and_answers_lookups():
    sec = msgspec.convert(tomllib.loads(SAMPLE), Security)
    assert check(sec) == []
    assert sec.policy("SHOP00000000001") == "mac+pin" and sec.policy("OTHER") == "none"
    assert sec.terminal_keys("SHOP00000000001", "SHOP0050").tmk == "shop-tmk"
    assert sec.terminal_keys("SHOP00000000001", "SHOP0101").bdk == "shop-bdk"
    assert sec.terminal_keys("SHOP00000000001", "SHOP0250") is None
    assert sec.acquirer_keys("bank-a").zpk == "bank-a-zpk" and sec.acquirer_keys("bank-a").pin_format == 0
    hsm_cfg = msgspec.convert({"module": {"kind": "hsm", "endpoints": ["10.0.0.5:1500"], "key_table": "t.json"}}, Security)
    assert hsm_cfg.module.endpoints == ["10.0.0.5:1500"]


def test_config_problems_name_the_key_path():
    raw = tomllib.loads(SAMPLE)
    raw["merchants"][0]["terminals"][0]["bdk"] = "x"
    del raw["module"]["master_key_env"]
    problems = check(msgspec.convert(raw, Security))
    assert ("security.module", "give exactly one of master_key_file or master_key_env") in problems
    assert ("security.merchants[0].terminals[0]", "give exactly one of tmk or bdk") in problems
    with pytest.raises(msgspec.ValidationError, match=r"\$\.merchants\[0\]\.policy"):
        msgspec.convert({"merchants": [{"merchant": "M", "policy": "pin"}]}, Security)


def test_sandbox_config_is_consistent():
    sec = sandbox.security_config()
    assert check(sec) == []
    assert sec.terminal_keys("DEMOSEC00000001", "SEC00150").tmk == "demo-tmk-aes"
    assert sec.terminal_keys("DEMOSEC00000001", "SEC00250").bdk == "demo-bdk-tdes"
    for a in sec.acquirers:
        assert a.zpk in sandbox.KEYS


# -- terminal side ------------------------------------------------------------------

def test_mac_data_needs_the_mac_bit():
    plain = TERMINAL.encode({"mti": "0800", 7: "1129203000", 11: "000001", 41: "SEC00001", 70: "301"})
    with pytest.raises(terminal.MacFieldError, match="bit 128 \\(MAC\\) not set"):
        terminal.mac_data(plain + bytes(8))
    plain = TERMINAL.encode({"mti": "0200", 11: "000001", 41: "SEC00001"})
    with pytest.raises(terminal.MacFieldError, match="bit 64 \\(MAC\\) not set"):
        terminal.mac_data(plain + bytes(8))
    with_128 = TERMINAL.encode({"mti": "0800", 7: "1129203000", 11: "000001", 41: "SEC00001", 70: "101", 128: bytes(8)})
    assert terminal.mac_data(with_128) == with_128[:-8]
    signed = terminal.sign(with_128, TMK_TDES, "tdes")
    assert TERMINAL.decode(signed).get(128) == signed[-8:] and terminal.verify(signed, TMK_TDES, "tdes")


def test_encode_signed_puts_the_mac_in_64_or_128(hsm):
    from switch.client import build

    tak_ref, _, tak, _ = sign_on(hsm, "SEC00006", "demo-tmk-tdes", TMK_TDES, "tdes")
    purchase = build("purchase", terminal="SEC00006", merchant="DEMOSEC00000001", pan=PAN, amount=1000)
    signed = terminal.encode_signed(TERMINAL, purchase, tak, "tdes")
    assert TERMINAL.decode(signed).get(64) == signed[-8:]
    assert run(hsm.verify_mac(tak_ref, terminal.mac_data(signed), signed[-8:]))
    key_request = build("signon", terminal="SEC00006")
    key_request[70] = "101"
    signed = terminal.encode_signed(TERMINAL, key_request, tak, "tdes")
    assert TERMINAL.decode(signed).get(128) == signed[-8:] and TERMINAL.decode(signed).get(64) is None
    assert run(hsm.verify_mac(tak_ref, terminal.mac_data(signed), signed[-8:]))


def test_format4_block_does_not_fit_field_52_of_terminal_87():
    """Spec 8 puts format 4 (16 bytes) in field 52, which terminal-87 defines as b8: a question for the spec."""
    block = terminal.pin_block("1234", PAN, TMK_AES, "aes")
    assert len(block) == 16
    with pytest.raises(Exception, match="field 52: expected 8 bytes"):
        TERMINAL.encode({"mti": "0200", 11: "000001", 52: block})


def test_key_refs_for_a_request():
    sec = sandbox.security_config()
    assert sec.key_refs("DEMOSEC00000001", "SEC00007") == (SessionKey("SEC00007.tak"), SessionKey("SEC00007.tpk"))
    ksn = "FFFF9876543210E00001"
    assert sec.key_refs("DEMOSEC00000001", "SEC00201", ksn) == (DukptKey("demo-bdk-tdes", ksn),) * 2
    with pytest.raises(KsnError, match="tag KS"):
        sec.key_refs("DEMOSEC00000001", "SEC00201")
    with pytest.raises(KsnError, match="20 \\(TDES\\) or 24 \\(AES\\)"):
        sec.key_refs("DEMOSEC00000001", "SEC00201", "FFFF")
    assert sec.key_refs("DEMO00000000001", "DEMO0001") is None
    assert sec.policy("DEMO00000000001") == "none" and sec.policy("DEMOSEC00000001") == "mac+pin"
