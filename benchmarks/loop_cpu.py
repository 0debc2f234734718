"""CPU of the switch's event-loop thread per card purchase, in process.

    .venv/bin/python -m benchmarks.loop_cpu [--requests 20000] [--concurrency 50] [--rounds 5]

Drives ``Switch.handle`` with card purchases against an acquirer that answers
at once (no sockets), ``--concurrency`` at a time, and reports the event-loop
thread's CPU time per purchase (``time.thread_time``: the journal writer
thread and the rest of the machine are not counted, so the figure holds on a
busy machine better than wall time does).  What it covers: decode, checks,
routing, the engine, the journal's caller side, metrics, encode — the loop's
own cost in the end-to-end benchmark, without the socket syscalls.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    from tests import test_service as ts
    from switch.core.acquirer import Result
    from switch.io.service import Switch

    os.environ[ts.KEY_ENV] = ts.KEY_HEX

    class Instant(ts.FakeAcquirer):
        async def authorize(self, request, timeout):
            return Result(response_code="00", auth_code="A00001", acquirer_ref="r")

    async def one_round(sw, first: int) -> float:
        sem = asyncio.Semaphore(args.concurrency)
        t = "%010d" % (1129000000 + first // 1_000_000)

        async def purchase(i):
            async with sem:
                return await sw.handle(ts.request(stan="%06d" % (i % 1_000_000), t7=t))

        c0 = time.thread_time()
        outs = await asyncio.gather(*(purchase(first + i) for i in range(args.requests)))
        cpu = time.thread_time() - c0
        bad = sum(1 for o in outs if ts.TERM.decode(o)[39] != "00")
        if bad:
            raise SystemExit(f"{bad} purchases not approved")
        return cpu / args.requests * 1e6

    async def run():
        sw = Switch(ts.make_config(timeout=1.0, response_timeout=5.0), acquirers={n: Instant(n) for n in ("bank-a", "bank-b", "wallet-a", "cup")})
        await sw.start()
        try:
            await one_round(sw, 0)  # warm-up
            return [await one_round(sw, (r + 1) * args.requests) for r in range(args.rounds)]
        finally:
            await sw.close()

    import uvloop

    results = uvloop.run(run())
    print("loop-thread CPU per purchase, µs: " + " ".join(f"{r:.1f}" for r in results)
          + f"  median {statistics.median(results):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
