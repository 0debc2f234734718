"""CPU of the switch's event-loop thread per card purchase, in process.

    .venv/bin/python -m benchmarks.loop_cpu [--requests 20000] [--concurrency 50] [--rounds 5]
    .venv/bin/python -m benchmarks.loop_cpu --instructions [--concurrency 50]
    .venv/bin/python -m benchmarks.loop_cpu --writer process [--instructions]

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
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per purchase under callgrind, instead of CPU time")
    ap.add_argument("--writer", choices=("thread", "process"), default="thread",
                    help="[journal] writer: a thread of this process, or a process of its own")
    args = ap.parse_args(argv)
    if args.instructions:
        return instructions(args.concurrency, args.writer)

    os.environ["PAYSWITCH_JOURNAL_WRITER"] = args.writer  # read by tests.test_service's CONFIG
    from tests import test_service as ts
    from switch.core.acquirer import Result
    from switch.io.app import settle_heap
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
        settle_heap()  # as serve does once started: the figure is the served switch's
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


def instructions(concurrency: int, writer: str = "thread", small: int = 1000, large: int = 3000) -> int:
    """Print instructions per purchase of the loop thread and of the journal writer (callgrind, two runs).

    The thread writer is this process's second thread; the process writer is
    a child process (``--trace-children``), all of whose threads are counted.
    """
    import glob
    import shutil
    import subprocess
    import tempfile

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("--instructions needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    totals: dict[int, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="payswitch-callgrind-") as tmp:
        for n in (small, large):
            out = os.path.join(tmp, f"cg.{n}")
            proc = subprocess.Popen(
                [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--separate-threads=yes",
                 f"--trace-children={'yes' if writer == 'process' else 'no'}",
                 sys.executable, "-m", "benchmarks.loop_cpu", "--requests", str(n), "--rounds", "1",
                 "--concurrency", str(concurrency), "--writer", writer],
                env=dict(os.environ, PYTHONHASHSEED="0"), cwd=Path(__file__).resolve().parent.parent,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if proc.wait() != 0:
                raise SystemExit(f"callgrind run of {n} purchases failed ({proc.returncode})")
            main = f"{out}.{proc.pid}"
            if writer == "thread":
                totals[n] = [thread_total(f"{main}-{k:02d}") for k in (1, 2)]
            else:
                # One file a thread (``<out>.<pid>-<thread>``); a file without that suffix holds no totals.
                children = [f for f in glob.glob(f"{out}.*-[0-9][0-9]") if not f.startswith(main + "-")]
                totals[n] = [thread_total(f"{main}-01"), sum(thread_total(f) for f in children)]
    purchases = 2 * (large - small)  # each run: a warm-up round, then one measured round
    loop, journal = ((totals[large][k] - totals[small][k]) / purchases for k in (0, 1))
    print(f"instructions per purchase ({writer} writer): event loop {loop:,.0f}, journal writer {journal:,.0f}")
    return 0


def thread_total(path: str) -> int:
    """The instruction total callgrind wrote for one thread."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise ValueError(f"{path}: no totals line")


if __name__ == "__main__":
    sys.exit(main())
