"""The part one of several worker processes plays (``serve --workers``): :mod:`switch.io.service` takes it."""
from __future__ import annotations


class WorkerRole:
    """What one of several worker processes does besides serving terminals (``serve --workers``)."""

    def __init__(self, index: int, count: int, journal_socket: str, *, recover_all: bool) -> None:
        self.index = index
        self.count = count
        self.journal_socket = journal_socket  # the shared journal writer's socket
        self.sender = index == 0  # the one reversal sender, store-and-forward sweeper and orphan adopter
        self.recover_all = recover_all  # the first start of worker 0: reverse everything "sent"
