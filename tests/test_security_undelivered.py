"""An approval whose answer cannot be MACed is reversed by the switch (spec sections 6 and 8,
switch.core.undelivered), on the harness of tests/test_security_pipeline.py.

With the security module down no answer can carry a MAC, and none is sent.
An approval journaled 00 that the terminal never hears of would stand if the
terminal neither retransmits nor reverses: the switch reverses it and
journals 68, as for an approval that came too late for the terminal.
``PAYSWITCH_JOURNAL_WRITER=process`` runs these against the writer process.
"""
from __future__ import annotations

import asyncio
import logging

from switch.core import states
from switch.core.acquirer import Result
from switch.security import terminal
from switch.security.module import ModuleUnavailable
from tests import test_service as ts
from tests.test_security_pipeline import MERCHANT, TDES_TID, TERM, fields, hmac_key, run, sign_on  # noqa: F401


def module_down(sw):
    """Make the module fail every MAC; returns what puts it back."""
    working = sw.security_module.generate_mac

    async def unavailable(*args):
        raise ModuleUnavailable("HSM did not answer")

    sw.security_module.generate_mac = unavailable
    return lambda: setattr(sw.security_module, "generate_mac", working)


def reversal_of(stan: str, orig_stan: str) -> dict:
    return {**fields(stan=stan), "mti": "0400", 90: ts.field90("0200", orig_stan)}


async def reversed_once(sw):
    rec = await ts.wait_state(sw, "000001", states.REVERSED, tid=TDES_TID)
    bank = sw.acquirers["bank-a"]
    assert len(bank.authorized) == 1 and len(bank.reversed) == 1
    (rev, _), = bank.reversed
    assert rev.original.auth_code == rec.auth_code == "A00001"  # the reversal names the approval
    return rec


def test_an_approval_whose_answer_cannot_be_maced_is_reversed_and_its_retransmission_gets_68_s8(caplog):
    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        back = module_down(sw)
        body = terminal.encode_signed(TERM, fields(), tak, "tdes")
        assert await sw.handle(body) == b""  # nothing unMACed, as before
        rec = await reversed_once(sw)  # the terminal did nothing: the switch reversed it
        assert (rec.response_code, TERM.decode(rec.response)[39]) == ("68", "68")
        assert await sw.handle(body) == b""  # still down: still nothing, and no second reversal
        back()
        out = await sw.handle(body)
        resp = TERM.decode(out)
        assert (resp[39], resp[37]) == ("68", rec.rrn) and terminal.verify(out, tak, "tdes")  # never 00
        await reversed_once(sw)

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "answered 00 but not sent: its MAC cannot be made (HSM did not answer); an approval is reversed" \
        in caplog.text
    assert "approval not delivered, its MAC cannot be made; reversed at bank-a and journaled 68" in caplog.text
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text


def test_the_terminals_0400_for_it_is_answered_00_without_a_second_reversal_s8():
    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        back = module_down(sw)
        assert await sw.handle(terminal.encode_signed(TERM, fields(), tak, "tdes")) == b""
        await reversed_once(sw)
        back()
        out = await sw.handle(terminal.encode_signed(TERM, reversal_of("000002", "000001"), tak, "tdes"))
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, tak, "tdes")
        rec = await reversed_once(sw)
        assert rec.state == states.REVERSED
        assert ts.sample(sw, "payswitch_reversals_total", trigger="undelivered", result="queued") == 1
        assert not ts.sample(sw, "payswitch_reversals_total", trigger="terminal", result="queued")

    run(scenario)


def test_a_0400_while_the_module_is_still_down_reverses_nothing_twice_s8():
    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        module_down(sw)
        assert await sw.handle(terminal.encode_signed(TERM, fields(), tak, "tdes")) == b""
        assert await sw.handle(terminal.encode_signed(TERM, reversal_of("000002", "000001"), tak, "tdes")) == b""
        await reversed_once(sw)

    run(scenario)


def test_a_decline_whose_answer_cannot_be_maced_stays_as_journaled_s8():
    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        back = module_down(sw)
        body = terminal.encode_signed(TERM, fields(), tak, "tdes")
        assert await sw.handle(body) == b""
        rec = await ts.record(sw, "000001", TDES_TID)
        assert (rec.state, rec.response_code) == (states.ANSWERED, "51")
        back()
        assert TERM.decode(await sw.handle(body))[39] == "51"
        assert sw.acquirers["bank-a"].reversed == []

    run(scenario, acquirers=ts.fakes(**{"bank-a": ts.FakeAcquirer("bank-a", answer=Result(response_code="51"))}))


def test_a_balance_inquiry_whose_answer_cannot_be_maced_is_not_reversed_s8():
    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        module_down(sw)
        assert await sw.handle(terminal.encode_signed(TERM, fields(f3="310000", f4="000000000000"), tak, "tdes")) == b""
        rec = await ts.record(sw, "000001", TDES_TID)
        assert (rec.state, rec.response_code, rec.merchant_id) == (states.ANSWERED, "00", MERCHANT)
        assert sw.acquirers["bank-a"].reversed == []

    run(scenario)


def flaky_module(sw, fails: int):
    """The module's MACs, each held until released (``release[n]``); the first ``fails`` fail then."""
    working = sw.security_module.generate_mac
    release: list[asyncio.Event] = []

    async def held(*args):
        gate = asyncio.Event()
        index = len(release)
        release.append(gate)
        await gate.wait()
        if index < fails:
            raise ModuleUnavailable("HSM did not answer")
        return await working(*args)

    sw.security_module.generate_mac = held
    return release


async def entered(release, n):
    while len(release) < n:
        await asyncio.sleep(0.005)


async def answered_at_once(sw):
    """A MACed purchase and its retransmission, both waiting for the module to make their answer's MAC
    (the first one's to fail): (TAK, the two gates, the request, the first's answer, the second's)."""
    tak, _ = await sign_on(sw, TDES_TID)
    release = flaky_module(sw, fails=1)
    body = terminal.encode_signed(TERM, fields(), tak, "tdes")
    first = asyncio.ensure_future(sw.handle(body))
    await entered(release, 1)
    again = asyncio.ensure_future(sw.handle(body))
    await entered(release, 2)
    return tak, release, body, first, again


def test_an_approval_its_retransmission_got_meanwhile_is_not_reversed_s8(caplog):
    # The module slow to fail the first answer's MAC, back for the retransmission's: the
    # terminal holds a 00, which the switch must then not reverse.
    async def scenario(sw):
        tak, release, body, first, again = await answered_at_once(sw)
        release[1].set()
        out = await again
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, tak, "tdes")
        release[0].set()
        assert await first == b""
        rec = await ts.record(sw, "000001", TDES_TID)
        assert (rec.state, rec.response_code) == (states.ANSWERED, "00")
        await asyncio.sleep(0.2)
        assert sw.acquirers["bank-a"].reversed == []

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "not reversed: the terminal got it MACed under the same key meanwhile" in caplog.text


def test_an_approval_being_reversed_is_not_sent_by_its_retransmission_s8(caplog):
    # The retransmission read the journal's 00 before the reversal; its MAC is made after:
    # the 00 is withheld, and the next retransmission gets 68.
    async def scenario(sw):
        tak, release, body, first, again = await answered_at_once(sw)
        release[0].set()
        assert await first == b""
        await reversed_once(sw)
        release[1].set()
        assert await again == b""
        third = asyncio.ensure_future(sw.handle(body))
        await entered(release, 3)
        release[2].set()
        out = await third
        assert TERM.decode(out)[39] == "68" and terminal.verify(out, tak, "tdes")
        await reversed_once(sw)

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "not sent: being reversed, its first answer's MAC could not be made; a retransmission gets 68" \
        in caplog.text


def test_a_journal_refusing_the_reversal_leaves_nothing_sent_and_the_approval_as_journaled_s8(caplog, monkeypatch):
    """The module cannot MAC the approval and the journal refuses its reversal (the writer died, the
    disk is full): still nothing is sent, neither unMACed nor 96 (which would contradict the journaled
    00); the approval stands, and the terminal's retransmission gets it MACed once the module is back."""
    from switch.journal import JournalError

    async def scenario(sw):
        tak, _ = await sign_on(sw, TDES_TID)
        back = module_down(sw)
        update_if = sw.journal.update_if

        def refusing(txn_id, expect, /, **changes):
            if changes.get("response_code") == "68":
                fut = sw._loop.create_future()
                fut.set_exception(JournalError("journal writer process died (exit code -9)"))
                return fut
            return update_if(txn_id, expect, **changes)

        monkeypatch.setattr(sw.journal, "update_if", refusing)
        body = terminal.encode_signed(TERM, fields(), tak, "tdes")
        assert await sw.handle(body) == b""
        rec = await ts.wait_state(sw, "000001", states.ANSWERED, tid=TDES_TID)
        assert rec.response_code == "00" and not sw.acquirers["bank-a"].reversed
        back()
        out = await sw.handle(body)
        assert TERM.decode(out)[39] == "00" and terminal.verify(out, tak, "tdes")

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario)
    assert "its reversal cannot be journaled (journal writer process died (exit code -9)): it stands" in caplog.text
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text
