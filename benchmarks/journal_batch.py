"""µs per card purchase in the SQLite journal: the sqlite3-module path against the compiled one.

Every purchase is one insert (state ``sent``) and one update that stores the
answer (state ``answered``, response code, auth code, response bytes): the
two writes the switch journals per transaction.  Rounds of ``--batch``
purchases are submitted at once (one group-commit batch each way), the two
journals alternate round by round in the same run, and the medians are
printed.  Both write synchronous=FULL files in a temporary directory.

    .venv/bin/python benchmarks/journal_batch.py [--batch 50] [--rounds 60]

"old" runs every operation through the sqlite3 module
(``GroupCommitter._run_ops``, as before native.sqlbatch); "new" is the
journal as shipped.  ``--old-schema`` gives the old path a journal with only
the migrations up to ``--old-version`` (the indexes and triggers it had).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from switch.journal import TxnRecord, pan_protect  # noqa: E402
from switch.journal import schema  # noqa: E402
from switch.journal.groupcommit import GroupCommitter  # noqa: E402
from switch.journal.sqlite import SqliteJournal  # noqa: E402

KEY = b"k" * 32


class Timed:
    """Adds up the writer thread's CPU time in batches (SQLite and Python; not the fsync wait)."""

    cpu = 0.0

    def _run_batch(self, batch):
        t0 = time.thread_time()
        try:
            super()._run_batch(batch)
        finally:
            self.cpu += time.thread_time() - t0


class NewPathJournal(Timed, SqliteJournal):
    """The journal as shipped."""


class SqlitePathJournal(Timed, SqliteJournal):
    """Every operation through the sqlite3 module, one statement at a time."""

    _run_ops = GroupCommitter._run_ops


def old_schema_journal(path: str, version: int) -> SqliteJournal:
    """A journal created with the migrations up to ``version`` only (then opened by the old path)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT")
    for number in range(1, version + 1):
        for statement in schema.MIGRATIONS[number - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    conn.close()
    # Opening migrates; pretend this build knows only `version`.
    saved = schema.SCHEMA_VERSION
    import switch.journal.sqlite as module

    module.SCHEMA_VERSION = version
    try:
        return SqlitePathJournal(path, hmac_key=KEY)
    finally:
        module.SCHEMA_VERSION = saved


class Purchases:
    def __init__(self) -> None:
        self.stan = 0
        self.masked, self.hashed = pan_protect("4761739001010119", KEY)

    def record(self) -> TxnRecord:
        self.stan += 1
        return TxnRecord(
            terminal_id="DEMO%04d" % (self.stan % 50), merchant_id="DEMO00000000001", mti="0200",
            stan="%06d" % (self.stan % 1_000_000), transmission_time="%010d" % (self.stan // 1_000_000),
            processing_code="000000", amount=1000, currency="978", pan_masked=self.masked,
            pan_hash=self.hashed, content_digest="ab" * 16, state="sent", acquirer="bank-a",
            host_stan="%06d" % (self.stan % 1_000_000), host_time="1129120000",
        )


def one_round(journal: SqliteJournal, purchases: Purchases, n: int) -> float:
    t0 = time.perf_counter()
    inserted = [journal.insert(purchases.record()) for _ in range(n)]
    ids = [f.result()[0].id for f in inserted]
    updated = [
        journal.update(i, state="answered", response_code="00", auth_code="123456", response=b"x" * 120)
        for i in ids
    ]
    for f in updated:
        f.result()
    return (time.perf_counter() - t0) / n * 1e6


def spin(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--old-schema", action="store_true")
    parser.add_argument("--old-version", type=int, default=4)
    parser.add_argument(
        "--busy-thread", action="store_true",
        help="a Python thread spins meanwhile, as the event loop does under load: every GIL "
             "hand-over of the writer then waits for it",
    )
    args = parser.parse_args()
    stop = threading.Event()
    if args.busy_thread:
        threading.Thread(target=spin, args=(stop,), daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        if args.old_schema:
            old = old_schema_journal(os.path.join(tmp, "old.sqlite"), args.old_version)
        else:
            old = SqlitePathJournal(os.path.join(tmp, "old.sqlite"), hmac_key=KEY)
        new = NewPathJournal(os.path.join(tmp, "new.sqlite"), hmac_key=KEY)
        times: dict[str, list[float]] = {"old": [], "new": []}
        cpu: dict[str, list[float]] = {"old": [], "new": []}
        purchases = {"old": Purchases(), "new": Purchases()}
        try:
            for r in range(args.rounds + 5):
                for name, journal in (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old)):
                    spent = journal.cpu
                    t = one_round(journal, purchases[name], args.batch)
                    if r >= 5:  # warm-up rounds not counted
                        times[name].append(t)
                        cpu[name].append((journal.cpu - spent) / args.batch * 1e6)
        finally:
            stop.set()
            old.close()
            new.close()
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    oc, nc = statistics.median(cpu["old"]), statistics.median(cpu["new"])
    note = f" (old schema v{args.old_version})" if args.old_schema else ""
    note += ", a busy thread" if args.busy_thread else ""
    print(f"batch {args.batch}, {args.rounds} rounds{note}, µs per purchase (insert + update), median:")
    print(f"  {'':10s} {'wall':>8s} {'writer CPU':>11s}")
    print(f"  {'old path':10s} {o:8.1f} {oc:11.1f}")
    print(f"  {'new path':10s} {n:8.1f} {nc:11.1f}")
    print(f"  {'old/new':10s} {o / n:7.2f}x {oc / nc:10.2f}x")


if __name__ == "__main__":
    main()
