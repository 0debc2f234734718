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
