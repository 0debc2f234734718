"""Terminal keys that survive, rotation a stranger cannot force, DUKPT replays, AES PIN blocks (spec 8).

On the service harness of ``tests/test_security_pipeline.py`` (sandbox
software module, DEMOSEC terminals, fake acquirers), with the journal in a
file so that a second switch (a restart, or another process sharing it) can
open the same one.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile

import pytest

from native.iso8583 import build_tlv48, parse_tlv48
from switch import config as config_mod
from switch.io.service import Switch, WorkerRole
from switch.journal.process import ProcessJournal, start_shared_writer
from switch.journal.sqlite import SqliteJournal
from switch.security import dukpt, pinblock, sandbox, terminal
from tests import test_security_pipeline as sp
from tests import test_service as ts

TERM, MERCHANT, VISA, T7 = sp.TERM, sp.MERCHANT, sp.VISA, sp.T7
TDES_TID, AES_TID, DUKPT_TID = sp.TDES_TID, sp.AES_TID, sp.DUKPT_TID
BDK = sp.BDK


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


def make_config(path) -> config_mod.Config:
    # The sandbox's key store (switch.security.sandbox_only).
    text = "sandbox = true\n" + ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + sp.EXTRA + sp.SECURITY
    assert 'url = "sqlite://:memory:"' in text
    text = text.replace('url = "sqlite://:memory:"', f'url = "sqlite://{path}"')
    return config_mod.loads(text, "test_security_termkeys.toml")


def run(path, *scenarios, acquirers=None):
    """Each scenario on a switch of its own, one after the other (a restart between), on one journal file."""
    results = []

    async def main():
        for scenario in scenarios:
            sw = Switch(make_config(path), acquirers=acquirers() if acquirers else ts.fakes())
            try:
                await sw.start()
                results.append(await scenario(sw))
            finally:
                await asyncio.wait_for(sw.close(), ts.WAIT)

    asyncio.run(main())
    return results


def purchase(tid, tak, algorithm, stan, **extra):
    return terminal.encode_signed(TERM, sp.fields(tid, stan=stan, **extra), tak, algorithm)


async def key_exchange(sw, tid, stan, tmk=sp.TMK_TDES, algorithm="tdes"):
    return await sp.sign_on(sw, tid, tmk=tmk, algorithm=algorithm, stan=stan)


# -- 1. session keys survive a restart ---------------------------------------------------


@pytest.mark.parametrize("use_first", [True, False], ids=["current", "pending"])
def test_session_keys_survive_a_restart_and_never_reach_the_journal_in_clear(tmp_path, use_first, caplog):
    path = tmp_path / "journal.sqlite"
    keys = {}

    async def before(sw):
        keys["tak"], keys["tpk"] = await key_exchange(sw, TDES_TID, "000900")
        if use_first:  # promoted to current before the restart; otherwise still pending
            assert (await ts.call(sw, purchase(TDES_TID, keys["tak"], "tdes", "000001")))[39] == "00"

    async def after(sw):
        block = terminal.pin_block("1234", VISA, keys["tpk"], "tdes")
        out = await sw.handle(purchase(TDES_TID, keys["tak"], "tdes", "000002", f52=block))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, keys["tak"], "tdes")
        (req, _), = sw.acquirers["bank-a"].authorized
        # A sign-on now gives no keys: the terminal has them (spec 8).
        signon = await ts.call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000903", 41: TDES_TID, 70: "001"}))
        assert signon[39] == "00" and 48 not in signon

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(path, before, after)
    assert "session keys of 1 key set(s) restored from the journal" in caplog.text  # loaded at start-up
    assert keys["tak"].hex().upper() not in caplog.text.upper()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT terminal_id, slot, kind, blob FROM terminal_key").fetchall()
    assert sorted(r[:3] for r in rows) == [(TDES_TID, "current", "tak"), (TDES_TID, "current", "tpk")]
    dump = "\n".join(conn.iterdump()).upper()
    assert keys["tak"].hex().upper() not in dump and keys["tpk"].hex().upper() not in dump


def test_keys_that_no_longer_open_are_logged_and_the_terminal_signs_on_again(tmp_path, caplog):
    path = tmp_path / "journal.sqlite"

    async def before(sw):
        return await key_exchange(sw, TDES_TID, "000900")

    [(tak, _)] = run(path, before)
    conn = sqlite3.connect(path)
    # The first byte changed, whatever it was (a sealed blob starts with random bytes).
    conn.execute("UPDATE terminal_key SET blob = (CASE WHEN substr(blob, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END)"
                 " || substr(blob, 3) WHERE kind = 'tak'")
    conn.commit()
    conn.close()

    async def after(sw):
        resp = await ts.call(sw, purchase(TDES_TID, tak, "tdes", "000001"))
        assert resp[39] == "A0"
        again, _ = await key_exchange(sw, TDES_TID, "000901")
        assert (await ts.call(sw, purchase(TDES_TID, again, "tdes", "000002")))[39] == "00"

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(path, after)
    text = caplog.text
    assert "SEC00001: pending session keys not restored" in text and "must sign on again" in text
    assert tak.hex().upper() not in text.upper()


# -- 2. a stranger's 0800/101 cannot lock the terminal out -------------------------------


def test_a_strangers_key_exchange_leaves_the_current_keys_valid_until_the_new_ones_are_used(tmp_path):
    async def scenario(sw):
        old, _ = await key_exchange(sw, TDES_TID, "000900")
        assert (await ts.call(sw, purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"  # current now
        # Anyone may send 0800/101 with the terminal's ID (it carries no MAC) ...
        await ts.call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000901", 41: TDES_TID, 70: "101"}))
        # ... and the terminal, which never got those keys, goes on with its own.
        out = await sw.handle(purchase(TDES_TID, old, "tdes", "000002"))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, old, "tdes")
        # The terminal itself asks: the pending set is replaced (one per terminal); the old keys still work ...
        new, new_tpk = await key_exchange(sw, TDES_TID, "000902")
        assert (await ts.call(sw, purchase(TDES_TID, old, "tdes", "000003")))[39] == "00"
        # ... until a request verifies under the new TAK: then the new set is current, the old one gone.
        block = terminal.pin_block("1234", VISA, new_tpk, "tdes")
        out = await sw.handle(purchase(TDES_TID, new, "tdes", "000004", f52=block))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, new, "tdes")
        assert seen[-1][0] == (0, "1234")  # and its PIN went under the new TPK
        assert (await ts.call(sw, purchase(TDES_TID, old, "tdes", "000005")))[39] == "A0"
        assert (await ts.call(sw, purchase(TDES_TID, new, "tdes", "000006")))[39] == "00"

    seen = []
    run(tmp_path / "journal.sqlite", scenario, acquirers=lambda: ts.fakes(**{"bank-a": Recording("bank-a", seen)}))


def test_a_key_exchange_under_the_key_of_a_payment_is_94_and_issues_no_keys(tmp_path):
    # Spec 6: the key 41 + 11 + 7 is the purchase's; an 0800/101 reusing it is other content.
    async def scenario(sw):
        tak, _ = await key_exchange(sw, TDES_TID, "000900")
        assert (await ts.call(sw, purchase(TDES_TID, tak, "tdes", "000001")))[39] == "00"
        out = TERM.decode(await sw.handle(TERM.encode({"mti": "0800", 7: T7, 11: "000001", 41: TDES_TID, 70: "101"})))
        assert (out.mti, out[39]) == ("0810", "94") and 48 not in out
        # no new pending set was issued: the keys in use stay, and a fresh 101 still gets keys
        assert (await ts.call(sw, purchase(TDES_TID, tak, "tdes", "000002")))[39] == "00"
        await key_exchange(sw, TDES_TID, "000901")

    run(tmp_path / "journal.sqlite", scenario)


def test_only_the_latest_pending_set_is_kept(tmp_path):
    async def scenario(sw):
        first, _ = await key_exchange(sw, TDES_TID, "000900")
        second, _ = await key_exchange(sw, TDES_TID, "000901")
        assert (await ts.call(sw, purchase(TDES_TID, first, "tdes", "000001")))[39] == "A0"
        assert (await ts.call(sw, purchase(TDES_TID, second, "tdes", "000002")))[39] == "00"

    run(tmp_path / "journal.sqlite", scenario)


@pytest.mark.parametrize("right", [True, False], ids=["right MAC", "wrong MAC"])
def test_a_key_exchange_that_carries_a_mac_is_verified_under_the_current_key(tmp_path, right):
    async def scenario(sw):
        old, _ = await key_exchange(sw, TDES_TID, "000900")
        assert (await ts.call(sw, purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"
        signed = terminal.encode_signed(TERM, {"mti": "0800", 7: T7, 11: "000901", 41: TDES_TID, 70: "101"},
                                        old if right else old[::-1], "tdes")
        out = await sw.handle(signed)
        resp = TERM.decode(out)
        if not right:
            assert (resp.mti, resp[39]) == ("0810", "A0") and 48 not in resp and 64 not in resp
            assert (await ts.call(sw, purchase(TDES_TID, old, "tdes", "000002")))[39] == "00"
            return
        assert resp[39] == "00" and terminal.verify(out, old, "tdes")  # answered MACed, with new keys
        new, _ = terminal.session_keys(sp.TMK_TDES, "tdes", parse_tlv48(resp[48]))
        assert (await ts.call(sw, purchase(TDES_TID, new, "tdes", "000002")))[39] == "00"

    run(tmp_path / "journal.sqlite", scenario)


def two_workers(tmp_path, scenario, acquirers_a=None) -> None:
    """Run ``await scenario(a, b)`` on two started switches that share one journal writer
    (serve --workers: worker a recovers for both); close them, then the writer."""
    path = tmp_path / "journal.sqlite"
    writer, sock = start_shared_writer(tempfile.mkdtemp(dir=tmp_path))
    control = ProcessJournal(f"sqlite://{path}", hmac_key=bytes.fromhex(ts.KEY_HEX), connect=sock, control=True)

    async def main():
        a = Switch(make_config(path), acquirers=acquirers_a or ts.fakes(), worker=WorkerRole(0, 2, sock, recover_all=True))
        b = Switch(make_config(path), acquirers=ts.fakes(), worker=WorkerRole(1, 2, sock, recover_all=False))
        await a.start()
        await b.start()
        try:
            await scenario(a, b)
        finally:
            await asyncio.wait_for(a.close(), ts.WAIT)
            await asyncio.wait_for(b.close(), ts.WAIT)

    try:
        asyncio.run(main())
    finally:
        control.close()
        writer.wait(ts.WAIT)


def test_two_switches_sharing_a_journal_agree_on_keys_and_counters(tmp_path):
    """SO_REUSEPORT workers on one shared journal writer (serve --workers): keys given by one
    process work on the other; a promotion and a KSN counter raised by one hold on the other."""
    async def scenario(a, b):
        old, _ = await key_exchange(a, TDES_TID, "000900")
        assert (await ts.call(b, purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"  # promoted by b
        new, _ = await key_exchange(b, TDES_TID, "000901")
        assert (await ts.call(a, purchase(TDES_TID, old, "tdes", "000002")))[39] == "00"
        assert (await ts.call(a, purchase(TDES_TID, new, "tdes", "000003")))[39] == "00"  # promoted by a
        assert (await ts.call(b, purchase(TDES_TID, new, "tdes", "000004")))[39] == "00"
        ksn = "FFFF9876543210E00003"
        assert (await ts.call(a, dukpt_purchase(ksn, "000005")))[39] == "00"
        assert (await ts.call(b, dukpt_purchase(ksn, "000006")))[39] == "A0"

    two_workers(tmp_path, scenario)


# -- 3. DUKPT replays ----------------------------------------------------------------------


def dukpt_purchase(ksn, stan, pin=None, tid=DUKPT_TID):
    mac_key, pin_key, algorithm = terminal.dukpt_keys(BDK, ksn)
    extra = {"f48": build_tlv48({"KS": ksn})}
    if pin is not None:
        extra["f52"] = pinblock.encipher(pin_key, algorithm, 0, pin, VISA)
    return terminal.encode_signed(TERM, sp.fields(tid, stan=stan, **extra), mac_key, algorithm)


def test_a_replayed_ksn_answers_a0_also_after_a_restart_but_a_retransmission_gets_its_answer(tmp_path):
    path = tmp_path / "journal.sqlite"
    first = dukpt_purchase("FFFF9876543210E00005", "000001", pin="1234")

    async def before(sw):
        out = await sw.handle(first)
        assert TERM.decode(out)[39] == "00"
        assert await sw.handle(first) == out  # a retransmission (same 41, 11, 7): the same answer
        # A new request under the same KSN, or an older one: a replay.
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00005", "000002")))[39] == "A0"
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00003", "000003")))[39] == "A0"
        # The counter goes on: fine. Another device of the same BDK keeps its own counter.
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00006", "000004")))[39] == "00"
        assert (await ts.call(sw, dukpt_purchase("FFFF1111111111E00001", "000005")))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 3
        return out

    async def after(sw):
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00006", "000006")))[39] == "A0"
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00005", "000007")))[39] == "A0"
        assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E00009", "000008")))[39] == "00"
        assert sw.acquirers["bank-a"].authorized[0][0].stan == "000008"
        return await sw.handle(first)

    answer, again = run(path, before, after)
    assert again == answer  # still a retransmission after the restart: answered from the journal
    rows = sqlite3.connect(path).execute("SELECT device, counter FROM dukpt_counter ORDER BY device").fetchall()
    assert rows == [("demo-bdk-tdes:FFFF1111111111E00000", 1), ("demo-bdk-tdes:FFFF9876543210E00000", 9)]


@pytest.mark.parametrize("ksn, why", [
    ("FFFF9876543210E007FF", "11 one-bits: X9.24-1 never uses it"),
    ("FFFF9876543210E00000", "counter zero"),
    ("FFFF9876543210F00000", "counter 2^20 (bit 21) is one bit: usable"),
])
def test_counters_a_terminal_never_uses_answer_a0(tmp_path, ksn, why):
    async def scenario(sw):
        if ksn.endswith("F00000"):
            # The highest single-bit counter; the device's next counters after it are refused as replays.
            assert (await ts.call(sw, dukpt_purchase(ksn, "000001")))[39] == "00"
            assert (await ts.call(sw, dukpt_purchase("FFFF9876543210E7FC00", "000002")))[39] == "A0"
            return
        with pytest.raises(dukpt.KsnError):
            dukpt.ksn_device(ksn)
        body = terminal.encode_signed(TERM, sp.fields(DUKPT_TID, f48=build_tlv48({"KS": ksn})), bytes(16), "tdes")
        assert (await ts.call(sw, body))[39] == "A0"
        assert sw.acquirers["bank-a"].authorized == []

    run(tmp_path / "journal.sqlite", scenario)


def test_ksn_device_and_counter():
    assert dukpt.ksn_device("FFFF9876543210E00005") == ("FFFF9876543210E00000", 5)
    assert dukpt.ksn_device("FFFF9876543210F00001") == ("FFFF9876543210E00000", (1 << 20) + 1)
    assert dukpt.ksn_device("123456789012345600000005") == ("123456789012345600000000", 5)
    with pytest.raises(dukpt.KsnError, match="16 one-bits"):
        dukpt.ksn_device("12345678901234560001FFFF")


def test_the_journal_raises_counters_and_promotes_key_sets_in_one_step(tmp_path):
    journal = SqliteJournal(str(tmp_path / "j.sqlite"), inline=True)
    try:
        def op(fut):
            return fut.result(timeout=5)

        assert op(journal.advance_ksn("bdk:D", 5)) and not op(journal.advance_ksn("bdk:D", 5))
        assert not op(journal.advance_ksn("bdk:D", 4)) and op(journal.advance_ksn("bdk:D", 6))
        with pytest.raises(ValueError):
            op(journal.advance_ksn("bdk:D", 0))
        one = (("tak", "tdes", "AAAAAA", "blob1"), ("tpk", "tdes", "BBBBBB", "blob2"))
        two = (("tak", "tdes", "CCCCCC", "blob3"), ("tpk", "tdes", "DDDDDD", "blob4"))
        op(journal.store_terminal_keys("T1", "pending", one))
        assert not op(journal.promote_terminal_keys("T1", "CCCCCC"))  # not the pending set
        assert op(journal.promote_terminal_keys("T1", "AAAAAA"))
        op(journal.store_terminal_keys("T1", "pending", two))
        assert op(journal.promote_terminal_keys("T1", "AAAAAA"))  # current already: another process did it
        assert set(op(journal.terminal_keys("T1"))) == {"current", "pending"}
        assert op(journal.promote_terminal_keys("T1", "CCCCCC"))
        assert op(journal.terminal_keys("T1")) == {"current": {"tak": two[0], "tpk": two[1]}}
        assert op(journal.all_terminal_keys()) == {"T1": {"current": {"tak": two[0], "tpk": two[1]}}}
        with pytest.raises(ValueError, match="one TAK and one TPK"):
            op(journal.store_terminal_keys("T1", "pending", one[:1]))
        with pytest.raises(ValueError, match="slot"):
            op(journal.store_terminal_keys("T1", "next", one))
    finally:
        journal.close()


# -- 4. AES terminals: a format 4 PIN block in field 48 tag PB ----------------------------


class Recording(ts.FakeAcquirer):
    def __init__(self, name, seen, **kw):
        super().__init__(name, **kw)
        self.seen = seen

    async def authorize(self, request, timeout):
        self.seen.append((sp.pin_of(request, self.name) if request.pin_block else None, dict(request.tlv)))
        return await super().authorize(request, timeout)


def test_an_aes_terminal_sends_its_format_4_block_in_tag_pb_and_the_acquirer_gets_format_0(tmp_path):
    seen = []

    async def scenario(sw):
        tak, tpk = await key_exchange(sw, AES_TID, "000900", tmk=sp.TMK_AES, algorithm="aes")
        block = terminal.pin_block("1234", VISA, tpk, "aes")
        assert len(block) == 16
        body = purchase(AES_TID, tak, "aes", "000001", f48=build_tlv48({"PB": block.hex().upper()}))
        out = await sw.handle(body)
        resp = TERM.decode(out)
        assert resp[39] == "00" and terminal.verify(out, tak, "aes") and 48 not in resp

    run(tmp_path / "journal.sqlite", scenario, acquirers=lambda: ts.fakes(**{"bank-a": Recording("bank-a", seen)}))
    assert seen == [((0, "1234"), {})]  # under bank-a's ZPK in its format; the tag itself never forwarded


@pytest.mark.parametrize("case", ["PB and field 52", "PB not hex", "PB too short", "PB from a TDES terminal",
                                  "PB under the TAK"])
def test_a_pb_tag_that_cannot_be_used_answers_55(tmp_path, case):
    seen = []

    async def scenario(sw):
        aes = "TDES" not in case
        tid, tmk, algorithm = (AES_TID, sp.TMK_AES, "aes") if aes else (TDES_TID, sp.TMK_TDES, "tdes")
        tak, tpk = await key_exchange(sw, tid, "000900", tmk=tmk, algorithm=algorithm)
        good = pinblock.encipher(tpk if aes else bytes(16), "aes", 4, "1234", VISA).hex().upper()
        extra = {}
        if case == "PB and field 52":
            extra["f52"] = bytes(8)
        elif case == "PB not hex":
            good = "Z" * 32
        elif case == "PB too short":
            good = good[:16]
        elif case == "PB under the TAK":
            good = pinblock.encipher(tak, "aes", 4, "1234", VISA).hex().upper()
        out = await sw.handle(purchase(tid, tak, algorithm, "000001", f48=build_tlv48({"PB": good}), **extra))
        assert TERM.decode(out)[39] == "55" and terminal.verify(out, tak, algorithm)

    run(tmp_path / "journal.sqlite", scenario, acquirers=lambda: ts.fakes(**{"bank-a": Recording("bank-a", seen)}))
    assert seen == []


def test_send_puts_an_aes_terminals_pin_in_tag_pb():
    from switch.client import TerminalSecurity, build

    sec = TerminalSecurity("aes", tmk=sp.TMK_AES)
    sec.tak, sec.tpk = bytes(range(16)), bytes(range(16, 32))
    wire = sec.protect(build("purchase", terminal=AES_TID, merchant=MERCHANT, pan=VISA, amount=100), TERM, "1234")
    msg = TERM.decode(wire)
    assert 52 not in msg
    block = bytes.fromhex(parse_tlv48(msg[48])["PB"])
    assert pinblock.decipher(sec.tpk, "aes", block, VISA) == (4, "1234")
    tdes = TerminalSecurity("tdes", tmk=sp.TMK_TDES)
    tdes.tak, tdes.tpk = bytes(range(16)), bytes(range(16, 32))
    msg = TERM.decode(tdes.protect(build("purchase", terminal=TDES_TID, merchant=MERCHANT, pan=VISA, amount=100),
                                   TERM, "1234"))
    assert len(msg[52]) == 8 and 48 not in msg
