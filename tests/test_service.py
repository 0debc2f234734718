"""The request pipeline of ``switch.io.service.Switch`` without sockets.

Encoded terminal requests go into ``Switch.handle`` and the encoded answers
come back; the acquirers are scripted fakes and the journal is SQLite in
memory.  Section numbers are those of ``docs/terminal-interface.md``.
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from native.iso8583 import dialect
from switch import config as config_mod
from switch.core import messages as m
from switch.core import states
from switch.core.acquirer import Request, Result
from switch.io import service
from switch.io.service import Switch
from switch.journal import TxnRecord, digest_key, pan_protect

TERM = dialect("terminal-87")
KEY_ENV = "PAYSWITCH_TEST_SERVICE_HMAC_KEY"
KEY_HEX = "5e" * 32

MERCHANT = "SHOP00000000001"
TID = "TERM0001"
VISA = "4761739001010119"  # bank-a (route "visa")
MASTERCARD = "5555555555554444"  # bank-a then bank-b (route "fallback")
UNROUTED = "6011111111111117"  # Luhn-valid, no route
BAD_LUHN = "4761739001010118"
T7 = "0612153000"
WAIT = 3.0  # upper bound for anything the tests wait on
# PAYSWITCH_JOURNAL_WRITER=process runs these against the journal writer process.
JOURNAL_WRITER = os.environ.get("PAYSWITCH_JOURNAL_WRITER", "thread")

CONFIG = """
response_timeout = {response_timeout}
reversal_retry = 0.05

[journal]
url = "sqlite://:memory:"
hmac_key_env = "{key_env}"
writer = "WRITER"

[[merchants]]
id = "SHOP00000000001"
terminals = ["TERM0001-TERM0009"]

[[merchants]]
id = "SHOP00000000002"
terminals = ["OTHR0001"]

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:1"]
timeout = {timeout}

[[acquirers]]
name = "bank-b"
type = "card"
endpoints = ["127.0.0.1:2"]
timeout = {timeout}

[[acquirers]]
name = "wallet-a"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:3"]
timeout = {timeout}
secret_file = "never-read"

[[acquirers]]
name = "cup"
type = "card"
endpoints = ["127.0.0.1:4"]
timeout = {timeout}

[[routes]]
name = "wallet-a"
kind = "wallet"
prefixes = ["25-30"]
acquirers = ["wallet-a"]

[[routes]]
name = "unionpay-qr"
kind = "wallet"
prefixes = ["62"]
acquirers = ["cup"]

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "fallback"
kind = "card"
prefixes = ["5"]
acquirers = ["bank-a", "bank-b"]
"""
CONFIG = CONFIG.replace('"WRITER"', f'"{JOURNAL_WRITER}"')  # tests/test_edges.py formats CONFIG too


# -- the fake acquirer -------------------------------------------------------------


class FakeAcquirer:
    """An Acquirer (``switch.core.acquirer``) that records every call and answers as scripted.

    ``answers`` is consumed one per authorize(); when it runs dry ``answer`` is
    used.  An answer is a Result, an exception instance (raised), or the
    string ``"timeout"`` (sleep the whole timeout, then an uncertain 68).
    ``gate``, when set, holds every authorize() until the test sets it.
    """

    def __init__(self, name, *, answer=None, answers=(), up=True, reverse_failures=0, gate=None):
        self.name = name
        self.answer = answer
        self.answers = list(answers)
        self.up = up
        self.reverse_failures = reverse_failures
        self.gate = gate
        self.authorized: list[tuple[Request, float]] = []
        self.reversed: list[tuple[Request, float]] = []
        self.log: list[str] = []
        self.entered = asyncio.Event()
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def healthy(self) -> bool:
        return self.up

    async def authorize(self, request: Request, timeout: float) -> Result:
        self.authorized.append((request, timeout))
        self.log.append("authorize")
        self.entered.set()
        n = len(self.authorized)
        answer = self.answers.pop(0) if self.answers else self.answer
        if self.gate is not None:
            await self.gate.wait()
        if answer is None:
            return Result(response_code="00", auth_code="A%05d" % n, acquirer_ref=f"{self.name}-ref-{n}")
        if answer == "timeout":
            await asyncio.sleep(timeout)
            return Result(response_code="68", uncertain=True, acquirer_ref=f"{self.name}-ref-{n}")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def reverse(self, request: Request, timeout: float) -> bool:
        self.reversed.append((request, timeout))
        self.log.append("reverse")
        if self.reverse_failures > 0:
            self.reverse_failures -= 1
            return False
        return True


# -- helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


def make_config(*, timeout=0.3, response_timeout=2.0):
    text = CONFIG.format(timeout=timeout, response_timeout=response_timeout, key_env=KEY_ENV)
    return config_mod.loads(text, "test_service.toml")


def fakes(**overrides):
    acquirers = {name: FakeAcquirer(name) for name in ("bank-a", "bank-b", "wallet-a", "cup")}
    acquirers.update(overrides)
    return acquirers


def run(scenario, *, acquirers=None, before_start=None, close_timeout=WAIT, **config):
    """Run ``await scenario(switch)`` on a started switch, then close it at once.

    A close() that does not return within ``close_timeout`` fails the test (instead of
    hanging the suite).
    """
    acquirers = acquirers if acquirers is not None else fakes()

    async def main():
        sw = Switch(make_config(**config), acquirers=acquirers)
        try:
            if before_start is not None:
                await before_start(sw)
            await sw.start()
            return await scenario(sw)
        finally:
            try:
                await asyncio.wait_for(sw.close(), close_timeout)
            except asyncio.TimeoutError:
                sw.journal.close()
                raise AssertionError("Switch.close() did not return") from None

    return asyncio.run(main())


def request(mti="0200", *, stan="000001", t7=T7, pan=VISA, amount="000000002500", pcode="000000",
            tid=TID, mid=MERCHANT, drop=(), **extra) -> bytes:
    """An encoded terminal-87 request with every field section 3 asks for."""
    msg = {"mti": mti, 3: pcode, 4: amount, 7: t7, 11: stan, 12: "153000", 13: "0612",
           22: "051", 41: tid, 42: mid, 49: "978"}
    if pan is not None:
        msg[2] = pan
    for n, v in extra.items():
        msg[int(n.lstrip("f"))] = v
    for n in drop:
        msg.pop(n, None)
    return TERM.encode(msg)


def field90(mti, stan, t7=T7) -> str:
    return mti + stan + t7 + "0" * 22


def reversal(stan, orig_stan, orig_mti="0200", orig_t7=T7, **kw) -> bytes:
    return request("0400", stan=stan, f90=field90(orig_mti, orig_stan, orig_t7), **kw)


def settlement(stan, credits=0, debits=0, credit_amount=0, debit_amount=0, tid=TID) -> bytes:
    return TERM.encode({"mti": "0500", 3: "920000", 7: T7, 11: stan, 41: tid, 42: MERCHANT, 49: "978",
                        74: "%010d" % credits, 76: "%010d" % debits,
                        86: "%016d" % credit_amount, 88: "%016d" % debit_amount})


async def call(sw, body: bytes):
    return TERM.decode(await sw.handle(body))


async def journal(sw, fut):
    return await asyncio.wrap_future(fut)


async def record(sw, stan, tid=TID, t7=T7):
    return await journal(sw, sw.journal.find(tid, stan, t7))


async def wait_state(sw, stan, state, tid=TID, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = await record(sw, stan, tid)
        if rec is not None and rec.state == state:
            return rec
        await asyncio.sleep(0.01)
    raise AssertionError(f"txn {tid}/{stan} never reached {state!r}: {rec}")


def sample(sw, name, **labels):
    return sw.metrics.registry.get_sample_value(name, labels) or 0.0


# -- approvals (sections 3, 5) ------------------------------------------------------


def test_approved_purchase_echoes_fields_and_carries_journal_rrn_and_auth_code_s3():
    icc = bytes.fromhex("9F2608AABBCCDDEEFF0011")
    bank_a = FakeAcquirer("bank-a", answer=Result(response_code="00", auth_code="XYZ789",
                                                   acquirer_ref="A-1", icc=b"\x91\x02\x01\x02",
                                                   tlv={"LY": "thanks"}))

    async def scenario(sw):
        # (Field 52 needs terminal keys, spec 8: tests/test_security_pipeline.py.)
        body = request(f35=VISA + "=28122011234567890", f55=icc, f14="2812", f25="00")
        out = await sw.handle(body)
        resp = TERM.decode(out)
        sent = TERM.decode(body)
        assert resp.mti == "0210"
        for n in m.ECHOED:
            assert resp[n] == sent[n], n
        rec = await record(sw, "000001")
        assert resp[37] == rec.rrn == "%012d" % rec.id
        assert resp[39] == "00" and resp[38] == "XYZ789"
        assert resp[55] == b"\x91\x02\x01\x02"  # the issuer's EMV data, not the terminal's
        assert resp[48] == "LY006thanks"
        assert not {2, 35, 52} & set(resp.keys())
        assert VISA.encode() not in out
        assert (rec.state, rec.response_code, rec.auth_code, rec.acquirer, rec.acquirer_ref) == (
            states.ANSWERED, "00", "XYZ789", "bank-a", "A-1")
        assert rec.pan_masked == "476173******0119" and rec.response == out

        (req, timeout), = bank_a.authorized
        assert timeout == pytest.approx(0.3)
        assert (req.mti, req.kind, req.pan, req.amount, req.currency, req.stan, req.rrn, req.txn_id) == (
            "0200", "card", VISA, 2500, "978", "000001", rec.rrn, rec.id)
        assert (req.terminal_id, req.merchant_id, req.transmission_time, req.processing_code) == (
            TID, MERCHANT, T7, "000000")
        assert (req.local_time, req.local_date, req.expiry, req.entry_mode, req.pos_condition) == (
            "153000", "0612", "2812", "051", "00")
        assert req.pin_block is None and req.icc == icc
        assert req.track2 == VISA + "=28122011234567890"
        assert req.tlv == {} and req.original is None

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_pan_from_track2_and_tlv_reach_the_acquirer_s3_s4():
    async def scenario(sw):
        resp = await call(sw, request(pan=None, f35=VISA + "=2812201", f48="LY003abcZZ002xy"))
        assert resp[39] == "00"
        req, _ = sw.acquirers["bank-a"].authorized[0]
        assert req.pan == VISA and req.tlv == {"LY": "abc", "ZZ": "xy"}

    run(scenario)


def test_decline_has_no_field_38_s3():
    bank_a = FakeAcquirer("bank-a", answer=Result(response_code="05", auth_code="XYZ789"))

    async def scenario(sw):
        resp = await call(sw, request())
        assert (resp.mti, resp[39]) == ("0210", "05")
        assert 38 not in resp and 37 in resp
        assert (await record(sw, "000001")).state == states.ANSWERED

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_wallet_code_goes_to_its_wallet_with_tag_bc_s3():
    async def scenario(sw):
        resp = await call(sw, request(pan=None, f22="031", f48="BC018281234567890123456"))
        assert resp[39] == "00"
        req, _ = sw.acquirers["wallet-a"].authorized[0]
        assert (req.kind, req.pan, req.tlv) == ("wallet", None, {"BC": "281234567890123456"})
        rec = await record(sw, "000001")
        assert rec.kind == "wallet" and rec.order_ref and rec.pan_masked is None

    run(scenario)


def test_card_scheme_qr_code_goes_to_the_card_network_as_a_token_pan_s3():
    async def scenario(sw):
        resp = await call(sw, request(pan=None, f22="031", f48="BC0196212345678901234567"))
        assert resp[39] == "00"
        req, _ = sw.acquirers["cup"].authorized[0]
        assert (req.kind, req.pan, req.entry_mode) == ("wallet", "6212345678901234567", "031")
        assert sw.acquirers["wallet-a"].authorized == []

    run(scenario)


# -- switch-side rejections (sections 3, 5) -----------------------------------------


REJECTIONS = {
    "unknown terminal 03": (request(tid="TERM9999"), "03"),
    "terminal of another merchant 03": (request(tid="OTHR0001"), "03"),
    "missing field 49 30": (request(drop=(49,)), "30"),
    "missing field 41 30": (request(drop=(41,)), "30"),
    "zero amount 13": (request(amount="000000000000"), "13"),
    "unsupported MTI 12": (request("0300"), "12"),
    "refund in 0100 12": (request("0100", pcode="200000"), "12"),
    "no card route 14": (request(pan=UNROUTED), "14"),
    "no wallet route 12": (request(pan=None, f22="031", f48="BC018991234567890123456"), "12"),
    "Luhn failure 14": (request(pan=BAD_LUHN), "14"),
    "no card number 30": (request(pan=None), "30"),
    "bar code with field 2 30": (request(f22="031", f48="BC018281234567890123456"), "30"),
    "broken field 48 30": (request(f48="BC9"), "30"),
    "card 0220 without field 90 30": (request("0220"), "30"),
    "unknown network code 12": (TERM.encode({"mti": "0800", 7: T7, 11: "000001", 41: TID, 70: "999"}), "12"),
}


@pytest.mark.parametrize("body, code", REJECTIONS.values(), ids=list(REJECTIONS))
def test_switch_answers_itself_and_never_calls_the_acquirer_s5(body, code):
    async def scenario(sw):
        resp = await call(sw, body)
        sent = TERM.decode(body)
        assert resp.mti == m.response_mti(sent.mti)
        assert resp[39] == code
        for n in m.ECHOED:
            assert resp.get(n) == sent.get(n), n
        assert 37 in resp and 38 not in resp and not {2, 35, 52} & set(resp.keys())
        for acq in sw.acquirers.values():
            assert acq.authorized == [] and acq.reversed == []
        # A retransmission gets the same code (the same message when the rejection was journaled).
        again = await call(sw, body)
        assert again[39] == code

    run(scenario)


def test_switch_rejections_after_classification_are_journaled_s6():
    async def scenario(sw):
        resp = await call(sw, request(pan=BAD_LUHN))
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code, rec.acquirer, rec.rrn) == (states.REJECTED, "14", None, resp[37])
        assert await call(sw, request(pan=BAD_LUHN)) == resp

    run(scenario)


@pytest.mark.parametrize("body, mti, journaled", [
    (b"", "0810", False),
    (b"0200garbage", "0210", False),
    (request()[:-5], "0210", True),  # 7, 11 and 41 readable: journaled under that key
    (b"\xff\xfe\x00\x01", "0810", False),
])
def test_undecodable_request_answers_30_s5(body, mti, journaled):
    async def scenario(sw):
        resp = await call(sw, body)
        assert (resp.mti, resp[39]) == (mti, "30")
        assert resp[37].startswith("N") is not journaled  # N: an RRN the journal never saw
        assert sample(sw, "payswitch_format_errors_total") == 1
        assert sw.acquirers["bank-a"].authorized == []

    run(scenario)


# -- retransmission (section 6) -----------------------------------------------------


def test_retransmission_gets_the_same_answer_without_a_second_authorization_s6():
    async def scenario(sw):
        body = request()
        first = await sw.handle(body)
        second = await sw.handle(body)
        assert first == second
        assert len(sw.acquirers["bank-a"].authorized) == 1
        assert sample(sw, "payswitch_retransmissions_total", outcome="same") == 1

    run(scenario)


@pytest.mark.parametrize("changes", [
    {"amount": "000000002600"},
    {"pan": MASTERCARD},
    {"mti": "0100"},
    {"mti": "0400", "f90": field90("0200", "000009")},
], ids=["amount", "pan", "mti-0100", "mti-0400"])
def test_same_key_different_content_answers_94_s6(changes):
    async def scenario(sw):
        first = await call(sw, request())
        assert first[39] == "00"
        clash = await call(sw, request(**changes))
        assert clash[39] == "94" and clash[37] != first[37]
        assert clash.mti == m.response_mti(changes.get("mti", "0200"))
        assert len(sw.acquirers["bank-a"].authorized) == 1
        assert sw.acquirers["bank-a"].reversed == []
        # The original keeps its answer.
        assert await call(sw, request()) == first
        assert sample(sw, "payswitch_retransmissions_total", outcome="conflict") == 1

    run(scenario)


def test_retransmission_while_the_original_is_at_the_acquirer_shares_its_answer_s6():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        body = request()
        first = asyncio.create_task(sw.handle(body))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        second = asyncio.create_task(sw.handle(body))
        clash = asyncio.create_task(sw.handle(request(amount="000000009900")))
        other_mti = asyncio.create_task(sw.handle(request("0100")))
        assert TERM.decode(await asyncio.wait_for(clash, WAIT))[39] == "94"
        assert TERM.decode(await asyncio.wait_for(other_mti, WAIT))[39] == "94"
        await asyncio.sleep(0.02)
        assert not first.done() and not second.done()
        gate.set()
        a, b = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        assert a == b and TERM.decode(a)[39] == "00"
        assert len(bank_a.authorized) == 1
        assert sw.inflight == {}

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_concurrent_identical_requests_authorize_once_s6():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        body = request()
        tasks = asyncio.gather(sw.handle(body), sw.handle(body), sw.handle(body))
        await asyncio.sleep(0.02)
        gate.set()
        answers = await asyncio.wait_for(tasks, WAIT)
        assert len(set(answers)) == 1
        assert len(bank_a.authorized) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- uncertain outcomes and the reversal worker (sections 5, 6) ---------------------


def test_uncertain_outcome_answers_68_and_is_reversed_until_acknowledged_s6():
    bank_a = FakeAcquirer("bank-a", answer="timeout", reverse_failures=2)

    async def scenario(sw):
        t0 = time.perf_counter()
        resp = await call(sw, request())
        assert time.perf_counter() - t0 >= 0.1
        assert (resp.mti, resp[39]) == ("0210", "68") and 38 not in resp
        rec = await record(sw, "000001")
        assert rec.state in (states.REVERSAL_PENDING, states.REVERSED)
        assert rec.response_code == "68" and rec.acquirer_ref == "bank-a-ref-1"
        done = await wait_state(sw, "000001", states.REVERSED)
        assert done.reversal_attempts == 2
        assert len(bank_a.reversed) == 3
        for req, timeout in bank_a.reversed:
            assert timeout == pytest.approx(0.1)
            assert (req.mti, req.txn_id, req.rrn, req.stan, req.amount, req.terminal_id) == (
                "0400", rec.id, rec.rrn, "000001", 2500, TID)
            o = req.original
            assert (o.txn_id, o.mti, o.stan, o.transmission_time, o.rrn, o.acquirer_ref, o.amount) == (
                rec.id, "0200", "000001", T7, rec.rrn, "bank-a-ref-1", 2500)
        # First try, then two repeats (0420, 0421, 0421 on a host link), all naming the same reversal.
        assert [req.attempt for req, _ in bank_a.reversed] == [0, 1, 2]
        assert len({(req.host_stan, req.host_time) for req, _ in bank_a.reversed}) == 1
        assert sample(sw, "payswitch_reversals_total", trigger="uncertain", result="queued") == 1
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="retry") == 2
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="reversed") == 1
        # Reversed: the worker leaves it alone from now on, and a retransmission replays the 68.
        await asyncio.sleep(0.15)
        assert len(bank_a.reversed) == 3
        assert (await call(sw, request()))[39] == "68"
        assert len(bank_a.authorized) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=0.1)


def test_reversal_that_raises_is_retried_by_the_worker_s6():
    class Flaky(FakeAcquirer):
        async def reverse(self, request, timeout):
            if not self.reversed:
                self.reversed.append((request, timeout))
                raise ConnectionError("link down")
            return await super().reverse(request, timeout)

    bank_a = Flaky("bank-a", answer="timeout")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"
        await wait_state(sw, "000001", states.REVERSED)
        assert len(bank_a.reversed) == 2
        assert sample(sw, "payswitch_internal_errors_total") == 0

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=0.05)


# -- terminal reversals, 0400 (sections 3, 6) ---------------------------------------


def test_0400_of_an_approved_purchase_reverses_it_once_s6():
    async def scenario(sw):
        bank_a = sw.acquirers["bank-a"]
        assert (await call(sw, request()))[39] == "00"
        orig = await record(sw, "000001")
        resp = await call(sw, reversal("000002", "000001"))
        assert (resp.mti, resp[39], resp[11]) == ("0410", "00", "000002")
        rev = await record(sw, "000002")
        assert resp[37] == rev.rrn != orig.rrn
        assert (rev.state, rev.original_id) == (states.ANSWERED, orig.id)
        # Section 6.1: recorded and answered at once, done at the acquirer in the background.
        await wait_state(sw, "000001", states.REVERSED)
        (req, _), = bank_a.reversed
        assert (req.mti, req.txn_id, req.rrn, req.stan, req.transmission_time) == (
            "0400", orig.id, orig.rrn, "000001", T7)
        assert (req.original.txn_id, req.original.acquirer_ref, req.original.auth_code) == (
            orig.id, "bank-a-ref-1", "A00001")
        assert sample(sw, "payswitch_reversals_total", trigger="terminal", result="queued") == 1
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="reversed") == 1

        # The terminal repeats it (same message, then a new STAN): 00, nothing sent again.
        assert (await call(sw, reversal("000002", "000001"))) == resp
        again = await call(sw, reversal("000003", "000001"))
        assert again[39] == "00"
        assert len(bank_a.reversed) == 1 and len(bank_a.authorized) == 1

    run(scenario)


def test_0400_of_an_unknown_original_answers_00_and_the_late_original_94_s6_1():
    async def scenario(sw):
        resp = await call(sw, reversal("000002", "000001"))
        assert (resp.mti, resp[39]) == ("0410", "00")
        void = await record(sw, "000001")
        assert (void.state, (await record(sw, "000002")).original_id) == (states.VOID, void.id)
        assert all(a.reversed == [] for a in sw.acquirers.values())
        # The original arrives late: 94, never sent to an acquirer; whatever MTI field 90 named.
        late = await call(sw, request())
        assert (late.mti, late[39]) == ("0210", "94")
        assert (await call(sw, request("0100")))[39] == "94"
        assert all(a.authorized == [] for a in sw.acquirers.values())
        # The reversal repeated: 00 again, still nothing at any acquirer.
        assert (await call(sw, reversal("000003", "000001")))[39] == "00"
        assert all(a.reversed == [] for a in sw.acquirers.values())

    run(scenario)


def test_0400_of_a_declined_or_rejected_original_answers_00_without_reversing_s6():
    bank_a = FakeAcquirer("bank-a", answer=Result(response_code="51"))

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "51"
        assert (await call(sw, request(stan="000002", pan=BAD_LUHN)))[39] == "14"
        assert (await call(sw, reversal("000003", "000001")))[39] == "00"
        assert (await call(sw, reversal("000004", "000002")))[39] == "00"
        assert bank_a.reversed == []
        assert (await record(sw, "000001")).state == states.ANSWERED
        assert (await record(sw, "000002")).state == states.REJECTED

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0400_while_the_original_is_in_flight_answers_at_once_and_the_original_68_s6_1():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        original = asyncio.create_task(sw.handle(request()))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        # Section 6.1: the 0410 does not wait for the acquirer.
        r = await asyncio.wait_for(sw.handle(reversal("000002", "000001")), 1.0)
        assert TERM.decode(r)[39] == "00" and not original.done() and bank_a.reversed == []
        gate.set()
        o = await asyncio.wait_for(original, WAIT)
        # Approved at the acquirer, but never answered 00: 68, and reversed there.
        assert TERM.decode(o)[39] == "68" and 38 not in TERM.decode(o)
        await wait_state(sw, "000001", states.REVERSED)
        assert bank_a.log == ["authorize", "reverse"]
        assert bank_a.reversed[0][0].original.acquirer_ref == "bank-a-ref-1"
        # A retransmission of the original gets the same 68.
        assert TERM.decode(await sw.handle(request()))[39] == "68"
        assert len(bank_a.authorized) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_an_approval_answered_68_because_reversed_in_flight_carries_no_issuer_emv_data_s6_1():
    """Field 55 of the acquirer's approval (an ARPC, issuer scripts) must not reach a chip
    that is told 68: it goes with the acquirer's own answer only."""
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", gate=gate, answer=Result(
        response_code="00", auth_code="A00001", acquirer_ref="r", icc=b"\x91\x02\x01\x02"))

    async def scenario(sw):
        original = asyncio.create_task(sw.handle(request(f55=bytes.fromhex("9F2608AABBCCDDEEFF0011"))))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        assert TERM.decode(await sw.handle(reversal("000002", "000001")))[39] == "00"
        gate.set()
        o = TERM.decode(await asyncio.wait_for(original, WAIT))
        assert o[39] == "68" and 55 not in o and 38 not in o
        await wait_state(sw, "000001", states.REVERSED)

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0400_whose_reversal_fails_answers_00_and_the_worker_finishes_it_s6():
    bank_a = FakeAcquirer("bank-a", reverse_failures=1)

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)
        assert len(bank_a.reversed) == 2
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="retry") == 1
        assert sample(sw, "payswitch_reversals_total", trigger="queue", result="reversed") == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0400_goes_to_the_acquirer_that_approved_after_a_fallback_s6():
    async def scenario(sw):
        sw.acquirers["bank-a"].up = False
        assert (await call(sw, request(pan=MASTERCARD)))[39] == "00"
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)
        assert sw.acquirers["bank-a"].reversed == []
        assert sw.acquirers["bank-b"].reversed[0][0].original.acquirer_ref == "bank-b-ref-1"

    run(scenario)


# -- completions, 0220 (section 3) --------------------------------------------------


def test_0220_completes_the_preauthorization_at_its_own_acquirer_s3():
    async def scenario(sw):
        sw.acquirers["bank-a"].up = False  # the pre-authorization falls back to bank-b
        pre = await call(sw, request("0100", pan=MASTERCARD))
        assert (pre.mti, pre[39]) == ("0110", "00")
        sw.acquirers["bank-a"].up = True
        done = await call(sw, request("0220", stan="000002", pan=MASTERCARD, amount="000000002000",
                                      f90=field90("0100", "000001")))
        assert (done.mti, done[39], done[4]) == ("0230", "00", "000000002000")
        assert sw.acquirers["bank-a"].authorized == []
        (_, _), (req, _) = sw.acquirers["bank-b"].authorized
        orig = await record(sw, "000001")
        assert (req.mti, req.amount, req.stan, req.pan) == ("0220", 2000, "000002", MASTERCARD)
        assert (req.original.txn_id, req.original.mti, req.original.amount) == (orig.id, "0100", 2500)
        assert (req.original.acquirer_ref, req.original.auth_code) == ("bank-b-ref-1", "A00001")
        rec = await record(sw, "000002")
        assert (rec.acquirer, rec.state, rec.response_code) == ("bank-b", states.ANSWERED, "00")

    run(scenario)


@pytest.mark.parametrize("setup", ["unknown", "declined", "reversed"])
def test_0220_of_a_preauthorization_that_cannot_be_completed_answers_25_s3(setup):
    bank_a = FakeAcquirer("bank-a", answers=[Result(response_code="05")] if setup == "declined" else [])

    async def scenario(sw):
        if setup != "unknown":
            await call(sw, request("0100"))
        if setup == "reversed":
            assert (await call(sw, reversal("000003", "000001", orig_mti="0100")))[39] == "00"
        calls = len(bank_a.authorized)
        resp = await call(sw, request("0220", stan="000002", f90=field90("0100", "000001")))
        assert (resp.mti, resp[39]) == ("0230", "25")
        assert len(bank_a.authorized) == calls
        assert (await record(sw, "000002")).state == states.REJECTED

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0220_naming_a_purchase_is_not_a_completion_s3():
    async def scenario(sw):
        assert (await call(sw, request("0200")))[39] == "00"
        resp = await call(sw, request("0220", stan="000002", f90=field90("0200", "000001")))
        # Completing a purchase would debit the cardholder twice (and count twice in 0500 totals).
        assert resp[39] == "25"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario)


def test_0220_of_a_preauthorization_the_terminal_reversed_answers_25_while_the_reversal_is_pending_s3():
    bank_a = FakeAcquirer("bank-a", reverse_failures=1000)

    async def scenario(sw):
        assert (await call(sw, request("0100")))[39] == "00"
        assert (await call(sw, reversal("000002", "000001", orig_mti="0100")))[39] == "00"
        assert (await record(sw, "000001")).state == states.REVERSAL_PENDING
        resp = await call(sw, request("0220", stan="000003", f90=field90("0100", "000001")))
        assert resp[39] == "25"
        assert len(bank_a.authorized) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- settlement, 0500 (section 3) ---------------------------------------------------


def test_0500_checks_terminal_totals_against_the_journal_s3():
    bank_a = FakeAcquirer("bank-a", answers=[None, None, None, Result(response_code="05"), None])

    async def scenario(sw):
        assert (await call(sw, request(stan="000001", amount="000000001000")))[39] == "00"
        assert (await call(sw, request(stan="000002", amount="000000000700", pcode="200000")))[39] == "00"
        assert (await call(sw, request(stan="000003", amount="000000000300")))[39] == "00"
        assert (await call(sw, request(stan="000004", amount="000000000900")))[39] == "05"
        assert (await call(sw, request(stan="000005", amount="000000000500")))[39] == "00"
        assert (await call(sw, reversal("000006", "000005")))[39] == "00"
        assert (await call(sw, request("0100", stan="000007", amount="000000009900")))[39] == "00"
        assert (await call(sw, request(stan="000008", amount="000000000050", tid="TERM0002")))[39] == "00"

        wrong = await call(sw, settlement("000010", credits=1, debits=2, credit_amount=700, debit_amount=1400))
        assert (wrong.mti, wrong[39]) == ("0510", "95")
        assert 37 in wrong and wrong[11] == "000010"
        # A refused 0500 does not move the cut-off: the corrected one matches.
        right = await call(sw, settlement("000011", credits=1, debits=2, credit_amount=700, debit_amount=1300))
        assert (right.mti, right[39]) == ("0510", "00")
        # After an accepted 0500 the totals start again from zero.
        assert (await call(sw, settlement("000012")))[39] == "00"
        assert (await call(sw, request(stan="000013", amount="000000000200")))[39] == "00"
        assert (await call(sw, settlement("000014", debits=1, debit_amount=200)))[39] == "00"
        # The other terminal's totals are its own.
        assert (await call(sw, settlement("000001", debits=1, debit_amount=50, tid="TERM0002")))[39] == "00"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0500_counts_an_approved_completion_as_a_debit_s3():
    async def scenario(sw):
        assert (await call(sw, request("0100", amount="000000005000")))[39] == "00"
        assert (await call(sw, request("0220", stan="000002", amount="000000004200",
                                       f90=field90("0100", "000001"))))[39] == "00"
        assert (await call(sw, settlement("000003", debits=1, debit_amount=4200)))[39] == "00"

    run(scenario)


# -- network management, 0800 (section 3) -------------------------------------------


@pytest.mark.parametrize("code", ["001", "002", "301"])
def test_0800_answers_0810_with_field_70_and_writes_no_journal_s3(code):
    async def scenario(sw):
        resp = await call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000001", 41: TID, 70: code}))
        assert (resp.mti, resp[39], resp[70], resp[11], resp[41]) == ("0810", "00", code, "000001", TID)
        assert resp[37].startswith("N")
        assert await record(sw, "000001") is None
        assert sample(sw, "payswitch_requests_total", kind="network", mclass="network", code="00") == 1

    run(scenario)


# -- fallback between acquirers -----------------------------------------------------


def test_fallback_skips_an_unhealthy_first_acquirer():
    async def scenario(sw):
        sw.acquirers["bank-a"].up = False
        resp = await call(sw, request(pan=MASTERCARD))
        assert resp[39] == "00"
        assert sw.acquirers["bank-a"].authorized == []
        assert len(sw.acquirers["bank-b"].authorized) == 1
        assert (await record(sw, "000001")).acquirer == "bank-b"

    run(scenario)


def test_fallback_on_a_certain_91_but_not_on_an_uncertain_outcome():
    bank_a = FakeAcquirer("bank-a", answers=[Result(response_code="91"), "timeout"])

    async def scenario(sw):
        resp = await call(sw, request(pan=MASTERCARD))
        assert resp[39] == "00" and resp[38] == "A00001"
        assert len(bank_a.authorized) == 1 and len(sw.acquirers["bank-b"].authorized) == 1
        # Maybe approved at bank-a: never send it to bank-b as well.
        resp = await call(sw, request(stan="000002", pan=MASTERCARD))
        assert resp[39] == "68"
        assert len(bank_a.authorized) == 2 and len(sw.acquirers["bank-b"].authorized) == 1
        rec = await wait_state(sw, "000002", states.REVERSED)
        assert rec.acquirer == "bank-a" and len(bank_a.reversed) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=0.05)


def test_last_acquirer_of_a_route_is_tried_even_when_unhealthy():
    async def scenario(sw):
        sw.acquirers["bank-a"].up = False
        assert (await call(sw, request()))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario)


def test_91_from_every_acquirer_answers_91():
    a = FakeAcquirer("bank-a", answer=Result(response_code="91"))
    b = FakeAcquirer("bank-b", answer=Result(response_code="91"))

    async def scenario(sw):
        resp = await call(sw, request(pan=MASTERCARD))
        assert resp[39] == "91"
        assert len(a.authorized) == len(b.authorized) == 1
        assert (await record(sw, "000001")).state == states.ANSWERED

    run(scenario, acquirers=fakes(**{"bank-a": a, "bank-b": b}))


def test_fallback_still_answers_within_response_timeout_s6():
    class SlowRefusal(FakeAcquirer):
        async def authorize(self, request, timeout):
            self.authorized.append((request, timeout))
            await asyncio.sleep(timeout)  # e.g. waited for a connection, never sent
            return Result(response_code="91")

    a = SlowRefusal("bank-a")
    b = FakeAcquirer("bank-b", answer="timeout")

    async def scenario(sw):
        t0 = time.perf_counter()
        resp = await call(sw, request(pan=MASTERCARD))
        elapsed = time.perf_counter() - t0
        assert resp[39] in ("68", "91")
        assert elapsed < 0.4 + 0.15, f"answered after {elapsed:.2f} s, response_timeout is 0.4 s"

    run(scenario, acquirers=fakes(**{"bank-a": a, "bank-b": b}), timeout=0.35, response_timeout=0.4)


# -- crash recovery ----------------------------------------------------------------


def test_start_queues_transactions_found_sent_for_reversal():
    async def seed(sw):
        masked, pan_hash = pan_protect(VISA, sw.key)
        rec, created = await sw.journal.insert(TxnRecord(
            terminal_id=TID, merchant_id=MERCHANT, mti="0200", stan="000001", transmission_time=T7,
            processing_code="000000", amount=2500, currency="978", acquirer="bank-a",
            pan_masked=masked, pan_hash=pan_hash,
            content_digest=m.content_digest(TERM.decode(request()), digest_key(sw.key)),
        ))
        assert created
        await sw.journal.update(rec.id, state=states.SENT, acquirer_ref="pre-crash-ref")

    async def scenario(sw):
        rec = await wait_state(sw, "000001", states.REVERSED)
        (req, _), = sw.acquirers["bank-a"].reversed
        assert (req.mti, req.txn_id, req.rrn) == ("0400", rec.id, rec.rrn)
        assert req.original.acquirer_ref == "pre-crash-ref"
        # The terminal retransmits: it must not be authorized a second time.
        resp = await call(sw, request())
        assert resp[39] == "96" and resp[37] == rec.rrn
        assert sw.acquirers["bank-a"].authorized == []

    run(scenario, before_start=seed)


# -- our own failures --------------------------------------------------------------


def test_acquirer_exception_answers_96_counts_an_internal_error_and_reverses_s5_s6():
    bank_a = FakeAcquirer("bank-a", answers=[RuntimeError("adapter bug")])

    async def scenario(sw):
        resp = await call(sw, request())
        assert (resp.mti, resp[39], resp[11]) == ("0210", "96", "000001")
        assert 38 not in resp and not {2, 35, 52} & set(resp.keys())
        assert sw.metrics.internal_errors._value.get() == 1
        assert b"payswitch_internal_errors_total 1.0" in sw.metrics.render()
        assert sample(sw, "payswitch_requests_total", kind="card", mclass="financial", code="96") == 1
        assert sw.inflight == {}
        # It may have left before the adapter broke: reversed like any uncertain outcome.
        rec = await wait_state(sw, "000001", states.REVERSED)
        assert rec.response_code == "96" and len(bank_a.reversed) == 1
        # The terminal's 0400 for it is answered 00 (section 6) without a second reversal.
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        assert len(bank_a.reversed) == 1
        # The switch keeps working.
        assert (await call(sw, request(stan="000003")))[39] == "00"

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_0400_while_an_original_that_raises_is_in_flight_answers_00_and_the_original_68_s6_1():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", answers=[RuntimeError("adapter bug")], gate=gate, reverse_failures=1)

    async def scenario(sw):
        original = asyncio.create_task(sw.handle(request()))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        rev = asyncio.create_task(sw.handle(reversal("000002", "000001")))
        await asyncio.sleep(0.02)
        gate.set()
        o, r = await asyncio.wait_for(asyncio.gather(original, rev), WAIT)
        assert TERM.decode(o)[39] == "68" and TERM.decode(r)[39] == "00"
        await wait_state(sw, "000001", states.REVERSED)

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_adapter_overrunning_its_deadline_answers_68_and_reverses_s6(monkeypatch):
    monkeypatch.setattr(service, "_ADAPTER_GRACE", 0.05)
    hang = asyncio.Event()  # never set

    class Hung(FakeAcquirer):
        async def authorize(self, request, timeout):
            self.authorized.append((request, timeout))
            await hang.wait()

    bank_a = Hung("bank-a")

    async def scenario(sw):
        t0 = time.perf_counter()
        resp = await call(sw, request())
        assert 0.1 <= time.perf_counter() - t0 < 1.0
        assert resp[39] == "68"
        assert sw.metrics.internal_errors._value.get() == 1
        await wait_state(sw, "000001", states.REVERSED)
        assert len(bank_a.reversed) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), timeout=0.05)


def test_retransmission_waiting_on_an_original_that_raised_also_answers_96_s5():
    gate = asyncio.Event()
    bank_a = FakeAcquirer("bank-a", answers=[RuntimeError("adapter bug")], gate=gate)

    async def scenario(sw):
        body = request()
        first = asyncio.create_task(sw.handle(body))
        await asyncio.wait_for(bank_a.entered.wait(), WAIT)
        second = asyncio.create_task(sw.handle(body))
        await asyncio.sleep(0.01)
        gate.set()
        a, b = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        assert a == b and TERM.decode(a)[39] == "96"
        assert len(bank_a.authorized) == 1

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


def test_close_right_after_an_uncertain_answer_returns():
    bank_a = FakeAcquirer("bank-a", answer=Result(response_code="68", uncertain=True))

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "68"  # sets the worker's wake-up; close() follows at once

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}), close_timeout=0.5)


def test_repeated_0400_whose_first_copy_died_mid_flight_answers_00_and_reverses_s6():
    async def seed(sw):
        orig, _ = await sw.journal.insert(TxnRecord(
            terminal_id=TID, merchant_id=MERCHANT, mti="0200", stan="000001", transmission_time=T7,
            processing_code="000000", amount=2500, currency="978", acquirer="bank-a",
            content_digest=m.content_digest(TERM.decode(request()), digest_key(sw.key)),
        ))
        await sw.journal.update(orig.id, state=states.SENT)
        await sw.journal.update(orig.id, state=states.ANSWERED, response_code="00", auth_code="A00001",
                          acquirer_ref="ref-1", response=request())
        # The 0400 was journaled, then the process died before reversing or answering.
        await sw.journal.insert(TxnRecord(
            terminal_id=TID, merchant_id=MERCHANT, mti="0400", stan="000002", transmission_time=T7,
            processing_code="000000", amount=2500, currency="978",
            content_digest=m.content_digest(TERM.decode(reversal("000002", "000001")), digest_key(sw.key)),
        ))

    async def scenario(sw):
        resp = await call(sw, reversal("000002", "000001"))  # the terminal repeats it
        assert resp[39] == "00"
        await wait_state(sw, "000001", states.REVERSED, timeout=0.5)
        assert len(sw.acquirers["bank-a"].reversed) == 1

    run(scenario, before_start=seed)


# -- metrics -----------------------------------------------------------------------


def test_requests_total_by_kind_class_and_code():
    bank_a = FakeAcquirer("bank-a", answers=[None, Result(response_code="51")])

    async def scenario(sw):
        await call(sw, request())  # card financial 00
        await call(sw, request(stan="000002"))  # card financial 51
        await call(sw, request("0100", stan="000003", pan=MASTERCARD))  # card auth 00 (bank-a: default answer)
        await call(sw, request(stan="000004", pan=BAD_LUHN))  # rejected after classification
        await call(sw, request(stan="000005", tid="TERM9999"))  # rejected before
        await call(sw, request(stan="000006", pan=None, f22="031", f48="BC018281234567890123456"))
        await call(sw, reversal("000007", "000001"))
        await call(sw, settlement("000008"))
        await call(sw, TERM.encode({"mti": "0800", 7: T7, 11: "000009", 41: TID, 70: "301"}))
        await call(sw, request())  # retransmission of the first

        def count(kind, mclass, code):
            return sample(sw, "payswitch_requests_total", kind=kind, mclass=mclass, code=code)

        assert count("card", "financial", "00") == 2
        assert count("card", "financial", "51") == 1
        assert count("card", "auth", "00") == 1
        assert count("unknown", "financial", "14") == 1
        assert count("unknown", "financial", "03") == 1
        assert count("wallet", "financial", "00") == 1
        assert count("settlement", "settlement", "95") == 1
        assert count("network", "network", "00") == 1
        assert count("card", "reversal", "00") == 1  # a terminal's 0400 is a card payment's
        total = sum(s.value for metric in sw.metrics.registry.collect() if metric.name == "payswitch_requests"
                    for s in metric.samples if s.name == "payswitch_requests_total")
        assert total == 10
        assert sample(sw, "payswitch_request_seconds_count", kind="card") == 5

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- lifecycle ---------------------------------------------------------------------


def test_start_and_close_drive_the_acquirers_and_the_worker():
    acquirers = fakes()

    async def scenario(sw):
        assert all(a.started for a in acquirers.values())
        assert [t.get_name() for t in sw._tasks] == ["reversal-sweeper"]
        return sw

    sw = run(scenario, acquirers=acquirers)
    assert all(a.closed for a in acquirers.values())
    assert all(t.done() for t in sw._tasks)


# -- reload ---------------------------------------------------------------------------


def test_reload_swaps_acquirer_timeouts_and_refuses_a_new_acquirer():
    async def scenario(sw):
        assert sw.acquirer_cfg["bank-a"].timeout == 0.3
        sw.reload(make_config(timeout=0.25))
        assert sw.acquirer_cfg["bank-a"].timeout == 0.25
        resp = await call(sw, request())
        assert resp[39] == "00"
        assert sw.acquirers["bank-a"].authorized[-1][1] == 0.25  # the new timeout is the one used
        bigger = make_config()
        bigger.acquirers.append(config_mod.Acquirer(name="bank-z", type="card", endpoints=["127.0.0.1:1"]))
        with pytest.raises(config_mod.ConfigError, match=r"acquirers changed \(bank-z added at `\$\.acquirers\[4\]`\); that needs a restart"):
            sw.reload(bigger)
        assert sw.acquirer_cfg["bank-a"].timeout == 0.25  # refused: nothing changed

    run(scenario)


def test_settle_heap_freezes_start_up_and_widens_the_young_generation():
    import gc

    from switch.io.app import GEN0_THRESHOLD, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
        # Cycles made after start-up are still collected.
        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        import weakref

        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
