"""An 0800 that carries a MAC, from a DUKPT terminal (spec 8.1, "An 0800 that carries a MAC").

Section 8.1: an 0800 need not carry a MAC, but one that does is verified like
any request: wrong, A0; right, its 0810 is MACed under the same key.  And a
DUKPT terminal's KSN counter only goes up, on every request: a new 0800 under
a KSN already used is a replay (A0), its retransmission gets its first 0810.

On the service harness of ``tests/test_security_pipeline.py`` (sandbox
software module, DEMOSEC terminals, fake acquirers).
"""
from __future__ import annotations

import pytest

from native.iso8583 import build_tlv48
from switch.security import terminal
from tests import test_security_pipeline as sp
from tests import test_service as ts

TERM, T7, DUKPT_TID = sp.TERM, sp.T7, sp.DUKPT_TID
KSN = "FFFF9876543210E00005"


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


def network(code, stan, ksn=KSN, *, key=None, ks=True):
    """A DUKPT terminal's 0800, MACed under ``key`` (default: the KSN's own MAC key)."""
    mac_key, _, algorithm = sp.terminal.dukpt_keys(sp.BDK, ksn)
    fields = {"mti": "0800", 7: T7, 11: stan, 41: DUKPT_TID, 70: code}
    if ks:
        fields[48] = build_tlv48({"KS": ksn})
    return terminal.encode_signed(TERM, fields, mac_key if key is None else key, algorithm), mac_key, algorithm


@pytest.mark.parametrize("code", ["301", "001", "002", "101"])
@pytest.mark.parametrize("case", ["wrong MAC", "no KS"])
def test_a_dukpt_0800_whose_mac_fails_answers_a0_unmaced(code, case):
    async def scenario(sw):
        body, _, _ = network(code, "000001", key=bytes(16)) if case == "wrong MAC" else network(code, "000001", ks=False)
        resp = await ts.call(sw, body)
        assert (resp.mti, resp[39], resp[70]) == ("0810", "A0", code)
        assert 64 not in resp and 128 not in resp and 48 not in resp
        counted = {reason: n for reason, n in sp.mac_failures(sw).items() if n}
        assert counted == {"wrong" if case == "wrong MAC" else "ksn": 1.0}

    sp.run(scenario)


def test_a_dukpt_0800_with_the_right_mac_is_answered_maced_and_its_ksn_is_used_up():
    async def scenario(sw):
        body, mac_key, algorithm = network("301", "000001")
        out = await sw.handle(body)
        resp = TERM.decode(out)
        assert (resp.mti, resp[39]) == ("0810", "00")
        assert terminal.verify(out, mac_key, algorithm)  # section 8: the answer's MAC is under the same key
        # A retransmission (same 41, 11, 7, content) gets its first 0810, MACed again.
        again = await sw.handle(body)
        assert TERM.decode(again)[37] == resp[37] and terminal.verify(again, mac_key, algorithm)
        # A new request under the same KSN is a replay, an 0800 or a payment alike.
        assert (await ts.call(sw, network("301", "000002")[0]))[39] == "A0"
        purchase = terminal.encode_signed(TERM, sp.fields(DUKPT_TID, stan="000003", f48=build_tlv48({"KS": KSN})),
                                          mac_key, algorithm)
        assert (await ts.call(sw, purchase))[39] == "A0"
        assert {reason: n for reason, n in sp.mac_failures(sw).items() if n} == {"replay": 2.0}
        # DUKPT gives no session keys: 12, answered MACed under the next KSN.
        body, mac_key, algorithm = network("101", "000004", "FFFF9876543210E00006")
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "12" and terminal.verify(out, mac_key, algorithm)
        assert await sw.handle(body) == out  # its retransmission: the same 0810
        assert all(a.authorized == [] for a in sw.acquirers.values())

    sp.run(scenario)
