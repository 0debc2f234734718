"""CityCardAcquirer: Request mapping (sans-I/O) and against the simulator process.

Each test drives the adapter on the default asyncio loop and on uvloop; the
simulator (trio) runs in its own process, started once for the module.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import pytest
import uvloop

from adapters.citycard import CityCardAcquirer, crypto
from adapters.citycard.centre import DEMO_MK
from adapters.citycard.mapping import Refusal, build_message, centre_ref, parse_cc, to_result
from adapters.citycard.protocol import (
    Balance,
    Debit,
    FrameBuffer,
    Load,
    Offline,
    Response,
    Reverse,
    decode_request,
    encode,
)
from switch.core.acquirer import REFUSED, REVERSED, RETRY, Original, Request, Result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TID = "DEMO0001"
BLACK = "8800000000000002"
_txn = iter(range(1000, 10**6))


def cc(card, counter, amount, serial=1, balance=10_000, tac=None):
    counter5, serial10 = f"{counter:05d}", f"{serial:010d}"
    if tac is None:
        tac = crypto.tac(crypto.derive_dk(DEMO_MK, card), card, counter5, f"{amount:012d}", serial10, TID)
    return f"{counter5}{balance:012d}{serial10}{tac}"


def request(card, *, mti="0200", pc="000000", amount=None, tlv=None, txn_id=None, original=None):
    txn_id = next(_txn) if txn_id is None else txn_id
    return Request(
        txn_id=txn_id, kind="citycard", mti=mti, processing_code=pc, amount=amount, currency="156",
        terminal_id=TID, merchant_id="DEMO00000000001", stan=f"{txn_id % 10**6:06d}",
        transmission_time="1124070000", rrn=f"{txn_id:012d}", pan=card, tlv=tlv or {}, original=original,
    )


def debit(card, counter, amount, txn_id=None, **kw):
    return request(card, amount=amount, txn_id=txn_id, tlv={"CC": cc(card, counter, amount, **kw)})


def offline(card, counter, amount):
    return request(card, mti="0220", amount=amount, tlv={"CC": cc(card, counter, amount)})


def top_up(card, counter, amount, mac1=None):
    counter5, amount12 = f"{counter:05d}", f"{amount:012d}"
    dk = crypto.derive_dk(DEMO_MK, card)
    m1 = mac1 or crypto.mac1(dk, card, counter5, amount12, "0000000001", TID)
    return request(card, pc="210000", amount=amount, tlv={"CC": cc(card, counter, amount, tac="0" * 8), "M1": m1})


def reversal_of(req, result):
    original = Original(
        txn_id=req.txn_id, mti=req.mti, processing_code=req.processing_code, amount=req.amount,
        currency=req.currency, stan=req.stan, transmission_time=req.transmission_time, rrn=req.rrn,
        acquirer_ref=result.acquirer_ref,
    )
    return request(req.pan, mti="0400", pc=req.processing_code, amount=req.amount, original=original)


# -- mapping (no I/O) -------------------------------------------------------------------


def test_parse_cc():
    data = parse_cc("00001" "000000010000" "0000000001" "69c169c3")
    assert (data.counter, data.reported_balance, data.serial, data.tac) == ("00001", 10_000, "0000000001", "69C169C3")
    for bad in (None, "", "0001000000010000000000000169C169C3", "00001000000010000000000000169C169CZ",
                "00001000000010000000000000169C169C30"):
        with pytest.raises(Refusal) as err:
            parse_cc(bad)
        assert err.value.code == "30"


def test_build_message_by_mti_and_processing_code():
    card = "8800123456789015"
    d = build_message(debit(card, 1, 2500, txn_id=7))
    assert isinstance(d, Debit) and d.ref == centre_ref(7, "000000000007") and d.amount == 2500
    assert d.tac == crypto.tac(crypto.derive_dk(DEMO_MK, card), card, "00001", "000000002500", "0000000001", TID)
    assert isinstance(build_message(offline(card, 1, 2500)), Offline)
    assert isinstance(build_message(request(card, pc="310000")), Balance)
    assert isinstance(build_message(top_up(card, 1, 100)), Load)
    rev = build_message(request(card, mti="0400", original=Original(
        txn_id=7, mti="0200", processing_code="000000", amount=1, currency=None, stan="000007",
        transmission_time="1124070000", rrn="000000000007")))
    assert rev == Reverse(id=0, ref="7.000000000007")


@pytest.mark.parametrize(
    "req, code",
    [
        (request("8800123456789015", amount=100), "30"),  # no CC
        (request("8800123456789015", pc="210000", amount=100, tlv={"CC": cc("8800123456789015", 1, 100)}), "30"),
        (top_up("8800123456789015", 1, 100, mac1="XYZ"), "30"),
        (request(None, amount=100, tlv={"CC": cc("8800123456789015", 1, 100)}), "30"),
        (request("8800123456789015", tlv={"CC": cc("8800123456789015", 1, 100)}), "30"),  # no amount
        (request("8800123456789015", amount=0, tlv={"CC": cc("8800123456789015", 1, 0)}), "13"),
        (request("8800123456789015", pc="200000", amount=100), "12"),  # refund
        (request("8800123456789015", mti="0100", amount=100), "12"),
        (request("8800123456789015", mti="0400"), "25"),
        (request("8800123456789015", pc="310000", amount=500), "13"),  # section 7: field 4 zero
    ],
)
def test_refusals(req, code):
    with pytest.raises(Refusal) as err:
        build_message(req)
    assert err.value.code == code
    assert asyncio.run(_authorize_offline(req)).response_code == code


async def _authorize_offline(req):
    acq = CityCardAcquirer(endpoints=[("127.0.0.1", 9)], connect_timeout=0.01)
    return await acq.authorize(req, 1.0)


def test_to_result():
    card = "8800123456789015"
    d = build_message(debit(card, 1, 2500))
    r = to_result(d, Response(id=1, code="00", balance=7500, auth="000001", ref=d.ref))
    assert (r.response_code, r.tlv, r.auth_code, r.acquirer_ref, r.uncertain) == (
        "00", {"CB": "000000007500"}, "000001", d.ref, False)
    assert to_result(d, Response(id=1, code="00", balance=-5, ref=d.ref)).tlv == {}
    assert to_result(d, Response(id=1, code="51", balance=10, auth="x", ref=d.ref)).auth_code is None
    # Fields 38 (an6) and 39 (an2) take ASCII letters and digits only: anything else is not an answer to pass on.
    wide = "\u4ea4\u6613" * 3  # six letters, none of them ASCII
    assert to_result(d, Response(id=1, code="00", auth=wide, ref=d.ref)).auth_code is None
    for odd_code in ("\u4ea4\u6613", "Z9", "0", "000"):  # not a section 5 code: what happened is unknown
        odd = to_result(d, Response(id=1, code=odd_code, ref=d.ref))
        assert (odd.response_code, odd.uncertain) == ("96", True)
    assert to_result(d, Response(id=1, code="96", ref=d.ref)).uncertain is False  # the centre's own 96: nothing booked
    wrong = to_result(d, Response(id=1, code="00", ref="other"))
    assert (wrong.response_code, wrong.uncertain) == ("96", True)
    # The protocol echoes the ref: an approval that does not say whose it is approves nothing.
    for message in (d, build_message(offline(card, 1, 2500)), build_message(top_up(card, 1, 100))):
        unnamed = to_result(message, Response(id=1, code="00", balance=1, auth="000001", mac2="ABCDEF01"))
        assert (unnamed.response_code, unnamed.uncertain, unnamed.tlv) == ("96", True, {})
    # A decline without the ref (the centre's 30 to a request it could not read) stays a decline.
    assert to_result(d, Response(id=1, code="30")).response_code == "30"
    assert to_result(d, Response(id=1, code="51", ref="other")).response_code == "96"
    inquiry = build_message(request(card, pc="310000"))
    assert to_result(inquiry, Response(id=1, code="00", balance=5)).tlv == {"CB": "000000000005"}  # no ref
    # Section 7: an inquiry's answer carries the balance; one CB cannot say approves nothing.
    for balance in (None, -1, 10**12):
        told = to_result(inquiry, Response(id=1, code="00", balance=balance, auth="000001"))
        assert (told.response_code, told.uncertain, told.tlv, told.auth_code) == ("96", False, {}, None)
    assert to_result(inquiry, Response(id=1, code="62")).response_code == "62"
    ld = build_message(top_up(card, 1, 100))
    no_mac2 = to_result(ld, Response(id=1, code="00", balance=1, ref=ld.ref))
    assert (no_mac2.response_code, no_mac2.uncertain) == ("96", True)
    assert to_result(ld, Response(id=1, code="00", balance=1, ref=ld.ref, mac2="abcdef01")).tlv["M2"] == "ABCDEF01"


# -- against the simulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.citycard.sim", "--port", "0", "--blacklist", BLACK],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    host, port = line.split()[-1].rsplit(":", 1)
    yield host, int(port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    proc.stdout.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a coroutine on the default asyncio loop, then again on uvloop."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    # The simulator outlives a test: each loop gets its own card numbers.
    tag = "1" if request.param == "asyncio" else "2"
    run.card = lambda n: f"8800{tag}{n:011d}"
    return run


def drive(run, endpoint, scenario, **kwargs):
    async def main():
        acq = CityCardAcquirer(endpoints=[endpoint], **kwargs)
        await acq.start()
        try:
            return await scenario(acq)
        finally:
            await acq.close()

    return run(main())


def test_debit_overdraw_replay_wrong_tac_blacklist(sim, run):
    card = run.card(1001)

    async def scenario(acq):
        assert acq.healthy()
        ok = await acq.authorize(debit(card, 1, 2500), 5)
        assert (ok.response_code, ok.tlv["CB"], len(ok.auth_code)) == ("00", "000000007500", 6)
        over = await acq.authorize(debit(card, 2, 7501), 5)
        assert (over.response_code, over.tlv["CB"]) == ("51", "000000007500")
        assert (await acq.authorize(debit(card, 1, 100), 5)).response_code == "94"
        assert (await acq.authorize(debit(card, 3, 100, tac="DEADBEEF"), 5)).response_code == "A0"
        assert (await acq.authorize(debit(BLACK, 1, 100), 5)).response_code == "62"
        assert (await acq.authorize(debit("9900000000000001", 1, 100), 5)).response_code == "14"
        inquiry = await acq.authorize(request(card, pc="310000"), 5)
        assert (inquiry.response_code, inquiry.tlv) == ("00", {"CB": "000000007500"})

    drive(run, sim, scenario)


def test_retry_of_same_transaction_is_idempotent(sim, run):
    card = run.card(1002)

    async def scenario(acq):
        req = debit(card, 1, 1000)
        first = await acq.authorize(req, 5)
        again = await acq.authorize(req, 5)
        assert first == again and first.acquirer_ref == centre_ref(req.txn_id, req.rrn)
        assert (await acq.authorize(request(card, pc="310000"), 5)).tlv["CB"] == "000000009000"

    drive(run, sim, scenario)


def test_top_up_mac2_verifies(sim, run):
    card = run.card(1003)

    async def scenario(acq):
        result = await acq.authorize(top_up(card, 4, 5000), 5)
        assert (result.response_code, result.tlv["CB"]) == ("00", "000000015000")
        dk = crypto.derive_dk(DEMO_MK, card)
        assert result.tlv["M2"] == crypto.mac2(dk, card, "00004", "000000005000", "0000000001", TID)
        assert (await acq.authorize(top_up(card, 5, 5000, mac1="0BADC0DE"), 5)).response_code == "A0"

    drive(run, sim, scenario)


def test_duplicate_offline_upload_counted_once(sim, run):
    card = run.card(1004)

    async def scenario(acq):
        first = await acq.authorize(offline(card, 9, 1200), 5)
        second = await acq.authorize(offline(card, 9, 1200), 5)  # re-upload: a new transaction
        assert (first.response_code, second.response_code) == ("00", "00")
        assert first.tlv["CB"] == second.tlv["CB"] == "000000008800"

    drive(run, sim, scenario)


def test_reversal_restores_balance_and_is_idempotent(sim, run):
    card = run.card(1005)

    async def scenario(acq):
        req = debit(card, 1, 3000)
        result = await acq.authorize(req, 5)
        assert result.tlv["CB"] == "000000007000"
        rev = reversal_of(req, result)
        assert await acq.reverse(rev, 5) == REVERSED
        assert await acq.reverse(rev, 5) == REVERSED
        assert (await acq.authorize(rev, 5)).response_code == "00"  # a terminal 0400 through authorize
        assert (await acq.authorize(request(card, pc="310000"), 5)).tlv["CB"] == "000000010000"
        # Reversing what the centre never saw is acknowledged too.
        assert await acq.reverse(reversal_of(debit(card, 2, 1), Result(response_code="00")), 5) == REVERSED

    drive(run, sim, scenario)


def test_many_in_flight_on_one_connection_and_ledger_conserves(sim, run):
    cards = [run.card(2000 + i) for i in range(20)]

    async def scenario(acq):
        before = await acq.ledger()
        assert before.balance_total + before.debits - before.loads == before.issued
        reqs = [debit(card, n, 100 * n) for card in cards for n in (1, 2, 3)]
        results = await asyncio.gather(*(acq.authorize(r, 5) for r in reqs))
        approved = sum(r.amount for r, res in zip(reqs, results) if res.response_code == "00")
        after = await acq.ledger(page_size=7)  # several pages
        assert after.debits - before.debits == approved
        assert after.balance_total == sum(after.balances.values())
        assert after.balance_total + after.debits - after.loads == after.issued
        assert all(after.balances[card] <= 10_000 for card in cards)

    # One connection: the responses come back multiplexed by request id.
    drive(run, sim, scenario, connections=1)


def test_no_connection_is_91_not_uncertain(run):
    async def scenario(acq):
        assert not acq.healthy()
        result = await acq.authorize(debit("8800000000003001", 1, 100), 1)
        assert (result.response_code, result.uncertain) == ("91", False)
        assert acq.metrics.get("unavailable", op="debit") == 1
        assert await acq.reverse(reversal_of(debit("8800000000003001", 1, 100), result), 1) == RETRY

    with socket_closed_port() as port:
        drive(run, ("127.0.0.1", port), scenario, connect_timeout=0.2)


class socket_closed_port:
    """A local port nothing listens on."""

    def __enter__(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


class FakeCentre:
    """A scripted centre on asyncio (same process, asyncio only)."""

    def __init__(self, behaviour, port=0):
        self.behaviour = behaviour  # async (request, writer, connection number) -> None
        self.port = port  # 0: any free port
        self.connections = 0
        self.received: list = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.endpoint = self.server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        frames = FrameBuffer()
        try:
            while data := await reader.read(65536):
                for payload in frames.feed(data):
                    req = decode_request(payload)
                    self.received.append(req)
                    await self.behaviour(req, writer, number)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def test_timeout_is_68_uncertain_and_late_answer_is_ignored(run):
    async def main():
        async def late(req, writer, number):
            await asyncio.sleep(0.3)
            writer.write(encode(Response(id=req.id, code="00", balance=1, ref=getattr(req, "ref", None))))

        async with FakeCentre(late) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            req = debit("8800000000003002", 1, 100)
            result = await acq.authorize(req, 0.05)
            assert (result.response_code, result.uncertain) == ("68", True)
            assert result.acquirer_ref == centre_ref(req.txn_id, req.rrn)
            inquiry = await acq.authorize(request("8800000000003002", pc="310000"), 0.05)
            assert (inquiry.response_code, inquiry.uncertain) == ("68", False)  # nothing to reverse
            # Given up on: no longer in flight (the least-loaded link choice counts these).
            assert sum(link.in_flight for link in acq._links) == 0
            await asyncio.sleep(0.4)  # the late answers arrive and are dropped
            assert acq.healthy()
            assert (await acq.authorize(req, 1)).response_code == "00"
            # What an SRE sees: both unanswered requests, both late answers.
            assert acq.metrics.get("timeouts", op="debit") == acq.metrics.get("timeouts", op="balance") == 1
            assert acq.metrics.get("late_answers") == 2
            await acq.close()

    run(main())


def test_connection_lost_after_sending_is_uncertain_then_reconnects(run):
    async def main():
        async def drop_first(req, writer, number):
            if number == 1:
                writer.transport.abort()
            else:
                writer.write(encode(Response(id=req.id, code="00", ref=req.ref)))

        async with FakeCentre(drop_first) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint], backoff=(0.01, 0.05))
            await acq.start()
            req = debit("8800000000003003", 1, 100)
            lost = await acq.authorize(req, 2)
            assert (lost.response_code, lost.uncertain) == ("91", True)
            assert acq.metrics.get("lost_in_flight", op="debit") == 1
            for _ in range(100):
                if acq.healthy():
                    break
                await asyncio.sleep(0.01)
            rev = reversal_of(req, lost)
            assert await acq.reverse(rev, 2) == REVERSED
            assert centre.received[-1] == Reverse(id=centre.received[-1].id, ref=lost.acquirer_ref)
            assert centre.connections == 2
            await acq.close()

    run(main())


def test_a_reversal_counts_as_done_only_when_the_centre_acknowledges_that_very_ref(run, caplog):
    # The centre answers the reverse by the ref's last digit: another ref's 00,
    # a 00 naming no ref, a transient 96, a considered 51, its own 00, and silence.
    answers = {"1": ("00", "other"), "2": ("00", None), "3": ("96", "same"), "4": ("51", "same"), "5": ("00", "same")}

    async def main():
        async def by_ref(req, writer, number):
            if req.ref[-1] not in answers:
                return
            code, ref = answers[req.ref[-1]]
            writer.write(encode(Response(id=req.id, code=code, ref=req.ref if ref == "same" else ref)))

        async with FakeCentre(by_ref) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            outcomes = []
            for n in "12345":
                original = debit("8800000000003007", 1, 100, txn_id=int(n))
                outcomes.append(await acq.reverse(reversal_of(original, Result(response_code="00")), 1))
            assert outcomes == [RETRY, RETRY, RETRY, REFUSED, REVERSED]
            assert (outcomes[3].code, outcomes[3].held_unknown) == ("51", False)
            caplog.clear()
            caplog.set_level(logging.INFO, logger="payswitch.citycard")
            silent = debit("8800000000003007", 1, 100, txn_id=6)
            assert await acq.reverse(reversal_of(silent, Result(response_code="00")), 0.05) == RETRY
            assert caplog.messages[-1] == "citycard: reversal of ref 6.000000000006 not acknowledged: timeout"
            # A terminal 0400 through authorize: 00 only for the acknowledgement of its ref.
            rev = reversal_of(debit("8800000000003007", 1, 100, txn_id=1), Result(response_code="00"))
            assert (await acq.authorize(rev, 1)).response_code == "91"
            await acq.close()

    run(main())


def test_offline_uploads_are_counted_by_what_became_of_them(run):
    card = "8800000000003006"

    async def main():
        async def answer_then_fall_silent(req, writer, number):
            if req.counter == "00001":
                writer.write(encode(Response(id=req.id, code="00", ref=req.ref, auth="000001")))
            elif req.counter == "00002":
                writer.write(encode(Response(id=req.id, code="A0", ref=req.ref)))

        async with FakeCentre(answer_then_fall_silent) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            codes = [(await acq.authorize(offline(card, n, 100), 0.1)).response_code for n in (1, 2, 3)]
            assert codes == ["00", "A0", "68"]
            assert [acq.metrics.get("uploads", result=r) for r in ("confirmed", "refused", "unconfirmed")] == [1, 1, 1]
            assert acq.metrics.get("timeouts", op="offline") == 1
            await acq.close()

    run(main())


def test_link_counters_are_exported_as_payswitch_citycard_totals():
    from switch.metrics import Metrics

    acq = CityCardAcquirer(endpoints=[("127.0.0.1", 9301)])
    acq.metrics.inc("timeouts", op="load")
    metrics = Metrics(process=False)
    metrics.attach_links({"citycard": acq})
    acq.metrics.inc("uploads", result="unconfirmed")
    value = metrics.registry.get_sample_value
    assert value("payswitch_citycard_timeouts_total", {"acquirer": "citycard", "op": "load"}) == 1
    assert value("payswitch_citycard_timeouts_total", {"acquirer": "citycard", "op": "debit"}) == 0
    assert value("payswitch_citycard_uploads_total", {"acquirer": "citycard", "result": "unconfirmed"}) == 1
    assert value("payswitch_citycard_late_answers_total", {"acquirer": "citycard"}) == 0
    assert value("payswitch_citycard_unmatched_answers_total", {"acquirer": "citycard"}) == 0
    assert value("payswitch_hostlink_timeouts_total", {"acquirer": "citycard", "mti": "0200"}) is None


def test_close_fails_pending_calls_as_uncertain(run):
    async def main():
        async def never(req, writer, number):
            pass

        async with FakeCentre(never) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            task = asyncio.create_task(acq.authorize(debit("8800000000003004", 1, 100), 5))
            await asyncio.sleep(0.05)
            await acq.close()
            result = await task
            assert (result.response_code, result.uncertain) == ("91", True)
            assert not acq.healthy()

    run(main())


def test_garbage_from_centre_closes_the_link(run):
    async def main():
        async def garbage(req, writer, number):
            if number == 1:
                writer.write(b"\x00\x02{}")
            else:
                writer.write(encode(Response(id=req.id, code="00", ref=req.ref)))

        async with FakeCentre(garbage) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint], backoff=(0.01, 0.05))
            await acq.start()
            first = await acq.authorize(debit("8800000000003005", 1, 100), 2)
            assert (first.response_code, first.uncertain) == ("91", True)
            assert acq.metrics.get("protocol_errors", endpoint="%s:%d" % centre.endpoint) == 1
            for _ in range(100):
                if acq.healthy():
                    break
                await asyncio.sleep(0.01)
            assert (await acq.authorize(debit("8800000000003005", 2, 100), 2)).response_code == "00"
            await acq.close()

    run(main())
