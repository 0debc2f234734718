"""A switch whose journal writer thread (``[journal] writer = "thread"``, the default)
dies: it stops as at SIGTERM and exits 1 for the service manager to start it again,
which recovers, as when the writer process dies (tests/test_e2e_writer_death.py).

The thread dies the way a bug kills it: an exception that is not an ``Exception``
(as ``SystemExit``) raised while a batch runs fails that batch and, re-raised,
ends the writer loop.  The switch under test is ``payswitch serve`` with the
journal made to raise one for a purchase of ``FATAL`` minor units."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import e2e
from tests.e2e import wait_for
from tests.test_e2e_writer_death import SLOW_MS, restart_reverses, states

pytestmark = pytest.mark.e2e

FATAL = 6666
WHY = "journal writer thread died: WriterBug('a bug in the journal writer thread')"
DIED = (f"{WHY}: stopping the switch; the service manager starts it again"
        ' (runbook: "The journal writer thread died")')

LAUNCHER = f"""
import sys
from switch import cli
from switch.journal import TxnRecord
from switch.journal.sqlite import SqliteJournal

class WriterBug(BaseException):
    pass

run_ops = SqliteJournal._run_ops

def run_ops_or_die(self, batch, outcomes, *, guarded):
    if any(op[2] and type(op[2][0]) is TxnRecord and op[2][0].amount == {FATAL} for op in batch):
        raise WriterBug("a bug in the journal writer thread")
    return run_ops(self, batch, outcomes, guarded=guarded)

SqliteJournal._run_ops = run_ops_or_die
sys.exit(cli.main(sys.argv[1:]))
"""


def slow_config(tmp_path: Path) -> tuple[str, dict]:
    text, ports = e2e.card_config(tmp_path, acquirer_timeout=8.0)
    ledger = str(tmp_path / "bank-a.ledger")
    slow = f'args = ["--ledger", "{ledger}", "--latency-ms", "{SLOW_MS}"]'
    text = text.replace(f'args = ["--ledger", "{ledger}"]', slow)
    assert slow in text and "writer" not in text  # the default: the writer thread
    return text, ports


def test_the_switch_stops_and_exits_1_when_its_journal_writer_thread_dies(tmp_path):
    text, ports = slow_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    sw.command = [sys.executable, "-c", LAUNCHER]
    sw.start(timeout=60)
    try:
        idle, busy = e2e.Client(ports["term"], timeout=30), e2e.Client(ports["term"], timeout=30)
        done = idle.transact(e2e.purchase(1000, e2e.MASTERCARD))
        assert done["39"] == "00"
        in_flight = e2e.purchase(2500)  # VISA: at bank-a for SLOW_MS
        busy.send(in_flight)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in sw.ledger("bank-a")), 10)
        # Its batch fails (not recorded: 96) and the writer thread ends.
        assert idle.transact(e2e.purchase(FATAL, e2e.MASTERCARD))["39"] == "96"
        # Answered as it can be: the acquirer's approval cannot be journaled, so it is not given.
        assert busy.recv()["39"] == "96"
        assert sw.proc.wait(SLOW_MS / 1000 + 10) == 1
        with pytest.raises((ConnectionError, OSError)):  # no longer accepting
            e2e.Client(ports["term"], timeout=2)
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert log.count(DIED) == 1, log
    assert f"{WHY}: the traceback, for the bug report" in log and "Traceback" in log
    assert f"payswitch: stopped: {WHY}" in log
    assert states(tmp_path) == {done["11"]: "answered", in_flight["11"]: "sent"}
    restart_reverses(tmp_path, text, ports, in_flight["11"])
