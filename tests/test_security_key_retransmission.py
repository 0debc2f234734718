"""A retransmitted key exchange gets its first 0810, keys and all (spec 6 and 8).

A terminal that did not receive the 0810 of its 0800/101 sends it again
with the same 41, 11 and 7.  Section 6: a retransmission gets the original
response.  Fresh keys would replace the pending set the first 0810 carried,
and a terminal that did receive that 0810 after all would MAC under keys the
switch no longer has.  On the harness of ``tests/test_security_termkeys.py``.
"""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from native.iso8583 import parse_tlv48
from switch.security import terminal
from tests import test_security_pipeline as sp
from tests import test_security_termkeys as tk
from tests import test_service as ts

TERM, T7, TDES_TID, AES_TID, VISA = sp.TERM, sp.T7, sp.TDES_TID, sp.AES_TID, sp.VISA


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


def exchange(tid, stan="000900", code="101", extra=None) -> bytes:
    msg = {"mti": "0800", 7: T7, 11: stan, 41: tid, 70: code}
    msg.update(extra or {})
    return TERM.encode(msg)


def content(resp) -> dict:
    """The answer's fields, field 48 (keys under the TMK) as a digest: a failure prints no key."""
    fields = resp.fields()
    if 48 in fields:
        fields[48] = hashlib.sha256(fields[48].encode()).hexdigest()[:12]
    return fields


def pending_kcvs(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT slot, kind, kcv FROM terminal_key ORDER BY slot, kind").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("tid, tmk, algorithm, code", [
    (TDES_TID, sp.TMK_TDES, "tdes", "101"),
    (AES_TID, sp.TMK_AES, "aes", "101"),
    (TDES_TID, sp.TMK_TDES, "tdes", "001"),  # a sign-on that gave keys: its retransmission gives the same
], ids=["tdes 101", "aes 101", "tdes sign-on"])
def test_a_retransmitted_key_exchange_gets_its_first_0810_and_no_new_keys(tmp_path, tid, tmk, algorithm, code):
    path = tmp_path / "journal.sqlite"

    async def scenario(sw):
        first = TERM.decode(await sw.handle(exchange(tid, code=code)))
        assert first[39] == "00" and 48 in first
        stored = pending_kcvs(path)
        again = TERM.decode(await sw.handle(exchange(tid, code=code)))
        # Byte-for-byte in content: the same keys under the same TMK, the same check values, the same 37.
        assert content(again) == content(first)
        assert pending_kcvs(path) == stored  # nothing generated or stored
        tak, tpk = terminal.session_keys(tmk, algorithm, parse_tlv48(first[48]))
        # The TPK too is the one the terminal got (an AES terminal's block goes in tag PB: not tried here).
        extra = {"f52": terminal.pin_block("1234", VISA, tpk, algorithm)} if algorithm == "tdes" else {}
        out = await sw.handle(tk.purchase(tid, tak, algorithm, "000001", **extra))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, tak, algorithm)
        # A retransmission after the keys were used still gets the same 0810 (and changes nothing).
        late = TERM.decode(await sw.handle(exchange(tid, code=code)))
        assert content(late) == content(first)
        assert (await ts.call(sw, tk.purchase(tid, tak, algorithm, "000002")))[39] == "00"

    tk.run(path, scenario)


def test_the_key_of_a_key_exchange_with_other_content_is_94_and_issues_no_keys(tmp_path):
    path = tmp_path / "journal.sqlite"

    async def scenario(sw):
        first = TERM.decode(await sw.handle(exchange(TDES_TID)))
        stored = pending_kcvs(path)
        # Same 41, 11, 7; other content: a sign-on, or a 101 naming the merchant.
        for other in (exchange(TDES_TID, code="001"), exchange(TDES_TID, extra={42: sp.MERCHANT})):
            out = TERM.decode(await sw.handle(other))
            assert (out.mti, out[39]) == ("0810", "94") and 48 not in out
        assert pending_kcvs(path) == stored
        tak, _ = terminal.session_keys(sp.TMK_TDES, "tdes", parse_tlv48(first[48]))
        assert (await ts.call(sw, tk.purchase(TDES_TID, tak, "tdes", "000001")))[39] == "00"
        # A payment under the key exchange's key is 94 too, and goes to no acquirer.
        reuse = await ts.call(sw, tk.purchase(TDES_TID, tak, "tdes", "000900"))
        assert reuse[39] == "94"

    tk.run(path, scenario)


def test_a_retransmitted_maced_key_exchange_is_answered_maced_with_the_same_keys(tmp_path):
    async def scenario(sw):
        old, _ = await tk.key_exchange(sw, TDES_TID, "000800")
        assert (await ts.call(sw, tk.purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"
        signed = terminal.encode_signed(TERM, {"mti": "0800", 7: T7, 11: "000901", 41: TDES_TID, 70: "101"},
                                        old, "tdes")
        first = await sw.handle(signed)
        again = await sw.handle(signed)
        assert terminal.verify(first, old, "tdes") and terminal.verify(again, old, "tdes")
        assert content(TERM.decode(again)) == content(TERM.decode(first))
        new, _ = terminal.session_keys(sp.TMK_TDES, "tdes", parse_tlv48(TERM.decode(first)[48]))
        assert (await ts.call(sw, tk.purchase(TDES_TID, new, "tdes", "000002")))[39] == "00"

    tk.run(tmp_path / "journal.sqlite", scenario)


@pytest.mark.parametrize("fields, code", [
    ({11: None}, "30"),  # no STAN (section 3: every 0800 carries 7, 11, 41 and 70)
    ({7: None}, "30"),  # no transmission time
    ({70: "999"}, "12"),  # no network management code of section 3
], ids=["no 11", "no 7", "unknown 70"])
@pytest.mark.parametrize("code70", ["101", "001"])
def test_a_key_exchange_missing_a_field_gets_no_keys(tmp_path, fields, code, code70):
    """A secured terminal's 0800/101 (or its first sign-on) is checked as every request is:
    without 11 or 7 it is no request the switch can answer twice, and no keys are issued."""
    path = tmp_path / "journal.sqlite"

    async def scenario(sw):
        msg = {"mti": "0800", 7: T7, 11: "000901", 41: TDES_TID, 70: code70}
        msg.update(fields)
        answer = TERM.decode(await sw.handle(TERM.encode({k: v for k, v in msg.items() if v is not None})))
        assert answer[39] == code and 48 not in answer
        assert pending_kcvs(path) == []  # nothing generated or stored
        good = TERM.decode(await sw.handle(exchange(TDES_TID)))  # a well-formed one still gets keys
        assert good[39] == "00" and 48 in good

    tk.run(path, scenario)
