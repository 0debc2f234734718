"""Fixtures the end-to-end modules share."""
from __future__ import annotations

import pytest

from tests.e2e import Client


@pytest.fixture
def client(switch):
    """A terminal connection to the listener of the module's ``switch`` fixture (closed after the test)."""
    c = Client(switch.ports["term"])
    yield c
    c.close()
