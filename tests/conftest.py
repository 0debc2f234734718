"""Fixtures the end-to-end modules share, and the check that the code under test is the code on disk."""
from __future__ import annotations

import signal

import pytest

from switch import compiled
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


def pytest_configure(config):
    # A request-path module compiled from an older source would test the old
    # code (switch/compiled.py): stop before the first test, not after a
    # suite that passed on what is no longer there.
    stale = compiled.problems()
    if stale:
        pytest.exit("the compiled request path does not match its source:\n  " + "\n  ".join(stale), returncode=4)


@pytest.fixture
def client(switch):
    """A terminal connection to the listener of the module's ``switch`` fixture (closed after the test)."""
    c = Client(switch.ports["term"])
    yield c
    c.close()
