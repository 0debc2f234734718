"""serve --workers: what lands on another worker than its original, the reversal sender, reloads."""
import asyncio
import time

import pytest

from tests.test_wallet_strict import ConfirmingWallet, pay_while_confirming, wallet_switch_acquirers


@pytest.fixture
def service_key(monkeypatch):
    from tests import test_service

    monkeypatch.setenv(test_service.KEY_ENV, test_service.KEY_HEX)
    return test_service


# --- a wallet payment reversed on another worker while its customer confirms (spec 6.1) ------


def test_a_wallet_order_reversed_on_another_worker_is_withdrawn_at_its_next_query(service_key):
    ts = service_key
    wallet = ConfirmingWallet()
    acquirers, acquirer = wallet_switch_acquirers(ts, wallet)

    async def before_start(sw):
        acquirer._on_state = sw._order_state
        sw.engine.shared_journal = True  # as a worker's: its answer is journaled only while still "sent"

    async def scenario(sw):
        original = await pay_while_confirming(sw, ts, wallet)
        # The terminal's 0400 landed on another worker: it queued the reversal in the
        # journal (sent -> reversal_pending) and answered 00; this process was not told.
        rec = await ts.record(sw, "000001")
        t0 = time.monotonic()
        await ts.journal(sw, sw.journal.update_if(rec.id, "sent", state="reversal_pending",
                                                  reversal_started=time.time(), reversal_attempts=0))
        answer = ts.TERM.decode(await asyncio.wait_for(original, ts.WAIT))
        # Withdrawn at the wallet at the next look at the order, not when the hold ends.
        assert wallet.reversed_at is not None and wallet.reversed_at - t0 < 0.5
        assert wallet.queried_after_reverse == 0
        assert answer[39] == "68" and 38 not in answer
        rec = await ts.record(sw, "000001")
        assert rec.response_code == "68" and rec.state == "reversal_pending"

    ts.run(scenario, acquirers=acquirers, before_start=before_start, timeout=2.5, response_timeout=3.0)


# --- what a worker that is not the reversal sender holds in memory -------------------------


def _drive(gen, answer):
    """Run an engine generator, each command answered by ``answer(command)`` (an exception is thrown in)."""
    value = error = None
    while True:
        try:
            command = gen.send(value) if error is None else gen.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            value = answer(command)
        except Exception as e:
            error = e


def test_a_non_sender_worker_counts_the_outcomes_it_holds_in_its_reversal_queue_gauge(service_key):
    from switch.core.engine import Engine
    from switch.journal import JournalError
    from switch.metrics import Metrics

    engine = Engine(service_key.make_config(), key=bytes(32), metrics=Metrics())
    queue = engine.reversals
    queue.stranded[7] = ("bank-a", None, True, "answer", {})  # an approval the journal refused
    queue.named.append(("T1", "M1", "0200", "000009", "0612153000"))  # a 0400 answered 00, not journaled

    def refusing(command):
        if command.name in ("reserve_stans", "reversal_card", "keep_reversal_card"):
            return 1
        raise JournalError("disk full")

    def gauge():
        return engine.metrics.registry.get_sample_value("payswitch_reversal_queue")

    assert _drive(queue.sweep(sender=False), refusing) == {}
    assert gauge() == 2  # both still held by this worker: the sender never sees them

    def taking(command):
        if command.name == "find":
            return None
        if command.name == "insert":
            raise JournalError("disk full")  # the 0400's original: still refused
        return 1 if command.name == "reserve_stans" else None

    _drive(queue.sweep(sender=False), taking)
    assert not queue.stranded and len(queue.named) == 1
    assert gauge() == 1


# --- the reversal sender (worker 0) down: the supervisor tells the backlog ----------------


def _fleet_without_sender(monkeypatch, backlog):
    from concurrent.futures import Future
    from types import SimpleNamespace

    from switch.io import fleet_http
    from switch.io.workers import Worker
    from tests import test_service as ts

    class Proc:
        pid, returncode = 4001, None

        def poll(self):
            return None

    cfg = ts.make_config()
    sender, other = Worker(0), Worker(1)
    sender.restarts = 1  # dead, restarting
    other.proc = Proc()
    other.ready.set()

    def reversal_backlog():
        fut = Future()
        fut.set_result(backlog)
        return fut

    async def http_get(host, port, target, timeout=fleet_http.SCRAPE_TIMEOUT):
        if target == "/metrics":
            return 200, b"# TYPE payswitch_reversal_queue gauge\npayswitch_reversal_queue 0.0\n"
        return 200, b'{"ready": true}'

    monkeypatch.setattr(fleet_http, "http_get", http_get)
    fleet = SimpleNamespace(cfg=cfg, workers=[sender, other], writer=None, reloads={"ok": 0, "rejected": 0},
                            last_reload_ok=True, journal=SimpleNamespace(reversal_backlog=reversal_backlog))
    return fleet_http.FleetHttp(fleet)


def test_while_the_reversal_sender_is_down_the_supervisor_reports_the_journals_backlog(monkeypatch, service_key):
    import json

    from prometheus_client.parser import text_string_to_metric_families

    front = _fleet_without_sender(monkeypatch, (3, time.time() - 30.0, 0))
    text = asyncio.run(front.metrics()).decode()
    samples = {(s.name, s.labels.get("worker")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("payswitch_reversal_queue", "supervisor")] == 3
    assert samples[("payswitch_reversal_queue", "1")] == 0
    assert 29 <= samples[("payswitch_reversal_oldest_age_seconds", "supervisor")] <= 60
    code, _, body = asyncio.run(front._route(b"GET", b"/readyz"))
    doc = json.loads(body)
    assert code == 503
    assert doc["reversal_sender"] == {"worker": 0, "ready": False, "reversal_queue": 3,
                                      "detail": "reversals wait in the journal until worker 0 is back"}


# --- reloads ----------------------------------------------------------------------------


def test_a_worker_that_started_while_a_reload_was_accepted_takes_it_when_ready(service_key):
    import signal
    import socket

    from switch.io.workers import Fleet

    class Proc:
        pid, returncode = 4242, None

        def __init__(self):
            self.signals = []

        def poll(self):
            return None

        def send_signal(self, sig):
            self.signals.append(sig)

    fleet = Fleet(service_key.make_config(), "sw.toml", 1, "text", text="old")
    w = fleet.workers[0]
    w.proc = Proc()
    w.started_on = "old"  # it read the accepted copy as it was when it was started
    fleet.accepted = "new"  # then a reload was accepted: SIGHUP went only to the ready workers
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        w.control = ours
        theirs.sendall(b"ready\n")
        fleet._on_control(w, ours)
    finally:
        ours.close()
        theirs.close()
    assert w.ready.is_set()
    assert w.proc.signals == [signal.SIGHUP]  # it re-reads the accepted copy: the others' configuration


def test_a_bad_file_is_refused_by_the_supervisor_and_by_a_workers_own_port(tmp_path, monkeypatch):
    """A reload goes through the supervisor: a worker's own /admin/reload re-reads only the
    copy the supervisor accepted, so it must not answer "reloaded" for a file nobody checked."""
    import json
    import os

    from tests import e2e
    from tests.test_e2e_workers import fleet

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(e2e.ROOT), os.environ.get("PYTHONPATH")) if p))
    sw = fleet(tmp_path, workers=2, slow_ms=0)
    try:
        good = sw.config.read_text()
        sw.config.write_text(good.replace("response_timeout = 30.0", 'response_timeout = "soon"'))
        status, body = sw.http_post("/admin/reload")
        message = json.loads(body)["message"]
        assert status == 400 and str(sw.config) in message and "$.response_timeout" in message
        port = json.loads(sw.http_get("/healthz")[1])["workers"][0]["http_port"]
        status, body = e2e.http_post(port, "/admin/reload")  # worker 0's own port
        message = json.loads(body)["message"]
        assert status == 400 and "supervisor" in message and "nothing reloaded" in message, message
        _, metrics = sw.http_get("/metrics")
        assert b'payswitch_config_reloads_total{result="ok",worker="0"} 0.0' in metrics
        log = (tmp_path / "switch.log").read_text()
        assert log.count("reload rejected, keeping") == 1 and "configuration reloaded" not in log
    finally:
        sw.stop()


# --- a worker killed with a purchase at its acquirer --------------------------------------


def test_a_retransmission_of_a_killed_workers_purchase_on_another_worker_is_96_and_reversed_once(
        tmp_path, monkeypatch):
    import os
    import signal

    from tests import e2e
    from tests.e2e import wait_for
    from tests.test_e2e_workers import clients_on, fleet, ledger, rows, worker_pids

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(e2e.ROOT), os.environ.get("PYTHONPATH")) if p))
    sw = fleet(tmp_path)  # bank-a answers 2.5 s late
    try:
        on = clients_on(sw, {0, 1})
        doc = e2e.purchase(5200)
        on[1].send(doc)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in ledger(sw)), 10)
        os.kill(worker_pids(sw)[1], signal.SIGKILL)
        t0 = time.monotonic()
        again = on[0].transact(doc)  # the terminal reconnected to worker 0 and sent it again
        assert again["39"] == "96" and "38" not in again, again
        # Once the sender (worker 0 here) queued its reversal, not at the end of response_timeout (30 s).
        assert time.monotonic() - t0 < 5.0
        assert wait_for(lambda: rows(tmp_path, "stan = ?", (doc["11"],))[0]["state"] == "reversed", 15)
        assert on[0].transact(doc)["39"] == "96"  # after its reversal too, never authorized again
        auths = [e for e in ledger(sw) if e["event"] == "authorization"]
        reversals = [e for e in ledger(sw) if e["event"] == "reversal"]
        assert len(auths) == 1 and [e["original_stan"] for e in reversals] == [auths[0]["stan"]], (auths, reversals)
    finally:
        sw.stop()


# --- host STANs: a block held by an idle worker while the others wrap the sequence --------


def test_a_block_an_idle_worker_holds_is_dropped_before_the_journal_hands_it_out_again():
    from switch.core.commands import Op
    from switch.core.host_stans import STAN_BLOCK, HostRefs

    journal = {"next": 1}

    def answer(command):
        if command.name == "reserve_stans":
            start = journal["next"]
            journal["next"] = (start - 1 + command.args[1]) % 999_999 + 1
            return start
        if command.name == "stan_position":
            return journal["next"]
        raise AssertionError(command)

    idle = HostRefs({"bank-a"}, clock=lambda: 0.0, on_refilled=lambda flight: None)
    _drive(idle.prefill(), answer)
    assert [idle.take_stan("bank-a") for _ in range(100)][-1] == "000100"
    for _ in range(98):  # the busy workers: 980,000 STANs while the idle one keeps its block
        answer(Op("reserve_stans", "bank-a", STAN_BLOCK))
    _drive(idle.refill_low(), answer)  # its sweep
    theirs = set()
    for _ in range(3):  # the busy workers' next blocks, past 999999 and on
        start = answer(Op("reserve_stans", "bank-a", STAN_BLOCK))
        theirs |= {f"{(start - 1 + i) % 999_999 + 1:06d}" for i in range(STAN_BLOCK)}
    ours = {idle.take_stan("bank-a") for _ in range(STAN_BLOCK - 200)}
    assert not ours & theirs, sorted(ours & theirs)[:5]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_the_journal_tells_where_its_host_stan_sequence_stands(tmp_path, writer):
    from switch.journal import open_journal

    j = open_journal(f"sqlite://{tmp_path}/journal.sqlite", writer=writer)
    try:
        assert j.stan_position("bank-a").result(10) == 1  # nothing reserved yet
        assert j.reserve_stans("bank-a", 999_990).result(10) == 1
        assert j.stan_position("bank-a").result(10) == 999_991
        j.reserve_stans("bank-a", 20).result(10)
        assert j.stan_position("bank-a").result(10) == 12  # 999991..999999, 000001..000011
        assert j.stan_position("bank-b").result(10) == 1
    finally:
        j.close()


# --- a terminal's 0400 for a request another worker has journaled but not sent yet ---------


def test_a_reversal_of_a_request_another_worker_has_not_sent_yet_waits_for_it_and_queues_its_reversal(
        service_key):
    from switch.journal import TxnRecord

    ts = service_key

    async def before_start(sw):
        sw.engine.shared_journal = True

    async def scenario(sw):
        # Another worker journaled the request (a completion takes the long way: "received"
        # first) and is about to send it; this worker has no flight for it.
        original = TxnRecord(terminal_id=ts.TID, merchant_id=ts.MERCHANT, mti="0200", stan="000001",
                             transmission_time=ts.T7, kind="card", state="received")
        rec, created = await ts.journal(sw, sw.journal.insert(original))
        assert created

        async def other_worker_sends():
            await asyncio.sleep(0.2)
            await ts.journal(sw, sw.journal.update_if(rec.id, "received", state="sent", acquirer="bank-a"))

        sending = asyncio.create_task(other_worker_sends())
        answer = ts.TERM.decode(await asyncio.wait_for(sw.handle(ts.reversal("000002", "000001")), ts.WAIT))
        await sending
        assert answer[39] == "00"
        # The reversal is queued: the other worker's answer then finds it moved on (68), and
        # an approval is reversed; not a completion that stands after its 0400 was answered 00.
        assert (await ts.record(sw, "000001")).state == "reversal_pending"

    ts.run(scenario, before_start=before_start)
