"""The bundled simulators are started again when one dies (switch.io.children)."""
from __future__ import annotations

import logging
import os
import signal
import socket

from switch import config as config_mod
from switch.io import children as children_mod
from switch.io.children import Children
from tests.e2e import free_port, wait_for


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_a_simulator_that_dies_is_started_again_and_repeated_deaths_back_off(monkeypatch, caplog):
    monkeypatch.setattr(children_mod, "POLL", 0.05)
    monkeypatch.setattr(children_mod, "RESTART_MIN", 0.2)
    port = free_port()
    kids = Children()
    caplog.set_level(logging.INFO, "payswitch")
    kids.start([config_mod.Simulator(kind="acquirer", name="bank-a", port=port)])
    try:
        (_, first), = kids.procs
        assert listening(port)
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: kids.restarts.get("bank-a") == 1 and kids.procs[0][1].pid != first.pid, timeout=10)
        wait_for(lambda: listening(port), timeout=15)
        assert "simulator bank-a exited (code -9); starting it again" in caplog.text
        wait_for(lambda: "simulator bank-a started again" in caplog.text, timeout=15)
        # A second death right away waits out the back-off, then it is started again.
        second = kids.procs[0][1]
        os.kill(second.pid, signal.SIGKILL)
        wait_for(lambda: kids.restarts.get("bank-a") == 2, timeout=10)
        wait_for(lambda: listening(port), timeout=15)
    finally:
        kids.stop()
    assert kids.procs == [] and not kids._watcher.is_alive()
    assert all(p.poll() is not None for p in (first, second))
    wait_for(lambda: not listening(port), timeout=10)  # nothing started again after stop
