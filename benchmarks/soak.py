"""Soak: the switch at a steady moderate rate for minutes, its memory sampled throughout.

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--tps 300] [--connections 50]
        [--interval 10] [--warmup 60] [--tolerance 5] [--writer process|thread]
        [--codec compiled|pyiso8583] [--json soak.json]

Starts ``payswitch serve`` from this checkout (card simulators answering at
once, no ledgers), opens ``--connections`` terminal connections and sends card
purchases at ``--tps`` in all, spread evenly over the connections (each
connection paced, one request in flight on each; a connection that falls
behind skips ahead rather than bursting).  Every ``--interval`` seconds it
samples the resident set size (VmRSS, /proc; and its anonymous part, where
a leak would show) of the switch process and of its
journal writer process (``--writer process``, the default here, so the two
are seen apart; with ``thread`` the writer is inside the switch), and the
interval's throughput, p99 latency and answers other than 00.

At the end: the series, first / last / max, and whether memory is flat: the
last sample within ``--tolerance`` percent of the first sample taken after
``--warmup`` seconds (allocators, caches and the journal's page cache grow
at first), with the least-squares slope after warm-up in KiB per minute.
Exit status 0 when flat and every answer was 00, 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import switches  # noqa: E402


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    mv = statistics.fmean(v for _, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


class Load:
    """``connections`` paced connections sending purchases at ``tps`` in all."""

    def __init__(self, port: int, tps: float, connections: int):
        from switch.client import TERMINAL, now_fields

        self.port = port
        self.period = connections / tps
        self.connections = connections
        self.codec = TERMINAL
        self.now_fields = now_fields
        self.latencies: list[float] = []  # this interval's
        self.answered = 0
        self.not_00 = 0
        self.stopping = False
        self.stan = 0

    def body(self, cid: int, i: int, t: dict) -> bytes:
        self.stan = self.stan % 999_999 + 1
        # Whole units: the sandbox acquirer answers with the amount's last two digits (1005 -> 05).
        return self.codec.encode({
            "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "%012d" % (1000 + 100 * (i % 50)),
            7: t[7], 11: "%06d" % self.stan, 12: t[12], 13: t[13], 22: "051",
            41: "DEMO%04d" % (cid + 1), 42: "DEMO00000000001", 49: "978",
        })

    async def connection(self, cid: int, reader, writer):
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.period * cid / self.connections
        i = 0
        t, t_at = self.now_fields(), loop.time()
        while not self.stopping:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            if now - t_at >= 1.0:
                t, t_at = self.now_fields(), now
            body = self.body(cid, i, t)
            i += 1
            t0 = time.perf_counter()
            writer.write(struct.pack(">H", len(body)) + body)
            n = struct.unpack(">H", await reader.readexactly(2))[0]
            answer = await reader.readexactly(n)
            self.latencies.append(time.perf_counter() - t0)
            self.answered += 1
            if self.codec.decode(answer).get(39) != "00":
                self.not_00 += 1
            next_at += self.period
            if next_at < loop.time() - self.period:
                next_at = loop.time()  # behind: skip ahead, no burst
        writer.close()

    async def run(self, until: asyncio.Event):
        conns = [await asyncio.open_connection("127.0.0.1", self.port) for _ in range(self.connections)]
        tasks = [asyncio.create_task(self.connection(c, r, w)) for c, (r, w) in enumerate(conns)]
        await until.wait()
        self.stopping = True
        await asyncio.gather(*tasks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--tps", type=float, default=300.0, help="purchases per second, all connections together")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the reference sample")
    ap.add_argument("--tolerance", type=float, default=5.0, help="percent the last sample may exceed the reference")
    ap.add_argument("--writer", choices=["process", "thread"], default="process", help="[journal] writer")
    ap.add_argument("--codec", choices=["compiled", "pyiso8583"], default="compiled")
    ap.add_argument("--json", default="", help="write the series and the verdict here")
    args = ap.parse_args(argv)
    if args.tps <= 0 or args.connections <= 0 or args.interval <= 0:
        ap.error("--tps, --connections and --interval must be positive")
    if args.warmup >= args.minutes * 60:
        ap.error("--warmup must be shorter than the run (--minutes)")

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="payswitch-soak-"))
    text, ports = switches.bench_config(tmp, writer=args.writer, max_in_flight=2 * args.connections)
    module = switches.PYISO if args.codec == "pyiso8583" else switches.COMPILED
    sw = switches.BenchSwitch(tmp, text, ports, module).start()
    pids = switches.switch_pids(sw.proc.pid)
    writer_pid = pids[1] if len(pids) > 1 else None
    if args.writer == "process" and writer_pid is None:
        sw.stop()
        raise SystemExit("no journal writer process found under the switch")
    samples: list[dict] = []
    print(f"soak: {args.tps:.0f} TPS over {args.connections} connections for {args.minutes:g} min, "
          f"switch pid {sw.proc.pid}, journal writer {'pid %d' % writer_pid if writer_pid else 'thread'}, "
          f"codec {args.codec}; sample every {args.interval:g} s", flush=True)
    print(f"{'t s':>6} {'switch MiB':>10} {'anon':>6} {'writer MiB':>10} {'anon':>6} {'TPS':>6} {'p99 ms':>7} "
          f"{'not 00':>6}", flush=True)

    async def run():
        load = Load(ports["term"], args.tps, args.connections)
        done = asyncio.Event()
        driver = asyncio.create_task(load.run(done))
        t0 = time.monotonic()
        last_answered = 0
        end = t0 + args.minutes * 60
        while time.monotonic() < end:
            await asyncio.sleep(min(args.interval, max(0.0, end - time.monotonic())))
            if driver.done():
                driver.result()  # raises what stopped it
            lat = sorted(load.latencies)
            load.latencies = []
            mem = switches.memory_kib(sw.proc.pid)
            if mem is None:
                raise SystemExit("the switch process is gone:\n" + sw.log_text()[-2000:])
            wmem = switches.memory_kib(writer_pid) if writer_pid else None
            s = {
                "t": round(time.monotonic() - t0, 1),
                "switch_kib": mem["rss"],
                "switch_anon_kib": mem.get("anon"),
                "writer_kib": wmem["rss"] if wmem else None,
                "writer_anon_kib": wmem.get("anon") if wmem else None,
                "tps": (load.answered - last_answered) / args.interval,
                "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else None,
                "not_00": load.not_00,
            }
            last_answered = load.answered
            samples.append(s)
            w = (f"{s['writer_kib'] / 1024:10.1f} {(s['writer_anon_kib'] or 0) / 1024:6.1f}" if wmem
                 else f"{'-':>10} {'-':>6}")
            p99 = f"{s['p99_ms']:7.2f}" if s["p99_ms"] is not None else f"{'-':>7}"
            print(f"{s['t']:6.0f} {s['switch_kib'] / 1024:10.1f} {(s['switch_anon_kib'] or 0) / 1024:6.1f} {w} "
                  f"{s['tps']:6.0f} {p99} {s['not_00']:6d}", flush=True)
        done.set()
        await driver
        return load

    try:
        load = uvloop.run(run())
    finally:
        sw.stop()

    verdict = {"answered": load.answered, "not_00": load.not_00}
    flat = load.not_00 == 0
    after = [s for s in samples if s["t"] >= args.warmup]
    for key, label in (("switch_kib", "switch"), ("writer_kib", "journal writer")):
        series = [s[key] for s in samples if s[key] is not None]
        if not series:
            continue
        ref = next(s[key] for s in after)
        last = series[-1]
        growth = (last - ref) / ref * 100
        slope = slope_per_minute([(s["t"], s[key]) for s in after])
        ok = growth <= args.tolerance
        flat = flat and ok
        verdict[label] = {"first_kib": series[0], "after_warmup_kib": ref, "last_kib": last, "max_kib": max(series),
                          "growth_pct": growth, "slope_kib_per_min": slope, "flat": ok}
        print(f"{label}: RSS first {series[0] / 1024:.1f} MiB, after {args.warmup:g} s warm-up {ref / 1024:.1f}, "
              f"last {last / 1024:.1f}, max {max(series) / 1024:.1f} MiB; {growth:+.1f}% since warm-up "
              f"(slope {slope:+.0f} KiB/min): {'flat' if ok else 'NOT flat'} (tolerance {args.tolerance:g}%)")
    print(f"{load.answered} purchases, {load.not_00} answers other than 00; "
          f"{load.answered / (args.minutes * 60):.0f} TPS on average")
    verdict["flat"] = flat
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "samples": samples, "verdict": verdict},
                                              indent=2) + "\n")
        print(f"JSON: {args.json}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
