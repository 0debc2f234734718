"""An operator closes a refused reversal settled with the acquirer: POST /admin/reversals/<rrn>/close.

Before, nothing could take a reversal the acquirer refused for good off
``payswitch_reversals_refused`` and /status: the count only grew, and the
alert's operator had no way to say "settled".  Over a real socket, against a
started switch whose acquirer refuses the reversal.
"""
from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest

from switch.core import refused, states
from switch.core.acquirer import Refused
from switch.io.fleet_http import FleetHttp
from switch.io.http import AdminHttp

from tests.test_admin_http import TOKEN, exchange, fake_switch, post
from tests.test_edges import Answers, run
from tests.test_reversal_refused import FAST
from tests.test_service import KEY_ENV, TID, VISA, call, fakes, journal, reversal, request, sample, wait_state

AUTH = f"Authorization: Bearer {TOKEN}"


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "5e" * 32)


def close(rrn: str, *headers: str) -> bytes:
    return post(f"/admin/reversals/{rrn}/close", *headers)


async def ask(port: int, raw: bytes) -> tuple[int, dict]:
    code, _headers, body = await exchange(port, raw)
    return code, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


def with_refused(scenario, code="64"):
    """``await scenario(sw, port, rec)``: a started switch with its admin API, and the
    record of an approved purchase whose reversal the acquirer refused with ``code``."""
    bank_a = Answers("bank-a", [Refused(code, f"{code} (refused)")])

    async def main(sw):
        server = await AdminHttp(sw, lambda: (True, "reloaded"), token=TOKEN.encode()).serve("127.0.0.1", 0)
        try:
            assert (await call(sw, request()))[39] == "00"
            assert (await call(sw, reversal("000002", "000001")))[39] == "00"
            rec = await wait_state(sw, "000001", states.REVERSAL_REFUSED)
            await asyncio.sleep(0.3)  # a sweep or two: the sender counts it from the journal
            assert sample(sw, "payswitch_reversals_refused") == 1
            return await scenario(sw, server.sockets[0].getsockname()[1], rec, bank_a)
        finally:
            server.close()

    return run(main, acquirers=fakes(**{"bank-a": bank_a}), tweak=FAST)


# -- the state table ----------------------------------------------------------------------


def test_only_a_refused_reversal_closes_and_a_closed_one_stays_closed():
    assert states.advance(states.REVERSAL_REFUSED, "close") == states.REVERSAL_CLOSED
    assert states.advance(states.REVERSAL_CLOSED, "reverse") == states.REVERSAL_CLOSED
    for state in (states.REVERSAL_PENDING, states.ANSWERED, states.REVERSED, states.REVERSAL_CLOSED):
        with pytest.raises(states.InvalidTransition):
            states.advance(state, "close")
    assert not states.needs_reversal(states.REVERSAL_CLOSED, "00")


def test_an_rrn_is_twelve_digits():
    assert refused.is_rrn("000000000001")
    for text in ("00000000001", "0000000000001", "00000000000a", "０００００００００００１", ""):
        assert not refused.is_rrn(text), text


# -- the admin endpoint, against a switch and its journal ------------------------------------


def test_closing_a_refused_reversal_takes_it_off_the_gauge_and_a_second_close_is_a_conflict(caplog):
    async def scenario(sw, port, rec, bank_a):
        before = await journal(sw, sw.journal.totals(TID))
        assert await ask(port, close(rec.rrn, AUTH)) == (200, {"rrn": rec.rrn, "state": "reversal_closed"})
        after = await journal(sw, sw.journal.get(rec.id))
        assert (after.state, after.reversal_code) == (states.REVERSAL_CLOSED, "64")
        # Counted again at once, not at the next sweep; /status reads the same gauge.
        assert sample(sw, "payswitch_reversals_refused") == 0
        await asyncio.sleep(0.3)
        assert sample(sw, "payswitch_reversals_refused") == 0
        # Undone as before: in no settlement totals.
        assert await journal(sw, sw.journal.totals(TID)) == before
        assert before.debits_count == 0
        code, body = await ask(port, close(rec.rrn, AUTH))
        assert (code, body["state"], body["error"]) == (409, "reversal_closed", "already closed")
        return rec

    with caplog.at_level(logging.INFO, logger="payswitch"):
        rec = with_refused(scenario)
    [line] = [r for r in caplog.records if "closed its refused reversal" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert rec.rrn in line.getMessage() and "bank-a" in line.getMessage() and "operator" in line.getMessage()
    assert not [r for r in caplog.records if VISA in r.getMessage()]


def test_no_such_rrn_is_404_a_transaction_in_another_state_409_and_a_bad_rrn_400():
    async def scenario(sw, port, rec, bank_a):
        assert (await call(sw, request(stan="000003")))[39] == "00"
        approved = await wait_state(sw, "000003", states.ANSWERED)
        code, body = await ask(port, close(approved.rrn, AUTH))
        assert (code, body["state"]) == (409, "answered") and "not a refused reversal" in body["error"]
        code, body = await ask(port, close("999999999999", AUTH))
        assert (code, body["rrn"]) == (404, "999999999999")
        for bad in ("12345", "00000000000x", "0000000000001", VISA, "000000000001%2F"):
            code, body = await ask(port, close(bad, AUTH))
            assert code == 400 and "12 digits" in body["error"], bad
            assert VISA not in json.dumps(body)  # whatever was pasted is never quoted back
        assert (await journal(sw, sw.journal.get(rec.id))).state == states.REVERSAL_REFUSED
        assert (await journal(sw, sw.journal.get(approved.id))).state == states.ANSWERED

    with_refused(scenario)


def test_without_the_token_or_by_get_nothing_is_closed():
    async def scenario(sw, port, rec, bank_a):
        code, _ = await ask(port, close(rec.rrn))
        assert code == 401
        code, _ = await ask(port, close(rec.rrn, "Authorization: Bearer wrong-token-0123456789"))
        assert code == 401
        code, _ = await ask(port, close(rec.rrn, AUTH, "Origin: https://evil.example"))
        assert code == 403
        get = (f"GET /admin/reversals/{rec.rrn}/close HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}\r\n"
               "Connection: close\r\n\r\n").encode()
        code, body = await ask(port, get)
        assert code == 405
        assert (await journal(sw, sw.journal.get(rec.id))).state == states.REVERSAL_REFUSED
        assert sample(sw, "payswitch_reversals_refused") == 1

    with_refused(scenario)


def test_a_terminal_0400_of_a_closed_reversal_is_answered_00_and_changes_nothing():
    async def scenario(sw, port, rec, bank_a):
        assert (await ask(port, close(rec.rrn, AUTH)))[0] == 200
        sent = len(bank_a.reversed)
        assert (await call(sw, reversal("000004", "000001")))[39] == "00"
        await asyncio.sleep(0.3)
        after = await journal(sw, sw.journal.get(rec.id))
        assert after.state == states.REVERSAL_CLOSED
        assert len(bank_a.reversed) == sent  # never sent again
        assert sample(sw, "payswitch_reversal_queue") == 0

    with_refused(scenario)


# -- serve --workers: the supervisor forwards to worker 0 ------------------------------------


class ClosingSwitch(SimpleNamespace):
    """A worker's switch whose journal holds one refused reversal, RRN 000000000007."""

    def __init__(self):
        super().__init__(**vars(fake_switch()))
        self.state = states.REVERSAL_REFUSED
        self.asked: list[str] = []

    async def close_refused(self, rrn):
        self.asked.append(rrn)
        if rrn != "000000000007":
            return refused.Closing(refused.NO_SUCH)
        if self.state != states.REVERSAL_REFUSED:
            return refused.Closing(refused.NOT_REFUSED, self.state, "bank-a")
        self.state = states.REVERSAL_CLOSED
        return refused.Closing(refused.CLOSED, self.state, "bank-a")


def with_fleet(scenario, *, ready=True):
    """``await scenario(port, worker)``: a supervisor's HTTP in front of worker 0's admin HTTP."""

    async def main():
        worker = ClosingSwitch()
        worker_server = await AdminHttp(worker, lambda: (True, ""), token=TOKEN.encode()).serve("127.0.0.1", 0)
        event = asyncio.Event()
        if ready:
            event.set()
        fleet = SimpleNamespace(workers=[SimpleNamespace(index=0, alive=True, ready=event)])
        front = FleetHttp(fleet, token=TOKEN.encode())
        address = worker_server.sockets[0].getsockname()[:2]
        front._worker_address = lambda index: address
        server = await front.serve("127.0.0.1", 0)
        try:
            return await scenario(server.sockets[0].getsockname()[1], worker, worker_server)
        finally:
            server.close()
            worker_server.close()

    return asyncio.run(main())


def test_the_supervisor_passes_a_close_to_worker_0_with_the_admin_token():
    async def scenario(port, worker, worker_server):
        assert await ask(port, close("000000000007", AUTH)) == (200, {"rrn": "000000000007",
                                                                      "state": "reversal_closed"})
        code, body = await ask(port, close("000000000007", AUTH))
        assert (code, body["error"]) == (409, "already closed")
        assert (await ask(port, close("000000000008", AUTH)))[0] == 404
        # Checked at the supervisor: never forwarded.
        assert (await ask(port, close("000000000007")))[0] == 401
        assert (await ask(port, close("7", AUTH)))[0] == 400
        get = (f"GET /admin/reversals/000000000007/close HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}\r\n"
               "Connection: close\r\n\r\n").encode()
        assert (await ask(port, get))[0] == 405
        assert worker.asked == ["000000000007", "000000000007", "000000000008"]
        # Worker 0 gone: 503, nothing asked.
        worker_server.close()
        await worker_server.wait_closed()
        code, body = await ask(port, close("000000000007", AUTH))
        assert code == 503 and "did not answer" in body["error"]

    with_fleet(scenario)


def test_the_supervisor_answers_503_while_worker_0_is_not_ready():
    async def scenario(port, worker, worker_server):
        code, body = await ask(port, close("000000000007", AUTH))
        assert code == 503 and "not ready" in body["error"]
        assert worker.asked == [] and worker.state == states.REVERSAL_REFUSED

    with_fleet(scenario, ready=False)


def test_a_journal_that_fails_is_a_503_naming_no_card_data(caplog):
    async def scenario(sw, port, rec, bank_a):
        def broken(txn_id, expect, **changes):
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(RuntimeError("disk I/O error"))
            return fut

        sw.journal.update_if = broken
        code, body = await ask(port, close(rec.rrn, AUTH))
        assert code == 503 and body["error"] == "journal: RuntimeError; ask again (409 if it was closed)"

    with_refused(scenario)
    assert not [r for r in caplog.records if VISA in r.getMessage()]
