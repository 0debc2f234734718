"""A switch whose journal writer process hangs (SIGSTOP: alive, silent) notices within
journal_watch.HANG_AFTER, kills it, answers the payment waiting on it 96 and exits 1,
as when the writer dies (tests/test_e2e_writer_death.py); never an approval unrecorded."""
from __future__ import annotations

import signal
import sys
import time

import pytest

from tests import e2e
from tests.test_e2e_writer_death import _this_checkout, process_writer_config, states, writer_of  # noqa: F401

pytestmark = pytest.mark.e2e

HANG_AFTER = 2.0
LAUNCHER = f"""
import sys
from switch import cli
from switch.io import journal_watch
journal_watch.HANG_AFTER = {HANG_AFTER}
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_hung_journal_writer_process_is_killed_and_the_switch_exits_1(tmp_path):
    text, ports = process_writer_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    sw.command = [sys.executable, "-c", LAUNCHER]
    sw.start(timeout=60)
    try:
        done = e2e.Client(ports["term"], timeout=30).transact(e2e.purchase(1000, e2e.MASTERCARD))
        assert done["39"] == "00"
        writer = writer_of(sw)
        writer.send_signal(signal.SIGSTOP)
        waiting = e2e.Client(ports["term"], timeout=30)
        t0 = time.monotonic()
        stuck = e2e.purchase(1300, e2e.MASTERCARD)
        answer = waiting.transact(stuck)
        assert answer["39"] == "96"  # its record never confirmed: never approved
        assert time.monotonic() - t0 < HANG_AFTER + 8
        assert sw.proc.wait(15) == 1
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert 'journal writer process has not answered for' in log and "killing it" in log, log
    assert "payswitch: stopped: journal writer process died (exit code -9)" in log
    assert states(tmp_path).get(stuck["11"]) is None and states(tmp_path)[done["11"]] == "answered"


def test_a_hung_shared_journal_writer_is_killed_and_every_worker_stops(tmp_path):
    import json

    text, ports = e2e.card_config(tmp_path)
    text += f"\n[server]\nworkers = {json.dumps(2)}\n"
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    sw.command = [sys.executable, "-c", LAUNCHER]
    sw.start(timeout=60)
    try:
        assert e2e.Client(ports["term"], timeout=30).transact(e2e.purchase(1000, e2e.MASTERCARD))["39"] == "00"
        writer_of(sw).send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        answer = e2e.Client(ports["term"], timeout=12).transact(e2e.purchase(1300, e2e.MASTERCARD))
        assert answer["39"] == "96"
        assert time.monotonic() - t0 < HANG_AFTER + 8
        assert sw.proc.wait(30) == 1
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert "the journal writer process has not answered for" in log and "killing it" in log, log
    assert "payswitch: stopped: journal writer process exited (code -9)" in log
