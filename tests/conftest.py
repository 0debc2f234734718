"""Fixtures the end-to-end modules share."""
from __future__ import annotations

import signal

import pytest

from tests.e2e import Client


@pytest.fixture(autouse=True)
def _stop_signals_restored():
    """A test that runs ``serve`` in this process leaves its SIGTERM/SIGINT/SIGHUP handlers
    (switch.io.early_stop, switch.io.hangup) behind; a process forked later (the
    simulation's pool) would inherit them and ignore the SIGTERM that ends it."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)


@pytest.fixture
def client(switch):
    """A terminal connection to the listener of the module's ``switch`` fixture (closed after the test)."""
    c = Client(switch.ports["term"])
    yield c
    c.close()
