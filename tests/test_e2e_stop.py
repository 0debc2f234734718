"""Stopping as a service manager does: SIGTERM while the switch still starts is a clean
stop (exit 0, the simulators stopped, the journal closed and its lock released)."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests import e2e

pytestmark = pytest.mark.e2e


class SilentServer:
    """Accepts connections and never answers: an acquirer whose probe holds start-up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def slow_start_config(tmp, silent_port: int) -> tuple[str, dict]:
    """A bundled card simulator, and a wallet acquirer whose start-up probe gets no answer."""
    ports = {name: e2e.free_port() for name in ("term", "http", "bank-a")}
    secret = tmp / "keys" / "micropay_secret"  # apart from the journal (keys/ is made by base_config)
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(os.urandom(16).hex())
    secret.chmod(0o600)
    text = e2e.base_config(tmp, ports) + f"""
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:{ports['bank-a']}"]
timeout = 5.0
acquirer_id = "10000000001"

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:{silent_port}"]
timeout = 10.0
secret_file = "{secret}"

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[simulators]]
kind = "acquirer"
name = "bank-a"
port = {ports['bank-a']}
"""
    return text, ports


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _lock_free(journal) -> bool:
    fd = os.open(f"{journal}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _assert_stopped_cleanly(tmp, ports, code: int, log: str, signame: str = "SIGTERM") -> None:
    assert code == 0, (code, log)
    assert f"{signame} received while starting: stopped before serving" in log, log
    assert "Traceback" not in log, log
    assert _refused(ports["bank-a"]), "the bundled simulator outlived the switch"
    journal = tmp / "journal.sqlite"
    if journal.exists():
        assert _lock_free(journal)
        # closed, not abandoned: SQLite removes the write-ahead log with its last connection
        assert not (tmp / "journal.sqlite-wal").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_acquirers_sign_on_is_clean(tmp_path, sig):
    silent = SilentServer()
    text, ports = slow_start_config(tmp_path, silent.port)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO")
    sw.proc = subprocess.Popen([sys.executable, "-m", "switch.cli", "serve", "--config", str(sw.config)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=sw.log, text=True)
    try:
        # the journal is open and the wallet's probe waits for an answer: start-up is under way
        assert e2e.wait_for(lambda: silent.accepted, timeout=20), sw.log_text()
        t0 = time.monotonic()
        sw.proc.send_signal(sig)
        code = sw.proc.wait(15)
        out = sw.proc.stdout.read()
        assert time.monotonic() - t0 < 5  # not after the probe's own timeout and a full start
        assert "payswitch: ready" not in out
        _assert_stopped_cleanly(tmp_path, ports, code, sw.log_text(), signal.Signals(sig).name)
    finally:
        sw.stop()
        silent.close()


PRE_LOOP = """
import os, signal, sys, time
from switch.io import app, children

started = children.Children.start

def start_then_stop(self, sims, timeout=20.0):
    started(self, sims, timeout)  # the simulators run: now the stop comes, before the event loop
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    print("start-up went on", flush=True)

children.Children.start = start_then_stop
sys.exit(app.run(sys.argv[1]))
"""


def test_a_stop_while_the_simulators_start_is_clean(tmp_path):
    silent = SilentServer()
    text, ports = slow_start_config(tmp_path, silent.port)
    (tmp_path / "switch.toml").write_text(text)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO", PYTHONPATH=str(e2e.ROOT))
    try:
        p = subprocess.run([sys.executable, "-c", PRE_LOOP, str(tmp_path / "switch.toml")], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=30)
    finally:
        silent.close()
    assert "start-up went on" not in p.stdout
    _assert_stopped_cleanly(tmp_path, ports, p.returncode, p.stderr)
    assert "simulator bank-a" in p.stderr  # it had started


def test_a_stop_while_the_workers_start_is_clean(tmp_path):
    """serve --workers 2: SIGTERM while worker 0 signs on stops it, the journal writer and the
    simulators; the supervisor exits 0 without starting the other worker."""
    silent = SilentServer()
    text, ports = slow_start_config(tmp_path, silent.port)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO")
    sw.proc = subprocess.Popen([sys.executable, "-m", "switch.cli", "serve", "--config", str(sw.config),
                                "--workers", "2"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=sw.log, text=True)
    try:
        assert e2e.wait_for(lambda: silent.accepted, timeout=30), sw.log_text()
        sw.proc.send_signal(signal.SIGTERM)
        code = sw.proc.wait(20)
        log = sw.log_text()
        assert code == 0, (code, log)
        assert "SIGTERM received while starting: stopping the workers started so far" in log, log
        assert "Traceback" not in log and "worker 1" not in log, log
        assert _refused(ports["bank-a"])
        assert _lock_free(tmp_path / "journal.sqlite")  # the journal writer process is gone
    finally:
        sw.stop()
        silent.close()


# -- wallet orders held for their customer at a stop ----------------------------------------


def _wallet_sims(tmp, wports) -> list[subprocess.Popen]:
    """The wallets outlive the switch here: what a stop left at them is what they say after."""
    from tests.test_e2e_wallet import CONFIRM

    sims = []
    for style in wports:
        p = subprocess.Popen(
            [sys.executable, "-m", "switch.cli", "sim", "wallet", "--style", style, "--port", str(wports[style]),
             "--confirm-delay", str(CONFIRM), "--key-dir", str(tmp / f"keys-{style}")],
            stdout=subprocess.PIPE, text=True, cwd=e2e.ROOT,
        )
        assert "listening on" in p.stdout.readline()
        sims.append(p)
    return sims


def _journal_row(tmp, order_no: str) -> tuple:
    import sqlite3

    with sqlite3.connect(tmp / "journal.sqlite") as db:
        return db.execute("SELECT state, response_code, order_state FROM txn WHERE order_ref = ?",
                          (order_no,)).fetchone()


def test_a_stop_cancels_the_wallet_orders_held_for_their_customer(tmp_path):
    """drain_timeout shorter than a wallet's hold: the orders waiting for their customer are
    cancelled (trade.pay) or reversed (micropay) at the wallet within the drain, their
    terminals answered 68 and the outcome journaled: nothing is left open at the wallet,
    nothing left for the next start."""
    from tests.test_e2e_wallet import TIMEOUT, code, order_of, wallet_extra, wallet_payment

    wports = {"tradepay": e2e.free_port(), "micropay": e2e.free_port()}
    sims = _wallet_sims(tmp_path, wports)
    extra = wallet_extra(tmp_path, wports, simulators=False).replace(f"timeout = {TIMEOUT}", "timeout = 25.0")
    text, ports = e2e.card_config(tmp_path, extra=extra)
    ports.update(wports)
    sw = e2e.SwitchProcess(tmp_path, "drain_timeout = 4.0\n" + text, ports).start()
    clients = []
    try:
        reqs = {style: wallet_payment(code(style, "03")) for style in wports}  # the customers never confirm
        for style, req in reqs.items():
            c = e2e.Client(ports["term"], timeout=20)
            c.send(req)
            clients.append(c)
        for style, req in reqs.items():
            e2e.wait_for(lambda: [o["state"] for o in order_of(sw, style, req)] == ["waiting"], timeout=10)
        t0 = time.monotonic()
        sw.proc.send_signal(signal.SIGTERM)
        answers = [c.recv()["39"] for c in clients]
        assert answers == ["68", "68"]
        assert sw.proc.wait(15) == 0
        assert time.monotonic() - t0 < 4.0 + 2.0  # within the drain, not after a cut and its 5 s
        for style, req in reqs.items():
            [order] = order_of(sw, style, req)
            assert order["state"] in ("closed", "refunded") and order["charges"] == order["refunds"], order
            no = req["41"] + req["7"] + req["11"]
            state, rc, order_state = _journal_row(tmp_path, no)
            assert (state, rc) == ("answered", "68") and order_state in ("closed", "reversed", "refunded"), (
                style, state, rc, order_state)
        log = sw.log_text()
        assert "still in flight given up" not in log and "(uncertain)" not in log, log
        assert "drain_timeout 4.0 is shorter than response_timeout" in log  # said at start
    finally:
        for c in clients:
            c.close()
        sw.stop()
        for p in sims:
            p.terminate()
            p.wait(10)
