"""Logs: one JSON object per event with the payment's RRN and terminal; levels validated."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from switch import logs
from tests import e2e

ROOT = Path(__file__).resolve().parent.parent


def record(msg="txn %d queued", args=(17,), level=logging.WARNING, **extra):
    rec = logging.LogRecord("payswitch", level, __file__, 1, msg, args, None)
    rec.created, rec.msecs = 1769860800.123, 123.0  # 2026-01-31T12:00:00.123Z
    rec.__dict__.update(extra)
    return rec


def test_json_event_has_the_fixed_keys_and_the_payment_context():
    line = logs.JsonFormatter().format(record(rrn="000000000017", terminal="DEMO0001", unrelated="x"))
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-01-31T12:00:00.123Z", "level": "WARNING", "logger": "payswitch",
        "msg": "txn 17 queued", "rrn": "000000000017", "terminal": "DEMO0001",
    }


def test_json_event_without_context_and_with_an_exception():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("failed", (), logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(rec)
    event = json.loads(line)
    assert set(event) == {"ts", "level", "logger", "msg", "exc"} and "\n" not in line
    assert event["exc"].endswith("ValueError: bad\nthing")


@pytest.mark.parametrize("value, level", [(None, "INFO"), ("", "INFO"), ("debug", "DEBUG"), (" Warn ", "WARNING"), ("ERROR", "ERROR")])
def test_levels(value, level):
    assert logs.level_from_env(value) == level


@pytest.mark.parametrize("value", ["LOUD", "10", "info,debug"])
def test_a_bad_level_is_named(value):
    with pytest.raises(ValueError) as e:
        logs.level_from_env(value)
    assert str(e.value) == f"PAYSWITCH_LOG must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}"


@pytest.mark.e2e
def test_serve_with_json_logs_writes_only_json_to_stderr(tmp_path):
    """Simulators' own stderr lines included: they become events of payswitch.sim.NAME."""
    text, ports = e2e.card_config(tmp_path)
    (tmp_path / "switch.toml").write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PAYSWITCH_LOG="DEBUG")
    p = subprocess.Popen([sys.executable, "-m", "switch.cli", "serve", "--config", "switch.toml", "--log-format", "json"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("payswitch: ready"):
                break
        # something for bank-a's simulator to complain about on its stderr
        with socket.create_connection(("127.0.0.1", ports["bank-a"]), timeout=10) as s:
            s.sendall(b"\x00\x05hello")
            assert s.recv(100) == b""  # it logged, then closed
        p.terminate()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    events = [json.loads(line) for line in err.splitlines()]
    assert events and all({"ts", "level", "logger", "msg"} <= set(e) for e in events)
    assert any(e["msg"].startswith("stopping") and (e["level"], e["logger"]) == ("INFO", "payswitch") for e in events)
    assert any(e["logger"] == "payswitch.sim.bank-a" and "bad message" in e["msg"] for e in events)
