"""The switch-over from a terminal's current keys to the pending ones (spec 8.1), with requests in flight.

Section 8.1: the current keys stay valid until a request verifies under the
pending TAK; from that request on the new keys are current and the old ones
refused.  A request that verified under the old TAK before that moment is a
request under the old keys to the end: its answer is MACed under the old TAK
(section 8: "responses to MACed requests carry a MAC under the same key"),
even when a request under the new keys promoted them while it was at the
acquirer.  On the harness of ``tests/test_security_termkeys.py``.
"""
from __future__ import annotations

import asyncio

import pytest

from switch.security import terminal
from tests import test_security_pipeline as sp
from tests import test_security_termkeys as tk
from tests import test_service as ts

TERM, TDES_TID, AES_TID, VISA = sp.TERM, sp.TDES_TID, sp.AES_TID, sp.VISA


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


async def until(predicate, timeout=ts.WAIT):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_the_switch_over_in_sequence(tmp_path):
    """Key exchange, a purchase, a second key exchange, a purchase under the old keys, one under the new."""
    async def scenario(sw):
        old, old_tpk = await tk.key_exchange(sw, TDES_TID, "000900")
        out = await sw.handle(tk.purchase(TDES_TID, old, "tdes", "000001"))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, old, "tdes")
        new, new_tpk = await tk.key_exchange(sw, TDES_TID, "000901")
        # Sent before the terminal took the new keys: the old ones are still current.
        block = terminal.pin_block("1234", VISA, old_tpk, "tdes")
        out = await sw.handle(tk.purchase(TDES_TID, old, "tdes", "000002", f52=block))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, old, "tdes")
        block = terminal.pin_block("1234", VISA, new_tpk, "tdes")
        out = await sw.handle(tk.purchase(TDES_TID, new, "tdes", "000003", f52=block))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, new, "tdes")
        # From then on the old keys are refused (A0, unMACed).
        assert (await ts.call(sw, tk.purchase(TDES_TID, old, "tdes", "000004")))[39] == "A0"
        # Both PINs reached the acquirer right: each under the TPK of its request's keys.
        assert [pin for pin, _ in seen[-2:]] == [(0, "1234")] * 2

    seen = []
    tk.run(tmp_path / "journal.sqlite", scenario, acquirers=lambda: ts.fakes(**{"bank-a": tk.Recording("bank-a", seen)}))


@pytest.mark.parametrize("reload", [False, True], ids=["at-once", "across-a-reload"])
@pytest.mark.parametrize("tid, tmk, algorithm", [(TDES_TID, sp.TMK_TDES, "tdes"), (AES_TID, sp.TMK_AES, "aes")],
                         ids=["tdes", "aes"])
def test_a_request_under_the_old_keys_in_flight_at_the_switch_over_is_answered_under_them(
        tmp_path, tid, tmk, algorithm, reload):
    """``reload``: a configuration reload (which rebuilds the engine's terminal security) comes while
    the request is at its acquirer, before the switch-over: the switch-over still tells it that its
    keys are now the previous ones."""
    gate = asyncio.Event()

    async def scenario(sw):
        bank_a = sw.acquirers["bank-a"]
        old, _ = await tk.key_exchange(sw, tid, "000900", tmk=tmk, algorithm=algorithm)
        gate.set()
        assert (await ts.call(sw, tk.purchase(tid, old, algorithm, "000001")))[39] == "00"
        gate.clear()
        new, _ = await tk.key_exchange(sw, tid, "000901", tmk=tmk, algorithm=algorithm)
        # A purchase under the old keys reaches the acquirer and waits there ...
        in_flight = asyncio.create_task(sw.handle(tk.purchase(tid, old, algorithm, "000002")))
        await until(lambda: len(bank_a.authorized) == 2)
        if reload:
            sw.reload(sw.cfg)
        # ... while one under the new keys makes them current.
        promoting = asyncio.create_task(sw.handle(tk.purchase(tid, new, algorithm, "000003")))
        await until(lambda: len(bank_a.authorized) == 3)
        gate.set()
        first, second = await asyncio.gather(in_flight, promoting)
        assert TERM.decode(first)[39] == "00" and TERM.decode(second)[39] == "00"
        assert terminal.verify(first, old, algorithm), "the answer to the old-key request is not MACed under the old TAK"
        assert terminal.verify(second, new, algorithm), "the answer to the new-key request is not MACed under the new TAK"
        # The old keys are refused from then on; a retransmission of the in-flight request gets its
        # answer again (spec 6), MACed under the key its MAC verified under: the old one is gone, so A0.
        assert (await ts.call(sw, tk.purchase(tid, old, algorithm, "000004")))[39] == "A0"
        assert (await ts.call(sw, tk.purchase(tid, new, algorithm, "000005")))[39] == "00"

    tk.run(tmp_path / "journal.sqlite", scenario,
           acquirers=lambda: ts.fakes(**{"bank-a": ts.FakeAcquirer("bank-a", gate=gate)}))


def test_a_pin_of_a_request_under_the_old_keys_goes_on_under_the_old_tpk_after_the_switch_over(tmp_path):
    """The old-key request's PIN block is translated for its second acquirer (a fallback) after the switch-over."""
    gate = asyncio.Event()
    seen = []

    async def scenario(sw):
        bank_a = sw.acquirers["bank-a"]
        old, old_tpk = await tk.key_exchange(sw, TDES_TID, "000900")
        gate.set()
        assert (await ts.call(sw, tk.purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"
        gate.clear()
        new, _ = await tk.key_exchange(sw, TDES_TID, "000901")
        block = terminal.pin_block("1234", sp.MASTERCARD, old_tpk, "tdes")
        # bank-a answers 91 (after the gate): the request goes on to bank-b, its PIN translated then.
        in_flight = asyncio.create_task(sw.handle(
            tk.purchase(TDES_TID, old, "tdes", "000002", f2=sp.MASTERCARD, f52=block)))
        await until(lambda: len(bank_a.authorized) == 2)
        promoting = asyncio.create_task(sw.handle(tk.purchase(TDES_TID, new, "tdes", "000003")))
        await until(lambda: len(bank_a.authorized) == 3)
        gate.set()
        first, second = await asyncio.gather(in_flight, promoting)
        assert TERM.decode(first)[39] == "00" and TERM.decode(second)[39] == "00"
        ok = terminal.verify(first, old, "tdes")
        assert ok, "the answer to the old-key request is not MACed under the old TAK"

    bank_a = ts.FakeAcquirer("bank-a", gate=gate, answers=[None, sp.Result(response_code="91"), None])
    tk.run(tmp_path / "journal.sqlite", scenario,
           acquirers=lambda: ts.fakes(**{"bank-a": bank_a, "bank-b": tk.Recording("bank-b", seen)}))
    assert [pin for pin, _ in seen] == [(0, "1234")]


def test_a_request_in_flight_when_another_process_made_the_new_keys_current_is_answered_under_its_own(tmp_path):
    """serve --workers: worker b promotes the new keys; worker a learns it from the journal (its
    refresh) while a request under the old keys is at a's acquirer."""
    gate = asyncio.Event()
    gate.set()
    bank_a = ts.FakeAcquirer("bank-a", gate=gate)

    async def scenario(a, b):
        old, _ = await tk.key_exchange(a, TDES_TID, "000900")
        assert (await ts.call(a, tk.purchase(TDES_TID, old, "tdes", "000001")))[39] == "00"
        new, _ = await tk.key_exchange(b, TDES_TID, "000901")
        gate.clear()
        in_flight = asyncio.create_task(a.handle(tk.purchase(TDES_TID, old, "tdes", "000002")))
        await until(lambda: len(bank_a.authorized) == 2)
        assert (await ts.call(b, tk.purchase(TDES_TID, new, "tdes", "000003")))[39] == "00"  # promoted by b
        on_a = asyncio.create_task(a.handle(tk.purchase(TDES_TID, new, "tdes", "000004")))
        await until(lambda: len(bank_a.authorized) == 3)
        gate.set()
        first, second = await asyncio.gather(in_flight, on_a)
        assert TERM.decode(first)[39] == "00" and TERM.decode(second)[39] == "00"
        ok = terminal.verify(first, old, "tdes")
        assert ok, "the answer to the old-key request is not MACed under the old TAK"
        ok = terminal.verify(second, new, "tdes")
        assert ok, "the answer to the new-key request is not MACed under the new TAK"
        assert (await ts.call(a, tk.purchase(TDES_TID, old, "tdes", "000005")))[39] == "A0"

    tk.two_workers(tmp_path, scenario, acquirers_a=ts.fakes(**{"bank-a": bank_a}))
