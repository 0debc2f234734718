"""µs per card purchase in the SQLite journal: the sqlite3-module path against the compiled one.

Every purchase is one insert (state ``sent``) and one update that stores the
answer (state ``answered``, response code, auth code, response bytes): the
two writes the switch journals per transaction.  Two journals on
synchronous=FULL files in a temporary directory, measured in the same run,
alternating, medians printed:

- "old": every operation through the sqlite3 module, one statement at a
  time (``GroupCommitter._run_ops``, BEGIN/COMMIT through ``execute``), as
  before native.sqlbatch; with ``--old-schema`` on a journal migrated only to
  ``--old-version`` (4: the triggers and indexes before issue 9);
- "new": the journal as shipped.

Default mode: rounds of ``--batch`` purchases submitted at once (one
group-commit batch of inserts, then one of updates); prints wall µs per
purchase and the writer thread's CPU µs per purchase (SQLite and Python,
not the fsync wait).

``--loop``: the switch's shape.  A uvloop event loop runs ``--clients``
closed-loop clients, each spending ``--work-us`` of Python per purchase (the
decoding, checks and encoding the switch does) around its two journal
writes, results handed over in bulk (``future``/``deliver``).  Prints
purchases per second for ``--seconds`` per measurement: here every time the
writer gives up the GIL it waits for the loop to give it back.

    .venv/bin/python benchmarks/journal_batch.py [--batch 50] [--rounds 60] [--old-schema]
    .venv/bin/python benchmarks/journal_batch.py --loop [--clients 50] [--work-us 150] [--seconds 3] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
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
    """Every operation through the sqlite3 module, one statement at a time, as before native.sqlbatch."""

    _run_ops = GroupCommitter._run_ops

    def _begin(self, writes: bool) -> None:
        self._conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._known.clear()
            self._data_version = version

    def _commit(self) -> None:
        self._conn.execute("COMMIT")
        self._unsure.clear()


def open_old(path: str, version: int | None, **options) -> SqliteJournal:
    """The old path, on a journal migrated up to ``version`` only (None: every migration)."""
    if version is None:
        return SqlitePathJournal(path, hmac_key=KEY, **options)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT")
    for number in range(1, version + 1):
        for statement in schema.MIGRATIONS[number - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    conn.close()
    saved = schema.SCHEMA_VERSION
    schema.SCHEMA_VERSION = version  # opening migrates no further
    try:
        return SqlitePathJournal(path, hmac_key=KEY, **options)
    finally:
        schema.SCHEMA_VERSION = saved


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


ANSWER = dict(state="answered", response_code="00", auth_code="123456", response=b"x" * 120)


def one_round(journal: SqliteJournal, purchases: Purchases, n: int) -> float:
    t0 = time.perf_counter()
    inserted = [journal.insert(purchases.record()) for _ in range(n)]
    ids = [f.result()[0].id for f in inserted]
    for f in [journal.update(i, **ANSWER) for i in ids]:
        f.result()
    return (time.perf_counter() - t0) / n * 1e6


def rounds_mode(args, tmp: str) -> None:
    old = open_old(os.path.join(tmp, "old.sqlite"), args.old_version if args.old_schema else None)
    new = NewPathJournal(os.path.join(tmp, "new.sqlite"), hmac_key=KEY)
    journals = {"old": old, "new": new}
    wall: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    purchases = {"old": Purchases(), "new": Purchases()}
    try:
        for r in range(args.rounds + 5):
            for name in ("old", "new") if r % 2 else ("new", "old"):
                journal = journals[name]
                spent = journal.cpu
                t = one_round(journal, purchases[name], args.batch)
                if r >= 5:  # warm-up rounds not counted
                    wall[name].append(t)
                    cpu[name].append((journal.cpu - spent) / args.batch * 1e6)
    finally:
        old.close()
        new.close()
    o, n = statistics.median(wall["old"]), statistics.median(wall["new"])
    oc, nc = statistics.median(cpu["old"]), statistics.median(cpu["new"])
    note = f" (old path on schema v{args.old_version})" if args.old_schema else ""
    print(f"batch {args.batch}, {args.rounds} rounds{note}, µs per purchase (insert + update), median:")
    print(f"  {'':10s} {'wall':>8s} {'writer CPU':>11s}")
    print(f"  {'old path':10s} {o:8.1f} {oc:11.1f}")
    print(f"  {'new path':10s} {n:8.1f} {nc:11.1f}")
    print(f"  {'old/new':10s} {o / n:7.2f}x {oc / nc:10.2f}x")


def busy(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def drive(journal: SqliteJournal, purchases: Purchases, clients: int, seconds: float, work_us: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            busy(work_us / 2)  # decode, checks, routing
            rec, _ = await journal.insert(purchases.record())
            busy(work_us / 2)  # the acquirer's answer, encode
            await journal.update(rec.id, **ANSWER)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


def loop_mode(args, tmp: str) -> None:
    import uvloop

    async def main() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        options = dict(future=loop.create_future, deliver=loop.call_soon_threadsafe)
        journals = {
            "old": open_old(os.path.join(tmp, "old.sqlite"), args.old_version if args.old_schema else None,
                            **options),
            "new": NewPathJournal(os.path.join(tmp, "new.sqlite"), hmac_key=KEY, **options),
        }
        purchases = {"old": Purchases(), "new": Purchases()}
        tps: dict[str, list[float]] = {"old": [], "new": []}
        try:
            for name in journals:  # warm-up
                await drive(journals[name], purchases[name], args.clients, 0.5, args.work_us)
            for r in range(args.rounds):
                for name in ("old", "new") if r % 2 else ("new", "old"):
                    tps[name].append(await drive(journals[name], purchases[name], args.clients, args.seconds,
                                                 args.work_us))
        finally:
            for journal in journals.values():
                journal.close()
        return tps

    tps = uvloop.run(main())
    o, n = statistics.median(tps["old"]), statistics.median(tps["new"])
    note = f", old path on schema v{args.old_version}" if args.old_schema else ""
    print(f"event loop, {args.clients} clients, {args.work_us:.0f} µs of Python per purchase, "
          f"{args.rounds} rounds of {args.seconds:.0f} s{note}; purchases per second, median:")
    print(f"  old path {o:8.0f}")
    print(f"  new path {n:8.0f}")
    print(f"  new/old  {n / o:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=None, help="60 (rounds), 5 (--loop)")
    parser.add_argument("--old-schema", action="store_true")
    parser.add_argument("--old-version", type=int, default=4)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--work-us", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 5 if args.loop else 60
    with tempfile.TemporaryDirectory() as tmp:
        (loop_mode if args.loop else rounds_mode)(args, tmp)


if __name__ == "__main__":
    main()
