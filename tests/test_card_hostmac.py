"""MACs on the card host link: what the switch sends, what it accepts, what the sandbox acquirer checks.

MACs are checked against an independent computation (the ISO 9797-1
algorithm 3 and CMAC written out here with ``cryptography``'s block ciphers,
not the project's :mod:`switch.security.mac`).
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.card.hostlink import (
    Close,
    Completed,
    HostConnection,
    Send,
    StanAllocator,
    State,
    fields_view,
    request_fields,
    reversal_fields,
)
from adapters.card.hostmac import HostMac, HostMacError
from adapters.card.sandbox import HostMacCheck, Sandbox
from adapters.card.sim import build_parser, decide_message, host_mac
from native.iso8583 import dialect
from switch.core.acquirer import RETRY, Original, Request, Result
from switch.security import sandbox as sandbox_keys
from switch.security.module import ModuleUnavailable

try:  # cryptography >= 43 keeps TripleDES in "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

HOST = dialect("host-87-bcd")
ACQ = "12345678901"
F7 = "1114221320"
ZAK_A = bytes.fromhex(sandbox_keys.KEYS["zak-bank-a"][2])  # tdes
ZAK_B = bytes.fromhex(sandbox_keys.KEYS["zak-bank-b"][2])  # aes


def _ecb(key: bytes, block: bytes, decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(key * (3 if len(key) == 8 else 1)), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def iso9797_alg3(key: bytes, data: bytes) -> bytes:
    """Retail MAC, padding method 1, written out: DES-CBC under K1, then D(K2), E(K1) on the result."""
    k1, k2 = key[:8], key[8:]
    data = data + b"\x00" * (-len(data) % 8) if data else bytes(8)
    h = bytes(8)
    for i in range(0, len(data), 8):
        h = _ecb(k1, bytes(a ^ b for a, b in zip(h, data[i:i + 8])))
    return _ecb(k1, _ecb(k2, h, decrypt=True))


def cmac8(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()[:8]


def make_request(**kw) -> Request:
    base = dict(txn_id=1, kind="card", mti="0200", processing_code="000000", amount=1000, currency="840",
                terminal_id="DEMO0001", merchant_id="DEMO00000000001", stan="000042",
                transmission_time="1114221300", rrn="331822000001", local_time="221300", local_date="1114",
                pan="4761739001010119", expiry="2812", entry_mode="051", pos_condition="00")
    base.update(kw)
    return Request(**base)


def reversal_request() -> Request:
    original = Original(txn_id=1, mti="0200", processing_code="000000", amount=1000, currency="840",
                        stan="000042", transmission_time="1114221300", rrn="331822000001",
                        host_stan="000042", host_time=F7, pan="4761739001010119")
    return make_request(txn_id=2, mti="0400", rrn="331822000002", original=original)


def link_mac(algorithm="tdes-retail", key="zak-bank-a", module=None) -> HostMac:
    mac = HostMac("bank-a", algorithm, key, HOST)
    mac.use(sandbox_keys.module() if module is None else module)
    return mac


# -- what goes out ----------------------------------------------------------------

@pytest.mark.parametrize("algorithm, key_name, key, independent", [
    ("tdes-retail", "zak-bank-a", ZAK_A, iso9797_alg3),
    ("aes-cmac", "zak-bank-b", ZAK_B, cmac8),
])
def test_request_carries_field_64_over_the_bytes_from_the_mti(algorithm, key_name, key, independent):
    mac = link_mac(algorithm, key_name)
    fields = request_fields(make_request(), stan="000042", f7=F7, acquirer_id=ACQ)
    wire = mac.encode_now(fields)
    assert asyncio.run(mac.encode(fields)) == wire  # the awaited path gives the same bytes
    msg = HOST.decode(wire)
    assert 64 in msg and 128 not in msg
    assert wire[:2] == b"\x02\x00"  # host-87-bcd: the MTI in BCD, covered from its first byte
    assert bytes(msg[64]) == wire[-8:] == independent(key, wire[:-8])
    # The message itself is what it was without a MAC.
    assert {k: v for k, v in msg.fields().items() if k != 64} == {k: v for k, v in fields.items() if k != "mti"}
    assert mac.verify_now(msg, wire) == ""


def test_reversal_with_field_90_carries_the_mac_in_field_128():
    mac = link_mac()
    fields = reversal_fields(reversal_request(), stan="000043", f7=F7, acquirer_id=ACQ)
    assert fields["mti"] == "0420" and 90 in fields
    wire = mac.encode_now(fields)
    msg = HOST.decode(wire)
    assert 128 in msg and 64 not in msg
    assert bytes(msg[128]) == iso9797_alg3(ZAK_A, wire[:-8])


def test_network_messages_are_maced_too():
    mac = link_mac()
    wire = mac.encode_now({"mti": "0800", 7: F7, 11: "000001", 70: "001"})
    # Field 70 needs the secondary bitmap: the MAC goes in 128.
    assert iso9797_alg3(ZAK_A, wire[:-8]) == wire[-8:] == bytes(HOST.decode(wire)[128])


# -- what comes in ----------------------------------------------------------------

def test_verify_names_what_is_wrong():
    mac = link_mac()
    good = mac.encode_now({"mti": "0210", 7: F7, 11: "000042", 39: "00"})
    assert mac.verify_now(HOST.decode(good), good) == ""
    assert asyncio.run(mac.verify(HOST.decode(good), good)) == ""
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    assert mac.verify_now(HOST.decode(flipped), flipped) == "wrong MAC"
    bare = HOST.encode({"mti": "0210", 7: F7, 11: "000042", 39: "00"})
    assert mac.verify_now(HOST.decode(bare), bare) == "no MAC"
    # Another key's MAC (an acquirer with bank-b's key) is as wrong as none.
    other = HostMacCheck("tdes-retail", bytes.fromhex(sandbox_keys.KEYS["zak-cup"][2]), HOST)
    theirs = other.encode({"mti": "0210", 7: F7, 11: "000042", 39: "00"})
    assert mac.verify_now(HOST.decode(theirs), theirs) == "wrong MAC"


def test_a_module_that_cannot_answer_makes_nothing_authentic():
    class Down:
        async def verify_mac(self, key, data, mac):
            raise ModuleUnavailable("HSM unreachable")

    mac = HostMac("bank-a", "tdes-retail", "zak-bank-a", HOST)
    mac.use(Down())
    assert not mac.immediate
    wire = link_mac().encode_now({"mti": "0210", 7: F7, 11: "000042", 39: "00"})
    assert asyncio.run(mac.verify(HOST.decode(wire), wire)).startswith("not checked: ModuleUnavailable")


@pytest.mark.parametrize("algorithm, key, module, problem", [
    ("tdes-retail", "zak-bank-a", None, "no security module"),
    ("tdes-retail", "no-such-key", "sandbox", "no key named 'no-such-key'"),
    ("tdes-retail", "zpk-bank-a", "sandbox", "a zpk key, not a zone MAC key"),
    ("tdes-retail", "zak-bank-b", "sandbox", "a aes key cannot make tdes-retail MACs"),
    ("aes-cmac", "zak-bank-a", "sandbox", "a tdes key cannot make aes-cmac MACs"),
])
def test_a_link_that_cannot_mac_refuses_to_start(algorithm, key, module, problem):
    mac = HostMac("bank-a", algorithm, key, HOST)
    mac.use(sandbox_keys.module() if module else None)
    with pytest.raises(HostMacError, match=problem):
        asyncio.run(mac.check())


def test_configuration_errors_are_named():
    with pytest.raises(ValueError, match="mac must be one of tdes-retail, aes-cmac"):
        HostMac("bank-a", "md5", "zak-bank-a", HOST)
    with pytest.raises(ValueError, match="needs mac_key"):
        HostMac("bank-a", "tdes-retail", "", HOST)


# -- the sans-I/O core: an answer with a bad MAC ------------------------------------

def ready_core() -> HostConnection:
    conn = HostConnection(StanAllocator(1), acquirer_id=ACQ)
    sign_on = conn.connection_made(0.0, 1_700_000_000.0)
    conn.receive(fields_view({"mti": "0810", 7: sign_on[7], 11: sign_on[11], 70: "001", 39: "00"}), 0.1)
    assert conn.state is State.READY
    return conn


def test_an_approval_with_a_bad_mac_is_uncertain_never_approved():
    conn = ready_core()
    msg, pending = conn.request(make_request(host_stan="000042", host_time=F7), now=1.0, wall=0, timeout=5.0)
    answer = fields_view({"mti": "0210", 7: F7, 11: "000042", 37: "331822000001", 38: "ABC123", 39: "00",
                          41: "DEMO0001"})
    [event] = conn.receive(answer, 1.1, authentic=False)
    assert isinstance(event, Completed) and event.pending is pending
    assert event.outcome == Result(response_code="91", acquirer_ref=pending.ref, uncertain=True)
    assert event.outcome.auth_code is None
    assert conn.metrics.get("mac_failures", mti="0200") == 1
    assert conn.metrics.get("requests", mti="0200", response_code="91") == 1
    assert conn.metrics.get("requests", mti="0200", response_code="00") == 0
    assert len(conn.inflight) == 0 and len(conn.stans) == 0


def test_a_reversal_answer_with_a_bad_mac_is_retried():
    conn = ready_core()
    msg, pending = conn.reversal(reversal_request(), now=1.0, wall=1_700_000_000.0, timeout=5.0)
    answer = fields_view({"mti": "0430", 7: msg[7], 11: msg[11], 39: "00"})
    [event] = conn.receive(answer, 1.1, authentic=False)
    assert event.outcome == RETRY
    assert conn.metrics.get("mac_failures", mti="0420") == 1


def test_the_acquirers_own_0800_with_a_bad_mac_is_answered_a0_and_not_acted_on():
    conn = ready_core()
    [event] = conn.receive(fields_view({"mti": "0800", 7: F7, 11: "900001", 70: "002"}), 1.0, authentic=False)
    assert isinstance(event, Send) and event.message[39] == "A0"
    assert conn.state is State.READY  # a forged sign-off does not take the connection out of service
    assert conn.metrics.get("mac_failures", mti="0800") == 1


def test_a_sign_on_answer_with_a_bad_mac_closes_the_connection():
    conn = HostConnection(StanAllocator(1), acquirer_id=ACQ)
    sign_on = conn.connection_made(0.0, 1_700_000_000.0)
    events = conn.receive(fields_view({"mti": "0810", 7: sign_on[7], 11: sign_on[11], 39: "00"}), 0.1,
                          authentic=False)
    assert [type(e) for e in events] == [Close] and conn.state is State.SIGNING_ON


# -- the sandbox acquirer's side ----------------------------------------------------

def sim_acquirer(*argv):
    args = build_parser().parse_args(["--name", "bank-a", *argv])
    written = []
    acq = SimpleNamespace(args=args, sandbox=Sandbox("bank-a", 1), faults=__import__("random").Random(1),
                          lateness=__import__("random").Random(2), mac=host_mac(args, HOST),
                          ledger=SimpleNamespace(write=written.extend))
    return acq, written


def test_the_simulator_checks_the_switchs_mac_and_macs_its_answer():
    acq, ledger = sim_acquirer("--mac", "tdes-retail")
    switch_side = link_mac()
    wire = switch_side.encode_now(request_fields(make_request(), stan="000042", f7=F7, acquirer_id=ACQ))
    fault, out = decide_message(acq, HOST.decode(wire), wire)
    assert fault == "answer" and out[39] == "00"
    assert [e["mac"] for e in ledger] == ["ok"] and ledger[0]["delta"] == 1000
    answer = acq.mac.encode(out)
    assert switch_side.verify_now(HOST.decode(answer), answer) == ""
    assert iso9797_alg3(ZAK_A, answer[:-8]) == answer[-8:]


def test_the_simulator_answers_a0_to_a_wrong_mac_and_moves_no_money():
    acq, ledger = sim_acquirer("--mac", "tdes-retail")
    wire = link_mac().encode_now(request_fields(make_request(), stan="000042", f7=F7, acquirer_id=ACQ))
    wire = wire[:-1] + bytes([wire[-1] ^ 0x80])
    fault, out = decide_message(acq, HOST.decode(wire), wire)
    assert out[39] == "A0" and 38 not in out
    [event] = ledger
    assert event["event"] == "mac_failure" and event["reason"] == "wrong MAC" and event["delta"] == 0
    assert "4761739001010119" not in repr(event)
    assert acq.sandbox.balance("4761739001010119") == 0


def test_simulator_mac_options():
    with pytest.raises(ValueError, match="give --mac-key"):
        host_mac(build_parser().parse_args(["--name", "bank-a", "--mac", "aes-cmac"]), HOST)
    assert host_mac(build_parser().parse_args(["--name", "bank-a"]), HOST) is None
    own = host_mac(build_parser().parse_args(["--name", "x", "--mac", "aes-cmac", "--mac-key", ZAK_B.hex()]), HOST)
    wire = own.encode({"mti": "0810", 7: F7, 11: "000001", 39: "00"})
    assert cmac8(ZAK_B, wire[:-8]) == wire[-8:]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "adapters.card.sim", "--bad-mac-rate", "0.5"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2 and "--bad-mac-rate needs --mac" in done.stderr


# -- configuration ----------------------------------------------------------------

def test_the_embedded_default_macs_bank_a_and_its_file_form_stays_valid():
    from switch import config, preflight

    cfg = config.default()
    bank_a = next(a for a in cfg.acquirers if a.name == "bank-a")
    assert (bank_a.mac, bank_a.mac_key) == ("tdes-retail", "zak-bank-a")
    assert next(s for s in cfg.simulators if s.name == "bank-a").args[-2:] == ["--mac", "tdes-retail"]
    preflight._security(cfg)  # the key is in the sandbox store, a zone MAC key of the right algorithm
    # Without the sandbox's security section (the same text from a file) nothing is MACed.
    assert all(a.mac == "none" for a in config.loads(config.DEFAULT_TOML, "switch.toml").acquirers)


CARD = '''
sandbox = true  # the sandbox's key store and HSM key table (switch.security.sandbox_only)

[[acquirers]]
name = "bank-x"
type = "{type}"
endpoints = ["{endpoint}"]
{mac}
'''
MODULE = f'''
[security.module]
kind = "software"
key_store = "{sandbox_keys.STORE}"
master_key_file = "{sandbox_keys.MASTER_KEY_FILE}"
'''


@pytest.mark.parametrize("type_, mac, module, problem", [
    ("card", 'mac = "tdes-retail"\nmac_key = "zak-bank-a"', "", "needs a security module (security.module) holding the key - at `$.acquirers[0].mac_key`"),
    ("card", 'mac = "tdes-retail"', MODULE, "needs the name of the acquirer's zone MAC key (ZAK) - at `$.acquirers[0].mac_key`"),
    ("card", 'mac_key = "zak-bank-a"', MODULE, "name the MAC algorithm too"),
    ("card", 'mac = "sha1"\nmac_key = "zak-bank-a"', MODULE, "Invalid enum value 'sha1' - at `$.acquirers[0].mac`"),
    ("citycard", 'mac = "tdes-retail"\nmac_key = "zak-bank-a"', MODULE, "apply to card acquirers, not to a citycard"),
])
def test_mac_configuration_errors_name_the_key(type_, mac, module, problem):
    from switch import config

    text = CARD.format(type=type_, endpoint="127.0.0.1:9", mac=mac) + module
    with pytest.raises(config.ConfigError, match=re.escape(problem)):
        config.loads(text, "switch.toml")


@pytest.mark.parametrize("mac, key, problem", [
    ("tdes-retail", "zak-nowhere", "'zak-nowhere': no such key in the security module"),
    ("tdes-retail", "zpk-bank-a", "'zpk-bank-a': a zpk key, not a zone MAC key (zak)"),
    ("aes-cmac", "zak-bank-a", "'zak-bank-a': a tdes key cannot make aes-cmac MACs"),
])
def test_preflight_checks_the_key_in_the_software_store(mac, key, problem):
    from switch import config, preflight

    cfg = config.loads(CARD.format(type="card", endpoint="127.0.0.1:9", mac=f'mac = "{mac}"\nmac_key = "{key}"')
                       + MODULE, "switch.toml")
    with pytest.raises(config.ConfigError, match=re.escape(problem + " - at `$.acquirers[0].mac_key`")):
        preflight._security(cfg)


def test_late_and_unmatched_answers_with_a_bad_mac_are_counted_too():
    conn = ready_core()
    [event] = conn.receive(fields_view({"mti": "0210", 7: F7, 11: "999999", 39: "00"}), 1.0, authentic=False)
    assert type(event).__name__ == "Unmatched"
    assert conn.metrics.get("mac_failures", mti="0210") == 1
    msg, pending = conn.request(make_request(host_stan="000042", host_time=F7), now=1.0, wall=0, timeout=0.5)
    conn.poll(2.0, 0)  # expired: 68, uncertain
    [event] = conn.receive(fields_view({"mti": "0210", 7: F7, 11: "000042", 39: "00"}), 2.1, authentic=False)
    assert type(event).__name__ == "Unmatched"  # not taken as the late answer: it changes nothing
    assert conn.metrics.get("mac_failures", mti="0210") == 2
    # An echo answer with a bad MAC: counted once, under the echo's MTI.
    conn.last_received = -100.0
    [send] = conn.poll(3.0, 0)
    assert conn.receive(fields_view({"mti": "0810", 7: send.message[7], 11: send.message[11], 39: "00"}), 3.1,
                        authentic=False) == []
    assert conn.metrics.get("mac_failures", mti="0800") == 1


def test_preflight_checks_the_key_in_the_hsm_key_table(tmp_path):
    import json

    from switch import config, preflight

    table = tmp_path / "keys.json"
    table.write_text(json.dumps(sandbox_keys.hsm_key_table()))
    hsm = f'\n[security.module]\nkind = "hsm"\nendpoints = ["127.0.0.1:9"]\nkey_table = "{table}"\n'

    def cfg(key):
        mac = f'mac = "tdes-retail"\nmac_key = "{key}"'
        return config.loads(CARD.format(type="card", endpoint="127.0.0.1:9", mac=mac) + hsm, "switch.toml")

    preflight._security(cfg("zak-bank-a"))
    with pytest.raises(config.ConfigError, match=re.escape("'zpk-bank-a': a zpk key, not a zone MAC key (zak)")):
        preflight._security(cfg("zpk-bank-a"))
    table.write_text("{not json")
    with pytest.raises(config.ConfigError, match=re.escape("- at `$.security.module.key_table`")):
        preflight._security(cfg("zak-bank-a"))
