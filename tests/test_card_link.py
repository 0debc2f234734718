"""HostLinkAcquirer (asyncio on uvloop) against the simulated acquirer, run as a process."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import uvloop

from adapters.card import HostLinkAcquirer
from adapters.card.hostlink import parse_ref
from switch.security import pinblock
from switch.security import sandbox as sandbox_keys
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Original, Request

ROOT = Path(__file__).resolve().parent.parent
ACQ = "12345678901"


class Sim:
    """The simulator as a child process on a free (or given) port."""

    def __init__(self, *args: str, port: int = 0, ledger: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "adapters.card.sim", "--port", str(port), "--seed", "1", *args]
        if ledger is not None:
            cmd += ["--ledger", str(ledger)]
        self.ledger_path = ledger
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                         p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def ledger(self) -> list[dict]:
        if self.ledger_path is None or not self.ledger_path.exists():
            return []
        return [json.loads(line) for line in self.ledger_path.read_text().splitlines()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(5)
        self.proc.stdout.close()
        return code


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Sim(ledger=tmp_path_factory.mktemp("sim") / "ledger.jsonl")
    yield s
    assert s.stop() == 0  # clean exit on SIGTERM


def run(coro, loop_factory=uvloop.new_event_loop):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


# The switch runs on uvloop; the adapter must not depend on it.
LOOPS = pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop],
                                ids=["uvloop", "asyncio"])


def acquirer(*endpoints, **kw) -> HostLinkAcquirer:
    kw.setdefault("connections", 2)
    kw.setdefault("connect_timeout", 1.0)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    return HostLinkAcquirer(name="bank-a", endpoints=list(endpoints), acquirer_id=ACQ, **kw)


_txn = iter(range(1, 10**9))
# The sandbox acquirer checks PINs (spec 7): 1234 under bank-a's public ZPK.
PIN_BLOCK = pinblock.encipher(bytes.fromhex(sandbox_keys.ZPKS["bank-a"]), "tdes", 0, "1234", "4761739001010119")


def purchase(amount: int = 1000, mti: str = "0200", **kw) -> Request:
    n = next(_txn)
    base = dict(txn_id=n, kind="card", mti=mti, processing_code="000000", amount=amount,
                currency="840", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
                stan=f"{n % 1000000:06d}", transmission_time="1124120000", rrn=f"{n:012d}",
                local_time="120000", local_date="1124", pan="4761739001010119",
                expiry="2812", entry_mode="051", pos_condition="00",
                pin_block=PIN_BLOCK, icc=b"\x9f\x02\x06\x00\x00\x00\x00\x10\x00")
    base.update(kw)
    return Request(**base)


def reversal_for(req: Request, result) -> Request:
    original = Original(txn_id=req.txn_id, mti=req.mti, processing_code=req.processing_code,
                        amount=req.amount, currency=req.currency, stan=req.stan,
                        transmission_time=req.transmission_time, rrn=req.rrn,
                        auth_code=result.auth_code, acquirer_ref=result.acquirer_ref)
    n = next(_txn)
    return Request(txn_id=n, kind="card", mti="0400", processing_code=req.processing_code,
                   amount=req.amount, currency=req.currency, terminal_id=req.terminal_id,
                   merchant_id=req.merchant_id, stan=f"{n % 1000000:06d}",
                   transmission_time="1124120100", rrn=f"{n:012d}", original=original)


async def until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@LOOPS
def test_approve_and_declines(sim, loop_factory):
    async def main():
        acq = acquirer(sim.endpoint)
        await acq.start()
        assert acq.healthy()
        try:
            ok = await acq.authorize(purchase(1000), 2.0)
            assert ok.response_code == "00" and not ok.uncertain
            assert len(ok.auth_code) == 6
            ref = parse_ref(ok.acquirer_ref)
            assert ref is not None and len(ref.rrn) == 12
            pre = await acq.authorize(purchase(1000, mti="0100"), 2.0)
            assert pre.response_code == "00"
            codes = await asyncio.gather(*(acq.authorize(purchase(1000 + int(rc)), 2.0)
                                           for rc in ("05", "13", "51", "55", "96")))
            assert [r.response_code for r in codes] == ["05", "13", "51", "55", "96"]
            assert all(r.auth_code is None and not r.uncertain for r in codes)
            assert acq.metrics.get("requests", mti="0200", response_code="00") == 1
            assert acq.connection_states() == {f"127.0.0.1:{sim.port}": {"ready": 2}}
        finally:
            await acq.close()
        assert not acq.healthy()
    run(main(), loop_factory)


def test_no_answer_times_out_uncertain_then_reversal_acknowledged(sim):
    async def main():
        acq = acquirer(sim.endpoint)
        await acq.start()
        try:
            req = purchase(1068)  # the sandbox never answers amounts ending in 68
            t0 = time.monotonic()
            result = await acq.authorize(req, 0.2)
            elapsed = time.monotonic() - t0
            assert result.response_code == "68" and result.uncertain
            assert 0.19 <= elapsed < 1.5
            assert acq.metrics.get("timeouts", mti="0200") == 1
            rev = reversal_for(req, result)
            assert await acq.reverse(rev, 2.0) == REVERSED
            # the repeat goes as 0421 and is acknowledged without undoing anything twice
            assert await acq.reverse(msgspec.structs.replace(rev, attempt=1), 2.0) == REVERSED
            assert acq.metrics.get("reversals", mti="0420", response_code="00") == 1
            assert acq.metrics.get("reversals", mti="0421", response_code="00") == 1
            return parse_ref(result.acquirer_ref)
        finally:
            await acq.close()
    ref = run(main())
    reversals = [e for e in sim.ledger() if e["event"] == "reversal" and e["original_stan"] == ref.stan]
    assert len(reversals) == 2
    assert [r["mti"] for r in reversals] == ["0420", "0421"]
    assert reversals[0]["original_found"] and reversals[0]["original_f7"] == ref.f7
    assert not reversals[0]["repeat"] and reversals[1]["repeat"]


def test_completion_of_a_preauthorization(sim):
    async def main():
        acq = acquirer(sim.endpoint, connections=1)
        await acq.start()
        try:
            pre_req = purchase(5000, mti="0100")
            pre = await acq.authorize(pre_req, 2.0)
            completion = purchase(4500, mti="0220",
                                  original=reversal_for(pre_req, pre).original)
            done = await acq.authorize(completion, 2.0)
            assert done.response_code == "00"
            return parse_ref(pre.acquirer_ref)
        finally:
            await acq.close()
    ref = run(main())
    [event] = [e for e in sim.ledger() if e["event"] == "completion" and e["original_stan"] == ref.stan]
    assert event["amount"] == 4500


@LOOPS
def test_100_concurrent_requests_on_one_connection(sim, loop_factory):
    async def main():
        acq = acquirer(sim.endpoint, connections=1)
        await acq.start()
        try:
            results = await asyncio.gather(*(acq.authorize(purchase(1000 + i * 100), 3.0)
                                             for i in range(100)))
            assert all(r.response_code == "00" for r in results)
            stans = {parse_ref(r.acquirer_ref).stan for r in results}
            assert len(stans) == 100
            assert len(acq.stans) == 0
        finally:
            await acq.close()
    run(main(), loop_factory)


def test_late_answer_is_counted_and_dropped(tmp_path):
    slow = Sim("--latency-ms", "300")
    try:
        async def main():
            acq = acquirer(slow.endpoint, connections=1)
            await acq.start()
            try:
                result = await acq.authorize(purchase(1000), 0.1)
                assert result.response_code == "68" and result.uncertain
                await until(lambda: acq.metrics.get("late_answers", mti="0200") == 1)
                assert acq.healthy()
            finally:
                await acq.close()
        run(main())
    finally:
        slow.kill()


def test_sim_killed_and_restarted_reconnects():
    first = Sim()
    port = first.port
    second = None
    try:
        async def main():
            nonlocal second
            acq = acquirer(first.endpoint, connections=2)
            await acq.start()
            try:
                hanging = asyncio.ensure_future(acq.authorize(purchase(1068), 5.0))
                await asyncio.sleep(0.1)
                first.kill()
                lost = await hanging
                assert lost.response_code == "91" and lost.uncertain  # written, then the link died
                await until(lambda: not acq.healthy())
                down = await acq.authorize(purchase(1000), 1.0)
                assert down.response_code == "91" and not down.uncertain  # nothing sent
                assert await acq.reverse(reversal_for(purchase(1000), lost), 1.0) == RETRY
                second = Sim(port=port)
                await until(acq.healthy, 3.0)
                again = await acq.authorize(purchase(1000), 2.0)
                assert again.response_code == "00"
                assert acq.metrics.total("reconnects") >= 1
                assert acq.metrics.get("unavailable", mti="0200") == 1
            finally:
                await acq.close()
        run(main())
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_failover_to_second_endpoint(tmp_path):
    primary = Sim(ledger=tmp_path / "a.jsonl")
    backup = Sim(ledger=tmp_path / "b.jsonl")
    try:
        async def main():
            acq = acquirer(primary.endpoint, backup.endpoint, connections=1)
            await acq.start()
            await until(lambda: all(s.usable for s in acq.slots))
            try:
                assert (await acq.authorize(purchase(1111), 2.0)).response_code == "00"
                primary.kill()
                await until(lambda: not acq.slots[0].usable)
                assert acq.healthy()
                assert (await acq.authorize(purchase(2222), 2.0)).response_code == "00"
            finally:
                await acq.close()
        run(main())
        assert [e["amount"] for e in primary.ledger()] == [1111]
        assert [e["amount"] for e in backup.ledger()] == [2222]
    finally:
        primary.kill()
        backup.kill()


def test_start_with_first_endpoint_down_uses_the_second():
    backup = Sim()
    try:
        async def main():
            dead = ("127.0.0.1", 1)  # nothing listens there
            acq = acquirer(dead, backup.endpoint, connections=1, connect_timeout=0.5)
            await acq.start()
            try:
                assert acq.healthy()
                assert (await acq.authorize(purchase(1000), 2.0)).response_code == "00"
            finally:
                await acq.close()
        run(main())
    finally:
        backup.kill()


def test_garbage_closes_and_reconnects():
    noisy = Sim("--garbage-rate", "1.0")
    try:
        async def main():
            acq = acquirer(noisy.endpoint, connections=1)
            await acq.start()
            try:
                result = await acq.authorize(purchase(1000), 2.0)
                assert result.response_code == "91" and result.uncertain
                assert acq.metrics.total("protocol_errors") == 1
                await until(acq.healthy, 3.0)  # signed on again (network management is never faulted)
                assert acq.metrics.total("reconnects") >= 1
            finally:
                await acq.close()
        run(main())
    finally:
        noisy.kill()


def test_echo_keeps_an_idle_link(sim):
    async def main():
        acq = acquirer(sim.endpoint, connections=1, echo_interval=0.1)
        await acq.start()
        try:
            await until(lambda: acq.metrics.total("echoes") >= 3, 2.0)
            assert acq.healthy() and acq.metrics.total("reconnects") == 0
        finally:
            await acq.close()
    run(main())


def test_close_makes_pending_uncertain(sim):
    async def main():
        acq = acquirer(sim.endpoint, connections=1)
        await acq.start()
        pending = asyncio.ensure_future(acq.authorize(purchase(1068), 5.0))
        await asyncio.sleep(0.05)
        await acq.close()
        result = await pending
        assert result.response_code == "91" and result.uncertain
    run(main())


@pytest.mark.parametrize("fault,code", [("--disconnect-rate", "91"), ("--drop-rate", "68")])
def test_sim_faults_make_outcomes_uncertain(fault, code):
    faulty = Sim(fault, "1.0")
    try:
        async def main():
            acq = acquirer(faulty.endpoint, connections=1)
            await acq.start()
            try:
                result = await acq.authorize(purchase(1000), 0.3)
                assert result.response_code == code and result.uncertain
                assert parse_ref(result.acquirer_ref) is not None  # the reversal can name it
                await until(acq.healthy, 3.0)
            finally:
                await acq.close()
        run(main())
    finally:
        faulty.kill()
