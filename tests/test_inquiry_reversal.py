"""A balance inquiry (31xxxx) moves no money: nothing about it is ever reversed at the acquirer.

A reversal of one would be refused by a strict host (there is nothing to
undo), and a refused reversal is an operator's alert (PayswitchReversalRefused).
"""
from __future__ import annotations

import asyncio

import pytest

from switch.core import messages, states
from switch.journal import TxnRecord, digest_key, pan_protect
from tests.test_service import (
    KEY_ENV, KEY_HEX, MERCHANT, T7, TERM, TID, VISA, FakeAcquirer, call, fakes, record, request, reversal, run, sample,
    wait_state,
)

INQUIRY = "310000"


@pytest.fixture(autouse=True)
def _journal_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


def test_an_inquiry_the_acquirer_never_answered_is_68_and_not_reversed():
    bank_a = FakeAcquirer("bank-a", answer="timeout")

    async def scenario(sw):
        resp = await call(sw, request(pcode=INQUIRY, amount="000000000000"))
        assert (resp.mti, resp[39]) == ("0210", "68")
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code) == (states.ANSWERED, "68")
        await asyncio.sleep(0.15)  # reversal sweeps every 50 ms: none has anything to send
        assert bank_a.reversed == []
        assert sample(sw, "payswitch_reversals_total", trigger="uncertain", result="queued") == 0
        # A purchase that times out is still reversed.
        assert (await call(sw, request(stan="000002")))[39] == "68"
        await wait_state(sw, "000002", states.REVERSED)
        assert [req.original.processing_code for req, _ in bank_a.reversed] == ["000000"]

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=0.1)


def test_a_0400_of_an_answered_inquiry_is_00_and_nothing_is_sent():
    async def scenario(sw):
        assert (await call(sw, request(pcode=INQUIRY, amount="000000000000")))[39] == "00"
        resp = await call(sw, reversal("000002", "000001", pcode=INQUIRY, amount="000000000000"))
        assert (resp.mti, resp[39]) == ("0410", "00")
        await asyncio.sleep(0.15)
        assert sw.acquirers["bank-a"].reversed == []
        assert (await record(sw, "000001")).state == states.ANSWERED

    run(scenario)


def test_a_0400_of_an_inquiry_at_the_acquirer_answers_it_68_and_sends_nothing():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        inquiry = asyncio.ensure_future(call(sw, request(pcode=INQUIRY, amount="000000000000")))
        await bank_a.entered.wait()
        assert (await call(sw, reversal("000002", "000001", pcode=INQUIRY, amount="000000000000")))[39] == "00"
        gate.set()
        assert (await inquiry)[39] == "68"
        await asyncio.sleep(0.15)
        assert bank_a.reversed == []

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_an_inquiry_found_sent_at_start_up_is_not_reversed():
    async def seed(sw):
        masked, pan_hash = pan_protect(VISA, sw.key)
        body = request(pcode=INQUIRY, amount="000000000000")
        rec, created = await sw.journal.insert(TxnRecord(
            terminal_id=TID, merchant_id=MERCHANT, mti="0200", stan="000001", transmission_time=T7,
            processing_code=INQUIRY, amount=0, currency="978", acquirer="bank-a",
            pan_masked=masked, pan_hash=pan_hash,
            content_digest=messages.content_digest(TERM.decode(body), digest_key(sw.key)),
        ))
        assert created
        await sw.journal.update(rec.id, state=states.SENT)

    async def scenario(sw):
        await asyncio.sleep(0.15)
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code) == (states.ANSWERED, "68")
        assert sw.acquirers["bank-a"].reversed == []
        # A purchase found sent is still reversed (tests/test_service.py), and the
        # inquiry's retransmission is never authorized again.
        assert (await call(sw, request(pcode=INQUIRY, amount="000000000000")))[39] == "96"
        assert sw.acquirers["bank-a"].authorized == []

    run(scenario, before_start=seed)
