"""What the event outbox's triggers cost a transaction in the journal.

    .venv/bin/python -m benchmarks.outbox_triggers [--txns 20000] [--rounds 3]

An in-memory journal, operations inline (no writer thread, no fsync): an
insert and the update that stores the answer (which fires the outbox
trigger), with the triggers as migrated and with them dropped.  Reports
process CPU time per transaction, so other load on the machine matters less
than for wall-clock figures.
"""
from __future__ import annotations

import argparse
import time

from switch.journal import TxnRecord
from switch.journal.sqlite import SqliteJournal


def run(txns: int, triggers: bool) -> float:
    j = SqliteJournal(":memory:", inline=True, hmac_key=b"k" * 32)
    if not triggers:
        for name in ("outbox_outcome", "outbox_reversed", "outbox_settled"):
            j._submit(lambda name=name: j._conn.execute(f"DROP TRIGGER {name}"), (), True).result()
    t0 = time.process_time()
    for i in range(txns):
        rec, _ = j.insert(TxnRecord(terminal_id="T1", merchant_id="M", mti="0200", stan="%06d" % (i % 999999),
                                    transmission_time="%010d" % i, amount=100, currency="978", content_digest="d",
                                    pan_masked="476173******0119", processing_code="000000")).result()
        j.update(rec.id, response=b"x" * 60, response_code="00", state="answered", auth_code="A1").result()
    spent = time.process_time() - t0
    j.close()
    return spent / txns * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--txns", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    for _ in range(args.rounds):
        print(f"with triggers {run(args.txns, True):6.1f} us CPU/txn   without {run(args.txns, False):6.1f}")


if __name__ == "__main__":
    main()
