"""A single switch process whose journal writer process (``[journal] writer = "process"``) dies:
it stops as at SIGTERM and exits 1 for the service manager to start it again, which
recovers (the journal on disk is intact, what was in flight is reversed), as the
supervisor of ``serve --workers`` does.  A stop of ours is no death: exit 0."""
from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from tests import e2e
from tests.e2e import wait_for

pytestmark = pytest.mark.e2e

SLOW_MS = 1500  # bank-a (VISA) answers this late: a purchase is in flight when the writer dies
DIED = ('journal writer process died (exit code -9): stopping the switch; the service manager starts it again'
        ' (runbook: "The journal writer process died")')


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch):
    # The writer process imports this checkout, not an install elsewhere.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(e2e.ROOT), os.environ.get("PYTHONPATH")) if p))


def process_writer_config(tmp_path: Path) -> tuple[str, dict]:
    text, ports = e2e.card_config(tmp_path, acquirer_timeout=8.0)
    key_line = f'hmac_key_file = "{tmp_path / "keys" / "journal.key"}"\n'
    assert key_line in text
    text = text.replace(key_line, key_line + 'writer = "process"\n')
    ledger = str(tmp_path / "bank-a.ledger")
    slow = f'args = ["--ledger", "{ledger}", "--latency-ms", "{SLOW_MS}"]'
    text = text.replace(f'args = ["--ledger", "{ledger}"]', slow)
    assert slow in text
    return text, ports


def writer_of(sw: e2e.SwitchProcess) -> psutil.Process:
    [writer] = [c for c in psutil.Process(sw.proc.pid).children()
                if "switch.journal.writer" in " ".join(c.cmdline())]
    return writer


def states(tmp_path: Path) -> dict[str, str]:
    conn = sqlite3.connect(tmp_path / "journal.sqlite", timeout=10)
    try:
        return dict(conn.execute("SELECT stan, state FROM txn"))
    finally:
        conn.close()


def test_the_switch_stops_and_exits_1_when_its_journal_writer_process_dies(tmp_path):
    text, ports = process_writer_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports).start(timeout=60)
    try:
        idle, busy = e2e.Client(ports["term"], timeout=30), e2e.Client(ports["term"], timeout=30)
        done = idle.transact(e2e.purchase(1000, e2e.MASTERCARD))
        assert done["39"] == "00"
        children = psutil.Process(sw.proc.pid).children()
        writer = writer_of(sw)
        in_flight = e2e.purchase(2500)  # VISA: at bank-a for SLOW_MS
        busy.send(in_flight)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in sw.ledger("bank-a")), 10)
        writer.kill()
        # Answered as it can be: the acquirer's approval cannot be journaled, so it is not given.
        assert busy.recv()["39"] == "96"
        assert sw.proc.wait(SLOW_MS / 1000 + 10) == 1
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)  # simulators too
        with pytest.raises((ConnectionError, OSError)):  # no longer accepting
            e2e.Client(ports["term"], timeout=2)
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert log.count(DIED) == 1, log
    assert "payswitch: stopped: journal writer process died (exit code -9)" in log
    assert states(tmp_path) == {done["11"]: "answered", in_flight["11"]: "sent"}
    restart_reverses(tmp_path, text, ports, in_flight["11"])


def restart_reverses(tmp_path, text: str, ports: dict, stan: str) -> None:
    """What the service manager does next recovers: the journal is intact, the purchase
    ``stan`` left in flight is reversed at the acquirer, new purchases are approved."""
    again = e2e.SwitchProcess(tmp_path, text, ports).start(timeout=60)
    try:
        assert wait_for(lambda: any(e["event"] == "reversal" for e in again.ledger("bank-a")), 15)
        assert wait_for(lambda: states(tmp_path)[stan] == "reversed", 10)
        assert e2e.Client(ports["term"]).transact(e2e.purchase(1200, e2e.MASTERCARD))["39"] == "00"
    finally:
        again.stop()
    assert again.proc.returncode == 0


def test_a_stop_closes_the_journal_writer_process_and_is_no_death(tmp_path):
    text, ports = process_writer_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports).start(timeout=60)
    try:
        assert e2e.Client(ports["term"]).transact(e2e.purchase(1000, e2e.MASTERCARD))["39"] == "00"
        writer = writer_of(sw)
        # As systemd stops a service: SIGTERM to every process of it (the writer ignores it).
        writer.send_signal(signal.SIGTERM)
        sw.proc.send_signal(signal.SIGTERM)
        assert sw.proc.wait(30) == 0
        assert not writer.is_running()  # closed by the switch, not left behind
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert "drained" in log and "writer process died" not in log and "stopped:" not in log, log
