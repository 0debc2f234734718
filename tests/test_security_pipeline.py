"""Terminal security in the request pipeline (spec section 8) on the service harness.

The switch runs with the sandbox's software module (public keys, spec 7) and
the DEMOSEC merchant; acquirers are the fakes of ``tests/test_service.py``.
Terminals are played with ``switch.security.terminal`` and the spec 7 demo
keys; the acquirer's side decrypts what it got with the sandbox ZPKs.
"""
from __future__ import annotations

import asyncio
import logging
import re

import pytest

from native.iso8583 import build_tlv48, dialect, parse_tlv48
from switch import config as config_mod
from switch.core.codecs import listener_codec
from switch.core.acquirer import Result
from switch.io.service import Switch
from switch.security import pinblock, sandbox, terminal
from switch.security.ciphers import tdes_encrypt, xor
from switch.security.mac import terminal_mac
from tests import test_service as ts

TERM = dialect("terminal-87")
MERCHANT = "DEMOSEC00000001"
TDES_TID, AES_TID, DUKPT_TID = "SEC00001", "SEC00150", "SEC00250"
TMK_TDES = bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
TMK_AES = bytes.fromhex(sandbox.KEYS["demo-tmk-aes"][2])
BDK = bytes.fromhex(sandbox.KEYS["demo-bdk-tdes"][2])
KSN = "FFFF9876543210E00005"
VISA = ts.VISA  # bank-a
MASTERCARD = ts.MASTERCARD  # bank-a, then bank-b
T7 = ts.T7

EXTRA = """
[[merchants]]
id = "DEMOSEC00000001"
terminals = ["SEC00001-SEC00299"]
"""


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


SECURITY = f"""
[security.module]
kind = "software"
key_store = "{sandbox.STORE}"
master_key_file = "{sandbox.MASTER_KEY_FILE}"

[[security.merchants]]
merchant = "DEMOSEC00000001"
policy = "mac+pin"
[[security.merchants.terminals]]
terminals = "SEC00001-SEC00099"
tmk = "demo-tmk-tdes"
pin_formats = [0, 3]
[[security.merchants.terminals]]
terminals = "SEC00100-SEC00199"
tmk = "demo-tmk-aes"
pin_formats = [4]
[[security.merchants.terminals]]
terminals = "SEC00200-SEC00299"
bdk = "demo-bdk-tdes"

[[security.acquirers]]
acquirer = "bank-a"
zpk = "zpk-bank-a"
[[security.acquirers]]
acquirer = "bank-b"
zpk = "zpk-bank-b"
"""


def make_config() -> config_mod.Config:
    # The sandbox's key store (switch.security.sandbox_only).
    text = "sandbox = true\n" + ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + EXTRA + SECURITY
    return config_mod.loads(text, "test_security_pipeline.toml")


def run(scenario, acquirers=None, cfg: config_mod.Config | None = None):
    """``scenario(sw)`` on a started switch (``cfg``: this file's configuration, unless given)."""
    acquirers = acquirers if acquirers is not None else ts.fakes()

    async def main():
        sw = Switch(cfg if cfg is not None else make_config(), acquirers=acquirers)
        try:
            await sw.start()
            return await scenario(sw)
        finally:
            await asyncio.wait_for(sw.close(), ts.WAIT)

    return asyncio.run(main())


def fields(tid=TDES_TID, *, stan="000001", pan=VISA, amount="000000002500", **extra) -> dict:
    msg = {"mti": "0200", 2: pan, 3: "000000", 4: amount, 7: T7, 11: stan, 12: "153000", 13: "0612",
           22: "051", 41: tid, 42: MERCHANT, 49: "978"}
    msg.update({int(k.lstrip("f")): v for k, v in extra.items()})
    return msg


async def sign_on(sw, tid, code="101", tmk=TMK_TDES, algorithm="tdes", stan="000900"):
    out = await sw.handle(TERM.encode({"mti": "0800", 7: T7, 11: stan, 41: tid, 70: code}))
    resp = TERM.decode(out)
    assert (resp.mti, resp[39]) == ("0810", "00")
    return terminal.session_keys(tmk, algorithm, parse_tlv48(resp[48]))


def pin_of(request, acquirer="bank-a"):
    """What the acquirer finds in field 52 under its own ZPK: (format, PIN)."""
    return pinblock.decipher(bytes.fromhex(sandbox.ZPKS[acquirer]), "tdes", request.pin_block, request.pan)


# -- dispatch -------------------------------------------------------------------------


def test_a_request_without_a_policy_runs_in_the_engines_own_generator_s8():
    """dispatch returns the generator that answers: the MAC check's for a merchant with a
    policy, else the engine's, without one more generator for its commands to pass through."""
    from switch.core.engine import Engine
    from switch.core.security import TerminalSecurity

    engine = Engine(make_config(), key=bytes(32))
    cases = ((ts.TID, ts.MERCHANT, Engine._dispatch), (TDES_TID, MERCHANT, TerminalSecurity.guarded))
    for tid, mid, answering in cases:
        body = TERM.encode(fields(tid, f42=mid))
        gen = engine.security.dispatch(engine, TERM.decode(body), "0200", TERM, body)
        assert gen.gi_code is answering.__code__
        gen.close()


# -- key exchange ---------------------------------------------------------------------


@pytest.mark.parametrize("tid, tmk, algorithm", [(TDES_TID, TMK_TDES, "tdes"), (AES_TID, TMK_AES, "aes")],
                         ids=["tdes", "aes"])
def test_0800_101_answers_session_keys_under_the_tmk_with_check_values_s8(tid, tmk, algorithm):
    async def scenario(sw):
        tak, tpk = await sign_on(sw, tid, tmk=tmk, algorithm=algorithm)  # checks CA / CP
        assert tak != tpk and len(tak) == len(tpk) == 16
        again = await sign_on(sw, tid, tmk=tmk, algorithm=algorithm, stan="000901")
        assert again != (tak, tpk)  # new keys each time
        assert await ts.record(sw, "000900", tid) is None  # network messages are not journaled

    run(scenario)


def test_sign_on_gives_keys_only_to_a_terminal_without_them_s8():
    async def scenario(sw):
        await sign_on(sw, TDES_TID, code="001")  # none yet: keys with the 0810
        resp = await ts.call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000902", 41: TDES_TID, 70: "001"}))
        assert resp[39] == "00" and 48 not in resp

    run(scenario)


@pytest.mark.parametrize("tid, code", [("TERM0001", "12"), (DUKPT_TID, "12"), ("SEC00999", "03"), ("NOPE0001", "03")])
def test_0800_101_without_a_tmk_answers_12_and_unknown_terminals_03_s8(tid, code):
    async def scenario(sw):
        resp = await ts.call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000001", 41: tid, 70: "101"}))
        assert (resp.mti, resp[39]) == ("0810", code) and 48 not in resp

    run(scenario)


# -- MAC and PIN end to end -------------------------------------------------------------


def test_aes_terminal_macs_with_aes_cmac_s8():
    # Terminal-87 carries field 52 as b8 (spec 2), so a format 4 block (16
    # bytes) has no field yet: AES terminals are tried with the MAC only.
    async def scenario(sw):
        tak, tpk = await sign_on(sw, AES_TID, tmk=TMK_AES, algorithm="aes")
        out = await sw.handle(terminal.encode_signed(TERM, fields(AES_TID), tak, "aes"))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, tak, "aes")
        assert not terminal.verify(out, tak[::-1], "aes")

    run(scenario)


@pytest.mark.parametrize("tid, tmk, algorithm", [(TDES_TID, TMK_TDES, "tdes")], ids=["tdes"])
def test_maced_pin_purchase_reaches_the_acquirer_under_its_zpk_and_the_answer_is_maced_s8(tid, tmk, algorithm):
    async def scenario(sw):
        tak, tpk = await sign_on(sw, tid, tmk=tmk, algorithm=algorithm)
        block = terminal.pin_block("1234", VISA, tpk, algorithm)
        body = terminal.encode_signed(TERM, fields(tid, f52=block), tak, algorithm)
        out = await sw.handle(body)
        resp = TERM.decode(out)
        assert resp[39] == "00" and 64 in resp and 52 not in resp
        assert terminal.verify(out, tak, algorithm)
        (req, _), = sw.acquirers["bank-a"].authorized
        assert req.pin_block is None  # not kept past the call
        rec = await ts.record(sw, "000001", tid)
        assert block not in (rec.response or b"")
        # A retransmission gets the journaled answer, MACed again.
        again = await sw.handle(body)
        assert again == out and len(sw.acquirers["bank-a"].authorized) == 1
        # The same 41, 11 and 7 with a wrong MAC is no retransmission: A0, never the journaled approval.
        forged = TERM.decode(await sw.handle(_tamper(body)))
        assert (forged[39], 38 in forged, 64 in forged) == ("A0", False, False)

    seen = []

    class Recording(ts.FakeAcquirer):
        async def authorize(self, request, timeout):
            seen.append(pin_of(request))  # the PIN block while the acquirer has it
            return await super().authorize(request, timeout)

    run(scenario, ts.fakes(**{"bank-a": Recording("bank-a")}))
    assert seen == [(0, "1234")]


def test_dukpt_terminal_macs_and_encrypts_with_its_transaction_keys_s8():
    seen = []

    class Recording(ts.FakeAcquirer):
        async def authorize(self, request, timeout):
            seen.append(pin_of(request))
            return await super().authorize(request, timeout)

    async def scenario(sw):
        mac_key, pin_key, algorithm = terminal.dukpt_keys(BDK, KSN)
        block = pinblock.encipher(pin_key, algorithm, 0, "1234", VISA)
        body = terminal.encode_signed(TERM, fields(DUKPT_TID, f52=block, f48="KS020" + KSN), mac_key, algorithm)
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "00"
        assert terminal.verify(out, mac_key, algorithm)  # section 8: the answer's MAC is under the same key
        # Without its KSN the request cannot be authenticated.
        bare = terminal.encode_signed(TERM, fields(DUKPT_TID, stan="000002"), mac_key, algorithm)
        assert (await ts.call(sw, bare))[39] == "A0"

    run(scenario, ts.fakes(**{"bank-a": Recording("bank-a")}))
    assert seen == [(0, "1234")]


def test_pin_goes_to_each_acquirer_of_a_fallback_under_its_own_zpk_s8():
    seen = []

    class Recording(ts.FakeAcquirer):
        async def authorize(self, request, timeout):
            seen.append((self.name, pin_of(request, self.name)))
            return await super().authorize(request, timeout)

    async def scenario(sw):
        tak, tpk = await sign_on(sw, TDES_TID)
        block = terminal.pin_block("1234", MASTERCARD, tpk, "tdes")
        body = terminal.encode_signed(TERM, fields(pan=MASTERCARD, f52=block), tak, "tdes")
        assert (await ts.call(sw, body))[39] == "00"

    bank_a = Recording("bank-a", answer=Result(response_code="91"))
    run(scenario, ts.fakes(**{"bank-a": bank_a, "bank-b": Recording("bank-b")}))
    assert seen == [("bank-a", (0, "1234")), ("bank-b", (0, "1234"))]


# -- refusals ----------------------------------------------------------------------------


def _tamper(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])


# Each case's reason on payswitch_terminal_mac_failures_total (switch.metrics.TERMINAL_MAC_FAILURES).
MAC_FAILURE = {"wrong MAC": "wrong", "no MAC": "missing", "changed amount": "wrong", "not signed on": "no_key",
               "MAC of another key": "wrong", "fields 64 and 128": "malformed"}


def mac_failures(sw) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in sw.metrics.registry.collect()
            if m.name == "payswitch_terminal_mac_failures" for s in m.samples if s.name.endswith("_total")}


@pytest.mark.parametrize("case", list(MAC_FAILURE))
def test_a_request_failing_mac_verification_answers_a0_and_goes_no_further_s8(case):
    async def scenario(sw):
        # every reason at 0 from the start: the alert's increase() sees the first failure
        assert mac_failures(sw) == dict.fromkeys(("missing", "wrong", "malformed", "no_key", "ksn", "replay"), 0.0)
        tak, tpk = (await sign_on(sw, TDES_TID)) if case != "not signed on" else (bytes(range(16)), None)
        body = terminal.encode_signed(TERM, fields(), tak, "tdes")
        if case == "wrong MAC":
            body = _tamper(body)
        elif case == "no MAC":
            body = TERM.encode(fields())
        elif case == "changed amount":
            body = body.replace(b"000000002500", b"000000009900")
        elif case == "MAC of another key":
            body = terminal.encode_signed(TERM, fields(), tpk, "tdes")
        elif case == "fields 64 and 128":  # the MAC in 128 is right, but section 8 allows one MAC field
            body = terminal.sign(TERM.encode(fields(f64=bytes(8), f100="12345", f128=bytes(8))), tak, "tdes")
            assert TERM.decode(body)[64] == bytes(8) and terminal.verify(body, tak, "tdes")
        out = await sw.handle(body)
        resp = TERM.decode(out)
        assert (resp.mti, resp[39]) == ("0210", "A0")
        assert 64 not in resp and 128 not in resp  # answered unMACed
        assert await ts.record(sw, "000001") is None and await ts.record(sw, "000001", TDES_TID) is None
        assert all(a.authorized == [] for a in sw.acquirers.values())
        assert {reason: n for reason, n in mac_failures(sw).items() if n} == {MAC_FAILURE[case]: 1.0}

    run(scenario)


@pytest.mark.parametrize("case", ["not a PIN block", "format 1", "AES terminal, 8 bytes", "under the TAK"])
def test_a_pin_block_that_does_not_decrypt_to_an_accepted_format_answers_55_s8(case):
    async def scenario(sw):
        tid, tmk, algorithm = (AES_TID, TMK_AES, "aes") if "AES" in case else (TDES_TID, TMK_TDES, "tdes")
        tak, tpk = await sign_on(sw, tid, tmk=tmk, algorithm=algorithm)
        if case == "not a PIN block":
            block = bytes(8)
        elif case == "under the TAK":
            block = terminal.pin_block("1234", VISA, tak, algorithm)
        elif case == "format 1":  # ISO 9564 format 1: never accepted (spec 8: formats 0 and 4)
            block = tdes_encrypt(tpk, bytes.fromhex("1412348A5C3E7B90"))
        else:
            block = bytes(range(8))
        body = terminal.encode_signed(TERM, fields(tid, f52=block), tak, algorithm)
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "55" and terminal.verify(out, tak, algorithm)
        assert sw.acquirers["bank-a"].authorized == []
        rec = await ts.record(sw, "000001", tid)
        assert rec.response_code == "55"

    run(scenario)


@pytest.mark.parametrize("tid, tmk, algorithm", [(TDES_TID, TMK_TDES, "tdes"), (AES_TID, TMK_AES, "aes")])
def test_the_log_of_an_unusable_pin_block_names_the_key_and_formats_never_the_fault_s8(tid, tmk, algorithm, caplog):
    """PCI PIN security: which check a decrypted block failed is an oracle to whoever can send blocks and
    read logs.  Every fault gives the same line (terminal, RRN, acquirer, key name, formats) and 55."""
    faults = {  # clear PIN fields, before the PAN (formats 0, 3) or as format 4's first half
        "tdes": ["021234FFFFFFFFFF", "04123AFFFFFFFFFF", "041234FFFFFFFFFE", "141234FFFFFFFFFF",
                 "541234FFFFFFFFFF", "3D1234AAAAAAAAAA"],
        "aes": ["421234AAAAAAAAAA", "44123AAAAAAAAAAA", "441234AAAAAAAAAB", "041234FFFFFFFFFF"],
    }[algorithm]

    async def scenario(sw):
        tak, tpk = await sign_on(sw, tid, tmk=tmk, algorithm=algorithm)
        for i, clear in enumerate(faults):
            field = bytes.fromhex(clear)
            if algorithm == "tdes":
                if field[0] >> 4 in (0, 3):
                    field = xor(field, pinblock.pan_field(VISA))
                extra = {"f52": tdes_encrypt(tpk, field)}
            else:
                block = pinblock.encipher_format4(tpk, field + bytes(8), VISA)
                extra = {"f48": build_tlv48({"PB": block.hex().upper()})}
            body = terminal.encode_signed(TERM, fields(tid, stan=f"{i + 1:06d}", **extra), tak, algorithm)
            out = await sw.handle(body)
            assert TERM.decode(out)[39] == "55"
        # A block of the wrong length for the key is public (it is what was sent): said.
        wrong = {"f48": build_tlv48({"PB": "00" * 16})} if algorithm == "tdes" else {"f52": bytes(8)}
        out = await sw.handle(terminal.encode_signed(TERM, fields(tid, stan="000099", **wrong), tak, algorithm))
        assert TERM.decode(out)[39] == "55"
        assert sw.acquirers["bank-a"].authorized == []

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if "PIN not sent" in r.getMessage()]
    assert len(lines) == len(faults) + 1 and lines.pop().endswith("got 16)" if algorithm == "tdes" else "got 8)")
    formats = "0/3" if algorithm == "tdes" else "4"
    assert {re.sub(r"rrn \w+", "rrn R", line) for line in lines} == {
        f"terminal {tid} rrn R: PIN not sent to bank-a: 55 (PIN block not usable under key {tid}.tpk, "
        f"format {formats} accepted)"}
    for word in ("nibble", "fill", "digit", "length", "format 1", "format 5", "decimal"):
        assert word not in caplog.text


def test_a_pin_block_from_a_terminal_without_a_pin_key_answers_55_and_is_never_forwarded_s8():
    async def scenario(sw):
        resp = await ts.call(sw, ts.request(f52=b"\x01\x23\x45\x67\x89\xab\xcd\xef"))
        assert resp[39] == "55"
        assert sw.acquirers["bank-a"].authorized == []
        # Without field 52 the demo terminal pays as before (policy none: no MAC).
        assert (await ts.call(sw, ts.request(stan="000002")))[39] == "00"

    run(scenario)


def test_a_pin_block_on_a_city_card_payment_answers_55_and_never_reaches_the_centre_s8(caplog):
    from switch.core.acquirer import Request
    from switch.core.security import TerminalSecurity

    city_card = "8800123456789015"
    block = terminal.pin_block("1234", city_card, bytes(16), "tdes")
    request = Request(txn_id=1, kind="citycard", mti="0200", processing_code="000000", amount=100, currency="978",
                      terminal_id=TDES_TID, merchant_id=MERCHANT, stan="000001", transmission_time=T7,
                      rrn="000000000001", pan=city_card, pin_block=block)
    source = TerminalSecurity(make_config().security).pin({11: "000001", 7: T7, 41: TDES_TID}, request)
    give = source.give(request, "citycard", request.rrn)
    with caplog.at_level(logging.INFO, logger="payswitch"), pytest.raises(StopIteration) as done:
        next(give)  # refused before the security module is asked anything
    assert done.value.value == Result(response_code="55")  # the terminal's mistake, not our configuration's (96)
    assert request.pin_block is None
    assert "ERROR" not in caplog.text and "city-card" in caplog.text and block.hex() not in caplog.text.lower()


def test_a_pin_translation_the_module_cannot_make_answers_96_journaled_and_sent_nowhere_s8(caplog):
    from switch.security.module import ModuleUnavailable

    async def scenario(sw):
        tak, tpk = await sign_on(sw, TDES_TID)

        async def unavailable(*args):
            raise ModuleUnavailable("HSM did not answer CA within 2.0 s")

        sw.security_module.translate_pin = unavailable
        body = terminal.encode_signed(TERM, fields(f52=terminal.pin_block("1234", VISA, tpk, "tdes")), tak, "tdes")
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "96" and terminal.verify(out, tak, "tdes")
        assert sw.acquirers["bank-a"].authorized == []
        rec = await ts.record(sw, "000001", TDES_TID)
        assert rec.response_code == "96"  # journaled as answered: nothing to reverse, a retransmission gets it
        assert (await sw.handle(body)) == out and sw.acquirers["bank-a"].reversed == []

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


@pytest.mark.parametrize("mti", ["0200", "0800"])
def test_a_request_the_module_cannot_verify_answers_96_unjournaled_without_a_traceback_s8(mti, caplog):
    from switch.security.module import ModuleUnavailable

    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)

        async def unavailable(*args):
            raise ModuleUnavailable("HSM did not answer")

        sw.security_module.verify_mac = unavailable
        doc = fields() if mti == "0200" else {"mti": "0800", 7: T7, 11: "000001", 41: TDES_TID, 70: "301"}
        resp = TERM.decode(await sw.handle(terminal.encode_signed(TERM, doc, tak, "tdes")))
        assert (resp[39], 64 in resp) == ("96", False)
        assert await ts.record(sw, "000001", TDES_TID) is None and sw.acquirers["bank-a"].authorized == []

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "cannot check its MAC: HSM did not answer" in caplog.text
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text


# -- the listener's own wire bytes -------------------------------------------------------


def test_mac_of_an_iso87_ascii_request_is_over_its_wire_bytes_s8():
    codec = listener_codec("iso87-ascii")

    async def scenario(sw):
        tak, tpk = await sign_on(sw, TDES_TID)
        block = terminal.pin_block("1234", VISA, tpk, "tdes")
        doc = {**fields(f52=block), 64: bytes(8)}
        wire = codec.encode(doc)[:-16]
        body = wire + terminal_mac(tak, wire, "tdes").hex().upper().encode()
        out = await sw.handle(body, codec)
        assert out[-16:] == terminal_mac(tak, out[:-16], "tdes").hex().upper().encode()
        assert codec.decode(out)[39] == "00"
        # The MAC of the rebuilt (binary) message is not the MAC of what was sent.
        assert (await sw.handle(_tamper(body.replace(b"000001", b"000002", 1)), codec))[-16:] != out[-16:]
        assert codec.decode(await sw.handle(codec.encode({**fields(stan="000003", f52=block), 64: bytes(8)}),
                                            codec))[39] == "A0"

    run(scenario)


def test_an_iso87_ascii_mac_in_lower_case_hex_verifies_s8():
    """Section 8.1: on iso87-ascii the MAC is 16 hex digits; Python's ``bytes.hex()`` writes them in lower case."""
    codec = listener_codec("iso87-ascii")

    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        for stan, case, code in (("000001", str.lower, "00"), ("000002", str.upper, "00")):
            wire = codec.encode({**fields(stan=stan), 64: bytes(8)})[:-16]
            body = wire + case(terminal_mac(tak, wire, "tdes").hex()).encode()
            out = await sw.handle(body, codec)
            assert codec.decode(out)[39] == code, case
            assert out[-16:] == terminal_mac(tak, out[:-16], "tdes").hex().upper().encode()
        wire = codec.encode({**fields(stan="000003"), 64: bytes(8)})[:-16]
        wrong = wire + terminal_mac(bytes(16), wire, "tdes").hex().lower().encode()
        assert codec.decode(await sw.handle(wrong, codec))[39] == "A0"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario)


# -- start-up checks ---------------------------------------------------------------------


@pytest.mark.parametrize("old, new, path, words", [
    ('zpk = "zpk-bank-b"', 'zpk = "zpk-bank-z"', "security.acquirers[1].zpk", "no key 'zpk-bank-z'"),
    ('tmk = "demo-tmk-aes"', 'tmk = "demo-tmk-none"', "security.merchants[0].terminals[1]", "no key 'demo-tmk-none'"),
    (f'master_key_file = "{sandbox.MASTER_KEY_FILE}"', 'master_key_env = "TEST_WRONG_MASTER"', "security.module",
     "wrong master key"),
    (f'key_store = "{sandbox.STORE}"', 'key_store = "/nonexistent/keys.json"', "security.module.key_store",
     "cannot read key store"),
])
def test_preflight_opens_the_key_store_and_finds_every_named_key(monkeypatch, old, new, path, words):
    from switch import preflight

    monkeypatch.setenv("TEST_WRONG_MASTER", "00" * 32)
    preflight._security(make_config())  # the sandbox keys: all there
    text = "sandbox = true\n" + ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + EXTRA + SECURITY
    assert old in text
    cfg = config_mod.loads(text.replace(old, new), "t.toml")
    with pytest.raises(config_mod.ConfigError) as e:
        preflight._security(cfg)
    assert str(e.value).endswith(f"- at `$.{path}`") and words in str(e.value), str(e.value)


# -- payswitch send ------------------------------------------------------------------------


@pytest.mark.parametrize("argv, env, words", [
    (["--pin-env", "TEST_PIN"], {"TEST_PIN": "1234"}, "a PIN needs the terminal's keys"),
    (["--sandbox-keys", "--pin-env", "TEST_PIN"], {"TEST_PIN": "12a4"}, "a PIN is 4 to 12 digits"),
    (["--tmk-env", "TEST_TMK"], {}, "environment variable TEST_TMK (TMK) is not set"),
    (["--tmk-env", "TEST_TMK"], {"TEST_TMK": "0123"}, "TMK must be 16, 24 or 32 bytes"),
    (["--sandbox-keys", "--tmk-env", "TEST_TMK"], {"TEST_TMK": "00" * 16}, "--sandbox-keys or given keys"),
    (["--terminal", "DEMO0001", "--sandbox-keys"], {}, "DEMO0001 has no sandbox keys"),
])
def test_send_takes_keys_and_pins_only_from_the_environment_or_files(capsys, monkeypatch, argv, env, words):
    from switch import cli

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    base = ["send", "purchase", "--terminal", TDES_TID, "--pan", VISA, "--amount", "100", "--port", "9"]
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert all(v not in err for v in env.values())
