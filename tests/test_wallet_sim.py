"""Both wallet adapters against their simulators (trio subprocesses), end to end:
every sandbox outcome of spec 7, the deadline paths of spec 6, idempotency."""
import asyncio
import json
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from adapters.wallet.micropay import MicroPayAcquirer
from adapters.wallet.tradepay import TradePayAcquirer
from switch.core.acquirer import NOT_FOUND, Original, Request

CONFIRM_DELAY = 0.3
LATE_DELAY = 2.5  # a pay ending in 06 reaches the wallet this late: after the switch's cancel
FAST = dict(poll_interval=0.05, cancel_interval=0.05, cancel_margin=0.3, request_timeout=1.0)
STYLES = ["tradepay", "micropay"]
# The cancel of trade.pay says whether it closed or refunded; the reverse of micropay does not.
CLOSED = {"tradepay": "closed", "micropay": "reversed"}
REFUNDED = {"tradepay": "refunded", "micropay": "reversed"}


class Sim:
    def __init__(self, style: str, key_dir: Path):
        self.style = style
        self.key_dir = key_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.wallet.sim", "--style", style, "--host", "127.0.0.1",
             "--port", "0", "--confirm-delay", str(CONFIRM_DELAY), "--late-delay", str(LATE_DELAY),
             "--key-dir", str(key_dir)],
            stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), f"simulator did not start: {line!r}"
        self.url = "http://" + line.split()[-1]

    def adapter(self, **options):
        options = {**FAST, **options}
        if self.style == "tradepay":
            return TradePayAcquirer(
                "wallet-a", self.url, app_id="2021000000000001",
                merchant_private_key=(self.key_dir / "merchant_private.pem").read_bytes(),
                wallet_public_key=(self.key_dir / "wallet_public.pem").read_bytes(), **options)
        return MicroPayAcquirer("wallet-b", self.url, app_id="wx0000000000000001", mch_id="1900000001",
                                secret=(self.key_dir / "micropay_secret").read_bytes(), **options)

    def ledger(self) -> dict[str, dict]:
        with urllib.request.urlopen(self.url + "/sandbox/ledger", timeout=5) as answer:
            return {o["out_trade_no"]: o for o in json.load(answer)["orders"]}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            self.proc.stdout.close()


@pytest.fixture(scope="module", params=STYLES)
def sim(request, tmp_path_factory):
    sim = Sim(request.param, tmp_path_factory.mktemp(f"keys-{request.param}"))
    yield sim
    assert sim.stop() == 0


_stans = iter(range(1, 1_000_000))


def purchase(code: str, amount: int = 1234, **changes) -> Request:
    fields = dict(txn_id=1, kind="wallet", mti="0200", processing_code="000000", amount=amount,
                  currency="156", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
                  stan=f"{next(_stans):06d}", transmission_time=time.strftime("%m%d%H%M%S"),
                  rrn="000000000001", entry_mode="031", tlv={"BC": code})
    fields.update(changes)
    return Request(**fields)


def reversal(original: Request, acquirer_ref: str | None) -> Request:
    return purchase("", mti="0400", stan=f"{next(_stans):06d}", original=Original(
        txn_id=original.txn_id, mti=original.mti, processing_code=original.processing_code,
        amount=original.amount, currency=original.currency, stan=original.stan,
        transmission_time=original.transmission_time, rrn=original.rrn,
        acquirer_ref=acquirer_ref))


def code(suffix: str, prefix: str = "28") -> str:
    return f"{prefix}{time.time_ns() % 10**14:014d}{suffix}"


def run(coro):
    return asyncio.run(coro)


async def authorize(sim, request, timeout=5.0, **options):
    adapter = sim.adapter(**options)
    try:
        return await adapter.authorize(request, timeout)
    finally:
        await adapter.close()


def order_no(result) -> str:
    return result.acquirer_ref.split("|")[0]


# --- every sandbox outcome (spec 7) ----------------------------------------------------


def test_01_confirms_after_the_delay(sim):
    started = time.monotonic()
    result = run(authorize(sim, purchase(code("01"))))
    assert CONFIRM_DELAY <= time.monotonic() - started < CONFIRM_DELAY + 1.0
    assert result.response_code == "00" and not result.uncertain
    assert len(result.auth_code) == 6 and result.tlv["WT"]
    order = sim.ledger()[order_no(result)]
    assert order["state"] == "paid" and order["charges"] == 1
    assert result.acquirer_ref == f"{order['out_trade_no']}|{order['trade_no']}|paid"
    assert order["amount"] == 1234


def test_02_declines_after_the_delay(sim):
    result = run(authorize(sim, purchase(code("02"))))
    assert result.response_code == "05" and not result.uncertain
    assert sim.ledger()[order_no(result)]["charges"] == 0


def test_03_never_confirms_cancelled_at_the_deadline(sim):
    started = time.monotonic()
    result = run(authorize(sim, purchase(code("03")), timeout=0.9))
    assert time.monotonic() - started < 0.9 + 0.2
    assert result.response_code == "68" and result.uncertain is False
    assert result.acquirer_ref.endswith("|" + CLOSED[sim.style])
    order = sim.ledger()[order_no(result)]
    # The simulator answers the first cancel "retry": the adapter asked again.
    assert order["state"] == "closed" and order["charges"] == 0 and order["cancel_calls"] == 2


def test_04_insufficient_balance(sim):
    result = run(authorize(sim, purchase(code("04"))))
    assert result.response_code == "51" and not result.uncertain
    assert sim.ledger()[order_no(result)]["charges"] == 0


def test_05_unknown_first_then_found_paid(sim):
    states = []
    result = run(authorize(sim, purchase(code("05")), on_state=lambda o, s: states.append(s)))
    assert result.response_code == "00" and result.tlv["WT"]
    assert states[:2] == ["pay", "query"] and states[-1] == "paid"
    order = sim.ledger()[order_no(result)]
    assert order["charges"] == 1 and order["pay_calls"] == 1 and order["query_calls"] >= 1


def test_any_other_code_is_approved_at_once(sim):
    states = []

    async def journal(order, state):  # an async hook is awaited
        await asyncio.sleep(0)
        states.append((order, state))

    started = time.monotonic()
    request = purchase(code("77"))
    result = run(authorize(sim, request, on_state=journal))
    assert time.monotonic() - started < 0.5
    assert result.response_code == "00"
    assert sim.ledger()[order_no(result)]["charges"] == 1
    assert [s for _, s in states] == ["pay", "paid"]
    assert {o for o, _ in states} == {"DEMO0001" + request.transmission_time + request.stan}


# --- idempotency ---------------------------------------------------------------------


def test_retried_authorize_never_pays_twice(sim):
    request = purchase(code("77"))

    async def twice():
        adapter = sim.adapter()
        first = await adapter.authorize(request, 5.0)
        second = await adapter.authorize(request, 5.0)
        await adapter.close()
        return first, second

    first, second = run(twice())
    assert first.response_code == second.response_code == "00"
    assert first.tlv == second.tlv and first.auth_code == second.auth_code
    order = sim.ledger()[order_no(first)]
    assert order["charges"] == 1 and order["pay_calls"] == 2


def test_concurrent_authorize_of_one_request_pays_once(sim):
    request = purchase(code("01"))

    async def together():
        adapter = sim.adapter()
        results = await asyncio.gather(*(adapter.authorize(request, 5.0) for _ in range(3)))
        await adapter.close()
        return results

    results = run(together())
    assert {r.response_code for r in results} == {"00"}
    assert len({r.tlv["WT"] for r in results}) == 1
    assert sim.ledger()[order_no(results[0])]["charges"] == 1


def test_same_order_number_with_other_content_is_94(sim):
    request = purchase(code("77"))
    assert run(authorize(sim, request)).response_code == "00"
    changed = msgspec.structs.replace(request, amount=999)
    result = run(authorize(sim, changed))
    assert result.response_code == "94"
    assert sim.ledger()[order_no(result)]["charges"] == 1


# --- deadlines (spec 6) ------------------------------------------------------------------


def test_01_slower_than_the_deadline_is_cancelled_and_nothing_stays_charged(sim):
    result = run(authorize(sim, purchase(code("01")), timeout=0.3, cancel_margin=0.2))
    assert result.response_code == "68" and result.uncertain is False
    time.sleep(CONFIRM_DELAY)  # the customer's confirmation arrives too late
    order = sim.ledger()[order_no(result)]
    # Closed before the confirmation (a loaded machine may let it slip to a refund).
    assert order["state"] in ("closed", "refunded") and order["charges"] == order["refunds"]
    assert result.acquirer_ref.endswith("|" + {"closed": CLOSED, "refunded": REFUNDED}[order["state"]][sim.style])


def test_paid_just_before_the_cancel_is_refunded(sim):
    # No poll before the hold ends: the customer confirms unseen, the cancel refunds.
    result = run(authorize(sim, purchase(code("01")), timeout=0.8, poll_interval=10.0))
    assert result.response_code == "68" and result.uncertain is False
    assert result.acquirer_ref.endswith("|" + REFUNDED[sim.style])
    order = sim.ledger()[order_no(result)]
    assert order["state"] == "refunded" and order["charges"] == 1 and order["refunds"] == 1


def test_closing_the_adapter_ends_a_held_payment_uncertain(sim):
    async def main():
        adapter = sim.adapter()
        held = asyncio.create_task(adapter.authorize(purchase(code("03")), 30.0))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await adapter.close()
        result = await held
        assert time.monotonic() - started < 1.0
        return result

    result = run(main())
    assert result.response_code == "68" and result.uncertain is True
    assert result.acquirer_ref.endswith("|open")


# --- reversals and the sweeper ---------------------------------------------------------


def test_reverse_after_approval_refunds_once(sim):
    request = purchase(code("77"))

    async def main():
        adapter = sim.adapter()
        result = await adapter.authorize(request, 5.0)
        assert result.response_code == "00"
        assert await adapter.reverse(reversal(request, result.acquirer_ref), 2.0) is True
        assert await adapter.reverse(reversal(request, result.acquirer_ref), 2.0) is True
        await adapter.close()
        return result

    result = run(main())
    order = sim.ledger()[order_no(result)]
    assert order["state"] == "refunded" and order["charges"] == 1 and order["refunds"] == 1


def test_buyer_ids_are_not_kept_past_the_payment_they_came_with(sim):
    class Stop(Exception):
        pass

    def stop_at_query(order, state):
        if state == "query":
            raise Stop

    paid, held = purchase(code("77")), purchase(code("03"))

    async def main():
        adapter = sim.adapter()
        result = await adapter.authorize(paid, 5.0)
        assert result.buyer_id
        assert (await adapter.query(order_no(result))).disposition == "paid"  # a query's answer names the buyer
        assert await adapter.reverse(reversal(paid, result.acquirer_ref), 2.0) is True
        adapter._on_state = stop_at_query
        with pytest.raises(Stop):  # a payment that ends without a Result (the switch's backstop, a crash)
            await adapter.authorize(held, 5.0)
        leftover = dict(adapter._buyers)
        await adapter.close()
        return leftover

    # The wallet's id of the payer (personal data) is held only until its payment's Result.
    assert run(main()) == {}


def test_reverse_without_a_reference_derives_the_order(sim):
    request = purchase(code("77"))

    async def main():
        adapter = sim.adapter()
        result = await adapter.authorize(request, 5.0)
        assert await adapter.reverse(reversal(request, None), 2.0) is True
        await adapter.close()
        return result

    result = run(main())
    assert sim.ledger()[order_no(result)]["state"] == "refunded"


def test_reverse_before_the_pay_blocks_a_late_pay(sim):
    request = purchase(code("77"))

    async def main():
        adapter = sim.adapter()
        assert await adapter.reverse(reversal(request, None), 2.0) is True
        result = await adapter.authorize(request, 5.0)
        await adapter.close()
        return result

    result = run(main())
    assert result.response_code == "05"
    assert sim.ledger()[order_no(result)]["charges"] == 0


def test_a_pay_landing_after_a_cancel_answered_not_found_is_refunded(sim):
    # The pay times out (1 s) and is still on its way: the cancel at the deadline hears
    # "no such order".  That is not final: the payment ends uncertain, and its reversal,
    # repeated as the switch's queue does, refunds the pay once it has landed.
    request = purchase(code("06"))

    async def main():
        adapter = sim.adapter()
        result = await adapter.authorize(request, 1.5)
        first = await adapter.reverse(reversal(request, result.acquirer_ref), 1.0)
        await asyncio.sleep(LATE_DELAY)
        second = await adapter.reverse(reversal(request, result.acquirer_ref), 2.0)
        await adapter.close()
        return result, first, second

    result, first, second = run(main())
    assert result.response_code == "91" and result.uncertain is True
    assert result.acquirer_ref.endswith("|not-found")
    assert first == NOT_FOUND and second is True
    order = sim.ledger()[order_no(result)]
    assert order["state"] == "refunded" and order["charges"] == 1 and order["refunds"] == 1


def test_reverse_of_a_payment_that_never_left_needs_no_call(sim):
    async def main():
        adapter = sim.adapter()
        assert await adapter.reverse(reversal(purchase("1"), "DEMO0001U||unsent"), 0.01) is True
        await adapter.close()
    run(main())
    assert "DEMO0001U" not in sim.ledger()


def test_reverse_of_a_declined_payment_needs_no_call(sim):
    async def main():
        adapter = sim.adapter()
        ref = "DEMO0001X|2088|declined"
        assert await adapter.reverse(reversal(purchase("1"), ref), 0.01) is True
        await adapter.close()
    run(main())
    assert "DEMO0001X" not in sim.ledger()


def test_finish_an_order_left_waiting(sim):
    class Crash(Exception):
        pass

    def crash_after_pay(order, state):
        if state == "query":
            raise Crash  # the switch died after the pay left

    confirmed, never = purchase(code("01")), purchase(code("03"))

    async def main():
        adapter = sim.adapter(on_state=crash_after_pay)
        for request in (confirmed, never):
            with pytest.raises(Crash):
                await adapter.authorize(request, 5.0)
        await adapter.close()
        sweeper = sim.adapter()
        status = await sweeper.query(order_no_of(never))
        assert status.disposition == "waiting"
        paid = await sweeper.finish(order_no_of(confirmed), time.time() + 3.0)
        cancelled = await sweeper.finish(order_no_of(never), time.time() - 1.0)
        missing = await sweeper.query("NO-SUCH-ORDER")
        await sweeper.close()
        return paid, cancelled, missing

    paid, cancelled, missing = run(main())
    assert paid.response_code == "00" and paid.tlv["WT"]
    assert cancelled.response_code == "68" and cancelled.uncertain is False
    assert missing.disposition == "not-found"
    ledger = sim.ledger()
    assert ledger[order_no_of(never)]["state"] == "closed"
    assert ledger[order_no_of(confirmed)]["charges"] == 1


def order_no_of(request: Request) -> str:
    return f"{request.terminal_id}{request.transmission_time}{request.stan}"


# --- keys and an unreachable wallet ---------------------------------------------------------


def test_wrong_wallet_key_answers_are_unverifiable_so_uncertain(sim):
    from adapters.wallet.signing import generate_rsa_pem

    if sim.style == "tradepay":
        adapter = TradePayAcquirer(
            "wallet-a", sim.url, app_id="2021",
            merchant_private_key=(sim.key_dir / "merchant_private.pem").read_bytes(),
            wallet_public_key=generate_rsa_pem(1024)[1], **FAST)
    else:
        # One secret signs both ways: with the wrong one, the wallet's answers
        # (its refusal of our signature included) can't be verified either.
        adapter = MicroPayAcquirer("wallet-b", sim.url, app_id="wx0000000000000001", mch_id="1900000001",
                                   secret=b"not-the-shared-secret", **FAST)

    async def main():
        result = await adapter.authorize(purchase(code("77")), 0.45)
        healthy = adapter.healthy()
        await adapter.close()
        return result, healthy

    result, healthy = run(main())
    # Nothing the wallet said could be trusted: no answer, so uncertain (the switch reverses).
    assert result.response_code == "91" and result.uncertain is True
    assert healthy is True  # the endpoint answers, even if we cannot read it
    # ... which only the counters tell an operator.
    assert adapter.metrics.get("calls", call="pay", outcome="unverifiable") == 1
    assert adapter.metrics.get("calls", call="cancel", outcome="unverifiable") >= 1
    assert adapter.metrics.total("orders") == adapter.metrics.get("orders", disposition="open") == 1


def test_bad_merchant_signature_is_refused_by_the_wallet(sim):
    from adapters.wallet.signing import generate_rsa_pem

    if sim.style == "tradepay":
        adapter = TradePayAcquirer(
            "wallet-a", sim.url, app_id="2021", merchant_private_key=generate_rsa_pem(1024)[0],
            wallet_public_key=(sim.key_dir / "wallet_public.pem").read_bytes(), **FAST)
    else:
        adapter = MicroPayAcquirer("wallet-b", sim.url, app_id="wx", mch_id="1900",
                                   secret=b"not-the-shared-secret", **FAST)
    request = purchase(code("77"))

    async def main():
        result = await adapter.authorize(request, 0.45)
        await adapter.close()
        return result

    result = run(main())
    if sim.style == "tradepay":  # a signed refusal: final, nothing happened
        assert result.response_code == "96" and result.uncertain is False
    else:  # refused with the wallet's secret, which we do not hold: unreadable
        assert result.response_code == "91" and result.uncertain is True
    assert order_no_of(request) not in sim.ledger()


def test_unreachable_wallet_answers_91_at_once(sim):
    adapter = sim.adapter()
    adapter._pool.port = 1  # nothing listens there

    async def main():
        await adapter.start()
        started = time.monotonic()
        result = await adapter.authorize(purchase(code("77")), 5.0)
        assert time.monotonic() - started < 1.0
        healthy = adapter.healthy()
        await adapter.close()
        return result, healthy

    result, healthy = run(main())
    assert result.response_code == "91" and result.uncertain is False and not healthy
    assert result.acquirer_ref.endswith("|unsent")
    assert adapter.metrics.get("calls", call="pay", outcome="unsent") == 1
    assert adapter.metrics.get("orders", disposition="unsent") == 1
    assert adapter.metrics.link == "wallet"  # exported as payswitch_wallet_*_total


def test_requests_the_adapter_refuses_without_calling(sim):
    async def main():
        adapter = sim.adapter()
        results = [
            await adapter.authorize(purchase(code("77"), kind="card"), 1.0),
            await adapter.authorize(purchase("28AB"), 1.0),
            await adapter.authorize(purchase(code("77"), amount=0), 1.0),
            await adapter.authorize(purchase(code("77"), processing_code="200000"), 1.0),
            await adapter.authorize(purchase(code("77"), mti="0100"), 1.0),
        ]
        await adapter.close()
        return [r.response_code for r in results]

    assert run(main()) == ["12", "30", "13", "12", "12"]
    # A configured settlement currency refuses the others.
    result = run(authorize(sim, purchase(code("77"), currency="978"), currency="156"))
    assert result.response_code == "12"
