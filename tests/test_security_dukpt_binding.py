"""DUKPT devices bound to terminal IDs (spec 8, project addition; ``dukpt_devices``).

A device whose initial key leaked must not MAC for another terminal under the
same BDK, and a device's KSN counter (the replay check) must be one
terminal's.  The configuration binds each DUKPT terminal to its device(s)
and refuses a device bound twice; a request from a device not bound to its
terminal answers A0 as a wrong MAC does.  The sandbox's DUKPT terminals
(spec 7, public BDK) stay unbound.

The requests run on the service harness of ``tests/test_security_pipeline.py``.
"""
from __future__ import annotations

import logging

import pytest

from native.iso8583 import build_tlv48
from switch import config as config_mod
from switch.client import fresh_ksn
from switch.security import dukpt, terminal
from tests import test_security_pipeline as sp
from tests import test_service as ts

TERM, BDK, VISA, MERCHANT = sp.TERM, sp.BDK, sp.VISA, sp.MERCHANT


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


# -- the configuration ----------------------------------------------------------------------

BASE = """
sandbox = true  # the sandbox's key store and HSM key table (switch.security.sandbox_only)

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9001"]

[[merchants]]
id = "SHOP00000000001"
terminals = ["SHOP0100-SHOP0102"]

[[merchants]]
id = "DEMOSEC00000001"
terminals = ["SEC00001-SEC00399"]

[security.module]
kind = "software"
key_store = "keys.json"
master_key_env = "PAYSWITCH_MASTER"
"""


def entry(terminals: str, devices: str | None = None, *, merchant="SHOP00000000001", key='bdk = "shop-bdk"') -> str:
    table = f"[security.merchants.terminals.dukpt_devices]\n{devices}\n" if devices is not None else ""
    return (f'[[security.merchants]]\nmerchant = "{merchant}"\npolicy = "mac"\n'
            f'[[security.merchants.terminals]]\nterminals = "{terminals}"\n{key}\n{table}')


def load(text: str) -> config_mod.Config:
    return config_mod.loads(BASE + text, "dukpt.toml")


GOOD = 'SHOP0100 = "FFFF9876543210E00000"\nSHOP0101 = "FFFF9876543212E00000"\nSHOP0102 = "FFFF9876543214E00000"'
AT = "security.merchants[0].terminals[0]"


@pytest.mark.parametrize("text, path, words", [
    (entry("SHOP0100-SHOP0102"), AT,
     "terminals 'SHOP0100-SHOP0102' use DUKPT (bdk 'shop-bdk') but bind no device: add dukpt_devices"),
    (entry("SHOP0101"), AT, "terminal 'SHOP0101' uses DUKPT (bdk 'shop-bdk') but binds no device"),
    (entry("SHOP0100-SHOP0102", 'SHOP0100 = "FFFF9876543210E00000"'), f"{AT}.dukpt_devices",
     "terminal 'SHOP0101' uses DUKPT (bdk 'shop-bdk') but binds no device (nor do 1 more of 'SHOP0100-SHOP0102')"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF9876543210G00000"'), f"{AT}.dukpt_devices.SHOP0100",
     "not a device's initial KSN: KSN must be hex digits"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF 9876543210E0000"'), f"{AT}.dukpt_devices.SHOP0100",
     "not a device's initial KSN: KSN must be hex digits"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF9876543210E"'), f"{AT}.dukpt_devices.SHOP0100",
     "not a device's initial KSN: KSN must be 20 (TDES) or 24 (AES) hex digits, got 15 characters"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF9876543210F00000"'), f"{AT}.dukpt_devices.SHOP0100",
     "counter bits set: a device is its initial KSN, counter bits zero (FFFF9876543210E00000)"),
    (entry("SHOP0100", 'SHOP0100 = ["FFFF9876543210E00000", "1234567890123456000000FF"]'),
     f"{AT}.dukpt_devices.SHOP0100[1]", "counter bits set"),
    (entry("SHOP0100", 'SHOP0100 = []'), f"{AT}.dukpt_devices.SHOP0100", "binds no device"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF9876543210E00000"\nSHOP0102 = "FFFF9876543212E00000"'),
     f"{AT}.dukpt_devices.SHOP0102", "terminal 'SHOP0102' is not in this entry's terminals 'SHOP0100'"),
    (entry("SHOP0100-SHOP0101", 'SHOP0100 = "FFFF9876543210E00000"\nSHOP0101 = "123456789012345600000000"'),
     f"{AT}.dukpt_devices", "mixes TDES (20 hex digits) and AES (24) devices"),
    (entry("SHOP0100", 'SHOP0100 = "FFFF9876543210E00000"', key='tmk = "shop-tmk"'), f"{AT}.dukpt_devices",
     "binds DUKPT devices, but these terminals use session keys (tmk)"),
    # The sandbox's range stays unbound only as the sandbox has it: its merchant, its BDK, within its IDs.
    (entry("SEC00200-SEC00300", merchant="DEMOSEC00000001", key='bdk = "demo-bdk-tdes"'), AT,
     "terminals 'SEC00200-SEC00300' use DUKPT (bdk 'demo-bdk-tdes') but bind no device"),
    (entry("SEC00200-SEC00299", merchant="DEMOSEC00000001", key='bdk = "shop-bdk"'), AT, "but bind no device"),
])
def test_a_dukpt_binding_problem_names_the_file_and_key(text, path, words):
    with pytest.raises(config_mod.ConfigError) as e:
        load(text)
    msg = str(e.value)
    assert msg.startswith("dukpt.toml: ") and msg.endswith(f" - at `$.{path}`") and words in msg, msg


@pytest.mark.parametrize("devices, path, first", [
    # Two terminals of one entry.
    ('SHOP0100 = "FFFF9876543210E00000"\nSHOP0101 = "ffff9876543210e00000"\nSHOP0102 = "FFFF9876543214E00000"',
     f"{AT}.dukpt_devices.SHOP0101", f"{AT}.dukpt_devices.SHOP0100"),
    # The same terminal twice: still one binding too many.
    ('SHOP0100 = ["FFFF9876543210E00000", "FFFF9876543210E00000"]\nSHOP0101 = "FFFF9876543212E00000"\n'
     'SHOP0102 = "FFFF9876543214E00000"', f"{AT}.dukpt_devices.SHOP0100[1]", f"{AT}.dukpt_devices.SHOP0100[0]"),
])
def test_a_device_is_bound_to_one_terminal_only(devices, path, first):
    with pytest.raises(config_mod.ConfigError) as e:
        load(entry("SHOP0100-SHOP0102", devices))
    assert str(e.value).endswith(f"device FFFF9876543210E00000 is bound to terminal 'SHOP0100' already (at `$.{first}`): "
                                 f"a device belongs to one terminal, whose replay counter its KSN counter is - at `$.{path}`")


def test_a_device_is_bound_to_one_terminal_across_merchants():
    other = entry("SEC00300", 'SEC00300 = "FFFF9876543212E00000"', merchant="DEMOSEC00000001")
    with pytest.raises(config_mod.ConfigError) as e:
        load(entry("SHOP0100-SHOP0102", GOOD) + other)
    assert "bound to terminal 'SHOP0101' already" in str(e.value)
    assert str(e.value).endswith("- at `$.security.merchants[1].terminals[0].dukpt_devices.SEC00300`")


def test_bound_terminals_and_the_sandbox_range_load():
    cfg = load(entry("SHOP0100-SHOP0102", GOOD)
               + entry("SEC00200-SEC00299", merchant="DEMOSEC00000001", key='bdk = "demo-bdk-tdes"'))
    keys = cfg.security.terminal_keys("SHOP00000000001", "SHOP0101")
    assert keys.dukpt_devices["SHOP0101"] == "FFFF9876543212E00000"
    assert cfg.security.terminal_keys(MERCHANT, "SEC00250").dukpt_devices is None
    assert config_mod.default().security.terminal_keys(MERCHANT, "SEC00250").dukpt_devices is None  # spec 7


def test_device_problem_and_cleared_counter():
    assert dukpt.cleared_counter("ffff9876543210e00005") == "FFFF9876543210E00000"
    assert dukpt.cleared_counter("123456789012345600000005") == "123456789012345600000000"
    assert dukpt.device_problem("FFFF9876543210E00000") is None
    assert dukpt.device_problem("123456789012345600000000") is None
    assert "counter bits zero (123456789012345600000000)" in dukpt.device_problem("123456789012345600010000")
    with pytest.raises(dukpt.KsnError, match="hex digits"):
        dukpt.parse_ksn("FFFF 9876543210E0000")  # bytes.fromhex would skip the space: 9 bytes


# -- requests --------------------------------------------------------------------------------

BOUND, OTHER = "DUK00001", "DUK00002"
BOUND_DEVICE, OTHER_DEVICE = "FFFF9876543210E00000", "FFFF1111111111E00000"  # both under the demo BDK

BINDING = f"""
[[security.merchants.terminals]]
terminals = "{BOUND}-{OTHER}"
bdk = "demo-bdk-tdes"
[security.merchants.terminals.dukpt_devices]
{BOUND} = "{BOUND_DEVICE}"
{OTHER} = "{OTHER_DEVICE.lower()}"
"""


def make_config_text() -> str:
    extra = sp.EXTRA.replace('"SEC00001-SEC00299"', f'"SEC00001-SEC00299", "{BOUND}-{OTHER}"')
    security = sp.SECURITY.replace("\n[[security.acquirers]]", BINDING + "\n[[security.acquirers]]", 1)
    # The sandbox's key store and HSM key table (switch.security.sandbox_only).
    return "sandbox = true\n" + ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + extra + security


def make_config() -> config_mod.Config:
    return config_mod.loads(make_config_text(), "test_security_dukpt_binding.toml")


def run(scenario):
    return sp.run(scenario, cfg=make_config())


def purchase(tid: str, ksn: str, stan: str, mti: str = "0200") -> bytes:
    mac_key, _, algorithm = terminal.dukpt_keys(BDK, ksn)
    fields = sp.fields(tid, stan=stan, f48=build_tlv48({"KS": ksn}))
    if mti == "0800":
        fields = {"mti": "0800", 7: sp.T7, 11: stan, 41: tid, 70: "301", 48: fields[48]}
    return terminal.encode_signed(TERM, fields, mac_key, algorithm)


def ksn(device: str, counter: int) -> str:
    return "%020X" % (int(device, 16) | counter)


def test_a_bound_device_passes_and_its_answer_is_maced():
    async def scenario(sw):
        body = purchase(BOUND, ksn(BOUND_DEVICE, 5), "000001")
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "00"
        assert terminal.verify(out, terminal.dukpt_keys(BDK, ksn(BOUND_DEVICE, 5))[0], "tdes")
        # The lower-case device of the configuration is the same device.
        assert (await ts.call(sw, purchase(OTHER, ksn(OTHER_DEVICE, 1), "000002")))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario)


@pytest.mark.parametrize("mti", ["0200", "0800"])
def test_another_device_of_the_same_bdk_answers_a0_and_moves_no_counter(mti, caplog):
    async def scenario(sw):
        # OTHER's device, its MAC right under the demo BDK, on BOUND: refused like a wrong MAC.
        stolen = ksn(OTHER_DEVICE, 7)
        with caplog.at_level(logging.INFO, logger="payswitch"):
            resp = await ts.call(sw, purchase(BOUND, stolen, "000001", mti))
        assert (resp.mti, resp[39]) == (f"{mti[:2]}10", "A0")
        assert 64 not in resp and 128 not in resp  # answered unMACed
        assert await ts.record(sw, "000001", BOUND) is None  # not journaled, as no A0 is
        assert sw.acquirers["bank-a"].authorized == []
        # A device bound to no terminal at all: the same.
        assert (await ts.call(sw, purchase(BOUND, ksn("FFFF5555555555E00000", 1), "000002", mti)))[39] == "A0"
        # OTHER's device counter did not move: its own terminal goes on from below 7.
        assert (await ts.call(sw, purchase(OTHER, ksn(OTHER_DEVICE, 3), "000003")))[39] == "00"
        return stolen

    stolen = run(scenario)
    refused = [r.getMessage() for r in caplog.records if "not bound" in r.getMessage()]
    shown = "0800/301" if mti == "0800" else mti
    assert refused[0] == (f"terminal {BOUND}: {shown} A0 (KSN: device …11111E is not bound to terminal {BOUND} "
                          "(dukpt_devices))"), refused
    assert not any(stolen in r.getMessage() or OTHER_DEVICE in r.getMessage() for r in caplog.records)


def test_the_sandbox_range_takes_any_device():
    async def scenario(sw):
        for stan in ("000001", "000002", "000003"):
            resp = await ts.call(sw, purchase(sp.DUKPT_TID, fresh_ksn(), stan))
            assert resp[39] == "00"
        assert (await ts.call(sw, purchase("SEC00299", ksn(BOUND_DEVICE, 9), "000004")))[39] == "00"

    run(scenario)


@pytest.mark.parametrize("module", ["software", "hsm"])
def test_preflight_finds_a_device_as_long_as_its_bdks_ksns(tmp_path, module):
    import msgspec

    from switch import preflight
    from switch.security import sandbox

    table = tmp_path / "hsm-keys.json"
    table.write_bytes(msgspec.json.encode(sandbox.hsm_key_table()))
    hsm = f'[security.module]\nkind = "hsm"\nendpoints = ["127.0.0.1:1"]\nkey_table = "{table}"\n'

    def configured(devices: str) -> str:
        text = make_config_text().replace(f'{OTHER} = "{OTHER_DEVICE.lower()}"', devices)
        if module == "hsm":
            start = text.index("[security.module]")
            text = text[:start] + hsm + text[text.index("\n[[security.merchants]]", start):]
        return text

    def loads(text: str) -> config_mod.Config:
        return config_mod.loads(text, "t.toml")

    preflight._security(loads(configured(f'{OTHER} = "{OTHER_DEVICE}"')))  # TDES BDK, 20-digit devices
    with pytest.raises(config_mod.ConfigError) as e:  # AES devices (an entry's are all one kind) under it
        preflight._security(loads(configured(f'{OTHER} = ["123456789012345600000000", "123456789012345700000000"]')
                                  .replace(BOUND_DEVICE, "123456789012345800000000")))
    assert str(e.value) == ("t.toml: device 123456789012345800000000 has 24 hex digits: the KSNs of tdes BDK "
                            f"'demo-bdk-tdes' have 20 - at `$.security.merchants[0].terminals[3].dukpt_devices.{BOUND}`")
