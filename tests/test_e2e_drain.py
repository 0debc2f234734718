"""SIGTERM drains: requests in flight are answered by their acquirer, not turned into 68s.

The acquirer simulator answers after 1.5 s; purchases are sent on several
connections, SIGTERM arrives while all of them wait at the acquirer, and each
must still get its 00 (and nothing reversed), the listener must stop taking
connections, and the process must exit cleanly once the last answer is out.
"""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from tests import e2e

LATENCY_MS = 1500
CONNECTIONS = 6


def drain_config(tmp) -> tuple[str, dict]:
    ports = {name: e2e.free_port() for name in ("term", "http", "bank-a")}
    text = "drain_timeout = 20.0\n" + e2e.base_config(tmp, ports) + f"""
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:{ports['bank-a']}"]
timeout = 5.0
acquirer_id = "10000000001"

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[simulators]]
kind = "acquirer"
name = "bank-a"
port = {ports['bank-a']}
args = ["--latency-ms", "{LATENCY_MS}", "--ledger", "{tmp / 'bank-a.ledger'}"]
"""
    return text, ports


def test_sigterm_lets_requests_in_flight_finish(tmp_path):
    text, ports = drain_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        clients = [e2e.Client(ports["term"], timeout=20) for _ in range(CONNECTIONS)]
        answers: dict[int, dict] = {}

        def pay(i: int) -> None:
            answers[i] = clients[i].transact(e2e.purchase(1000 + 10 * i, terminal=f"DEMO{100 + i:04d}"))

        threads = [threading.Thread(target=pay, args=(i,)) for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        # Wait until every purchase is at the acquirer (its ledger has them all).
        deadline = time.monotonic() + 10
        while len([e for e in sw.ledger("bank-a") if e["event"] == "authorization"]) < CONNECTIONS:
            assert time.monotonic() < deadline, "purchases never reached the acquirer"
            time.sleep(0.02)
        t_term = time.monotonic()
        sw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Draining: no new connections are taken.
        refused = False
        try:
            socket.create_connection(("127.0.0.1", ports["term"]), timeout=1).close()
        except OSError:
            refused = True
        assert refused, "the listener still accepts connections while draining"
        # ... and readiness says so, or a load balancer keeps sending terminals here.
        code, body = sw.http_get("/readyz")
        assert code == 503 and b"draining" in body, (code, body)
        assert sw.http_get("/healthz")[0] == 200
        for t in threads:
            t.join(20)
        codes = sorted(a["39"] for a in answers.values())
        assert codes == ["00"] * CONNECTIONS, f"in-flight requests answered {codes}"
        assert time.monotonic() - t_term >= LATENCY_MS / 1000 - 0.5  # they really waited for the acquirer
        assert sw.proc.wait(20) == 0
        reversals = [e for e in sw.ledger("bank-a") if e["event"] == "reversal"]
        assert reversals == [], f"drained requests were reversed: {reversals}"
        log = sw.log_text()
        assert "drained" in log
        for c in clients:
            c.close()
    finally:
        sw.stop()


def test_requests_still_at_the_acquirer_when_the_drain_runs_out_are_answered_68_and_reversed(tmp_path):
    """drain_timeout spent: each acquirer call still in flight is given up while the journal is
    open (68 to the terminal, reversal journaled with its card); the next start reverses them."""
    text, ports = drain_config(tmp_path)
    text = text.replace("drain_timeout = 20.0", "drain_timeout = 1.0").replace(
        f'"--latency-ms", "{LATENCY_MS}"', '"--latency-ms", "6000"')
    sw = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        clients = [e2e.Client(ports["term"], timeout=20) for _ in range(3)]
        answers: dict[int, str] = {}

        def pay(i: int) -> None:
            answers[i] = clients[i].transact(e2e.purchase(1000 + 10 * i, terminal=f"DEMO{100 + i:04d}"))["39"]

        threads = [threading.Thread(target=pay, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        e2e.wait_for(lambda: len([e for e in sw.ledger("bank-a") if e["event"] == "authorization"]) == 3)
        sw.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(20)
        assert sorted(answers.values()) == ["68"] * 3
        assert sw.proc.wait(20) == 0
        log = sw.log_text()
        assert "3 acquirer call(s) still in flight given up" in log
        assert "Traceback" not in log and "ERROR" not in log
        for c in clients:
            c.close()
        # The next start sends the three reversals, each with its card (field 2).
        sw = e2e.SwitchProcess(tmp_path, text, ports).start()
        e2e.wait_for(lambda: len([e for e in sw.ledger("bank-a") if e["event"] == "reversal"]) == 3, timeout=30)
        reversals = [e for e in sw.ledger("bank-a") if e["event"] == "reversal"]
        assert all(e["response_code"] == "00" for e in reversals)
        assert sorted(e["amount"] for e in reversals) == [1000, 1010, 1020]
        pans = {e["stan"]: e["pan"] for e in sw.ledger("bank-a") if e["event"] == "authorization"}
        assert all(e["pan"] and e["pan"] == pans[e["original_stan"]] for e in reversals)  # field 2 repeated
    finally:
        sw.stop()


class Answers:
    """Reads one terminal connection in a thread: every answer by field 11, and when the switch closed it."""

    def __init__(self, client: e2e.Client) -> None:
        self.client = client
        self.got: dict[str, list[tuple[float, dict]]] = {}
        self.closed_at: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                doc = self.client.recv()
                self.got.setdefault(doc["11"], []).append((time.monotonic(), doc))
        except (OSError, ConnectionError):
            self.closed_at = time.monotonic()

    def wait(self, stan: str, count: int = 1, timeout: float = 5.0) -> tuple[float, dict]:
        """The ``count``-th answer with this STAN: (when it came, the message)."""
        assert e2e.wait_for(lambda: len(self.got.get(stan, ())) >= count, timeout), f"no answer {count} for {stan}"
        return self.got[stan][count - 1]


def _closed_by_peer(c: e2e.Client, within: float) -> bool:
    c.sock.settimeout(within)
    try:
        return c.sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _draining(ports: dict, workers: int) -> bool:
    """Whether the switch (each worker: its own /readyz) has begun draining (or is gone)."""
    http = [ports["http"]] if workers == 1 else [ports["http"] + 1 + i for i in range(workers)]
    for port in http:
        try:
            if e2e.http_request(port, "GET", "/readyz")[0] != 503:
                return False
        except OSError:  # a worker with nothing in flight drained at once and exited
            pass
    return True


def _journal_state(tmp, terminal: str, stan: str) -> str:
    import sqlite3

    with sqlite3.connect(tmp / "journal.sqlite") as db:
        return db.execute("SELECT state FROM txn WHERE terminal_id = ? AND stan = ? AND mti = '0200'",
                          (terminal, stan)).fetchone()[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_drain_starts_nothing_new_answers_from_the_journal_and_ends_with_the_last_answer(tmp_path, workers):
    """A cash-register host still connected at SIGTERM keeps sending: each new purchase is
    answered 91 at once and never reaches the acquirer, its retransmission and repeat of an
    answered purchase get the original answer, its reversal is recorded; the idle connection
    is closed at once, the host's after the answer of its purchase in flight, and the process
    exits right after that answer, not at drain_timeout (20 s)."""
    text, ports = drain_config(tmp_path)
    if workers > 1:
        text += f"\n[server]\nworkers = {workers}\n"
    sw = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        host = e2e.Client(ports["term"], timeout=20)
        p0 = e2e.purchase(1000, terminal="DEMO0100")
        first = host.transact(p0)
        assert first["39"] == "00"
        idle = e2e.Client(ports["term"], timeout=20)
        assert idle.transact(e2e.purchase(1010, terminal="DEMO0101"))["39"] == "00"  # taken by the switch
        answers = Answers(host)
        p1 = e2e.purchase(1020, terminal="DEMO0100")
        host.send(p1)
        assert e2e.wait_for(lambda: len([e for e in sw.ledger("bank-a") if e["event"] == "authorization"]) == 3)
        t_term = time.monotonic()
        sw.proc.send_signal(signal.SIGTERM)

        # The connection with nothing in flight is closed at once (p1 is still at the acquirer).
        assert _closed_by_peer(idle, 1.0), "an idle connection was left open while draining"
        assert time.monotonic() - t_term < LATENCY_MS / 1000 - 0.2
        assert e2e.wait_for(lambda: _draining(ports, workers), 1.0)  # every worker, not only the idle one's

        # A new purchase: 91 at once.
        p2 = e2e.purchase(1030, terminal="DEMO0100")
        t_sent = time.monotonic()
        host.send(p2)
        t_got, a2 = answers.wait(p2["11"])
        assert (a2["t"], a2["39"]) == ("0210", "91") and t_got - t_sent < 1.0, (a2, t_got - t_sent)
        # Its retransmission and its repeat of the answered p0: the original answer.
        host.send(p0)
        host.send({**p0, "t": "0201"})
        for n in (1, 2):
            again = answers.wait(p0["11"], n)[1]
            assert again["t"] == "0210" and [again.get(f) for f in ("37", "38", "39")] == [
                first.get(f) for f in ("37", "38", "39")], (again, first)
        # A reversal is recorded and answered, as always; so is an echo (0800, not refused).
        rev = e2e.reversal_of(p0)
        host.send(rev)
        assert answers.wait(rev["11"])[1]["39"] == "00"
        echo = {"t": "0800", "7": e2e.now()["7"], "11": e2e.stan(), "41": "DEMO0100", "70": "301"}
        host.send(echo)
        assert [answers.wait(echo["11"])[1].get(f) for f in ("t", "39")] == ["0810", "00"]
        if workers == 1:  # (a worker's own metrics are on a port of its own)
            code, body = sw.http_get("/metrics")
            assert code == 200 and b"payswitch_requests_refused_draining_total 1.0" in body
            # As the runbook says: the refusal is an answer of no payment kind too.
            assert b'payswitch_requests_total{code="91",kind="unknown",mclass="financial"} 1.0' in body
        # The host keeps sending new purchases until its connection is closed: each one 91.
        busy = []
        while answers.closed_at is None and time.monotonic() - t_term < 10:
            p = e2e.purchase(1040 + len(busy), terminal="DEMO0100")
            try:
                host.send(p)
            except OSError:
                break
            busy.append(p)
            time.sleep(0.1)
        t_p1, a1 = answers.wait(p1["11"])
        assert a1["39"] == "00"  # the request in flight at SIGTERM: answered by its acquirer
        assert e2e.wait_for(lambda: answers.closed_at is not None, 2.0), "the host's connection stayed open"
        assert answers.closed_at - t_p1 < 1.0
        assert busy, "the host sent nothing while p1 was in flight"
        for p in busy:
            if p["11"] in answers.got:  # those sent after the close were never read
                assert answers.got[p["11"]][0][1]["39"] == "91"
        assert sw.proc.wait(10) == 0
        assert time.monotonic() - t_p1 < 3.0  # the drain ended with p1's answer, not at drain_timeout
        auths = sorted(e["amount"] for e in sw.ledger("bank-a") if e["event"] == "authorization")
        assert auths == [1000, 1010, 1020], f"requests sent to the acquirer while draining: {auths}"
        assert _journal_state(tmp_path, "DEMO0100", p0["11"]) in ("reversal_pending", "reversed")
        log = sw.log_text()
        assert "answered 91: draining, not started" in log and "drained" in log
        assert "still in flight given up" not in log and "Traceback" not in log, log
        host.close()
        idle.close()
    finally:
        sw.stop()
