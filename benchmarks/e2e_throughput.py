"""The switch end to end against a bare forwarder, in the same run.

    .venv/bin/python -m benchmarks.e2e_throughput [--connections 10,50,200] [--requests 6000]
        [--rounds 3] [--writers thread,process] [--workers 1,2] [--pyiso-writer thread|none]
        [--json bench-e2e.json] [--sim fast|trio]

Set-ups, each two TCP hops on loopback, driven by the same closed-loop client
(one request in flight per connection, unique STANs, card purchases):

- **bare forwarder** (the reference of the ratios): ``benchmarks.forwarder``,
  a uvloop process that decodes each request with the compiled codec,
  re-encodes it for the acquirer and forwards it over two host connections
  to the same card simulator the switches use (a process of its own), and
  the answer back the same way — no journal, no checks, no routing: what any
  switch on this box pays besides its own work;
- **pass-through**: a uvloop process that passes the bytes to an echo
  responder in the same process and back, decoding nothing (the reference
  before: the sockets and event loops alone, no acquirer on the cores);
- **switch (journal writer W)**: ``payswitch serve`` with the card simulator
  behind it (``--sim fast``, the default: the uvloop one, so the simulator
  takes less of the two cores; ``--sim trio``: the trio one) — decode, checks, routing, journal (SQLite, group commit,
  durable), host-link re-keying, encode — once per ``[journal] writer``
  given (``thread``: a writer thread in the switch; ``process``: a writer
  process of its own);
- **switch (N workers)**: for each N > 1 of ``--workers``, ``serve --workers
  N`` (a supervisor, one shared journal writer process, N worker processes
  on one SO_REUSEPORT port);
- **switch (pyiso8583)**: the very same switch with pyiso8583 as its ISO 8583
  codec (``benchmarks.pyiso_switch``: listeners, engine and host links decode
  and encode with pyiso8583), journal writer ``--pyiso-writer``: what the
  compiled codec buys end to end.

The switches run this checkout's code (``PYTHONPATH``), not whatever
``switch`` the interpreter has installed.

Every round measures every set-up at every connection count, one after the
other, so all see the same machine.  Printed per set-up and connection
count: medians over the rounds of TPS, p50/p99/p999 latency, switch CPU per
transaction (the switch process, its journal writer process and its
workers, from /proc; the simulator is not counted; the bare forwarder's own process), answers other than 00, and the TPS
ratio against the bare forwarder and against the pass-through; then, per connection count, compiled switch
(same journal writer) against the pyiso8583 one: the TPS ratio and the CPU
ratio (pyiso8583's CPU per transaction over the compiled one's, which holds
better than TPS on a busy machine).  ``--json`` writes every round, the
medians and those ratios.  For each switch of one process, where the time
went, from its own /metrics before and after each measurement (means): a
request inside the switch, its acquirer call, a journal batch (wall time,
operations) and the share of the measurement the writer spent in batches.
This machine has 2 shared cores: compare ratios from one run, not
absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FORWARDER = textwrap.dedent(
    """
    import asyncio, struct, sys, uvloop

    async def responder(reader, writer):
        # answers each frame with the same bytes, MTI turned into its response
        try:
            while True:
                n = struct.unpack(">H", await reader.readexactly(2))[0]
                body = bytearray(await reader.readexactly(n))
                body[2] = body[2] + 1
                writer.write(struct.pack(">H", n) + bytes(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def forwarder(reader, writer, up_port):
        ur, uw = await asyncio.open_connection("127.0.0.1", up_port)
        async def pump(r, w):
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    w.write(data)
            finally:
                w.close()
        await asyncio.gather(pump(reader, uw), pump(ur, writer), return_exceptions=True)

    async def main(port, up_port):
        await asyncio.start_server(responder, "127.0.0.1", up_port, backlog=1024)
        await asyncio.start_server(lambda r, w: forwarder(r, w, up_port), "127.0.0.1", port, backlog=1024)
        print("listening", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
    """
)

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (seconds), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def drive(port: int, requests: int, connections: int, make_body, check) -> dict:
    """``requests`` requests over ``connections`` connections, one in flight on each."""
    latencies: list[float] = []
    failures = [0]
    per_conn = max(1, requests // connections)
    # Connect first: only request/response time is measured.
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]

    async def one_connection(cid: int):
        reader, writer = conns[cid]
        for i in range(per_conn):
            body = make_body(cid, i)
            t0 = time.perf_counter()
            writer.write(struct.pack(">H", len(body)) + body)
            n = struct.unpack(">H", await reader.readexactly(2))[0]
            answer = await reader.readexactly(n)
            latencies.append(time.perf_counter() - t0)
            if not check(answer):
                failures[0] += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_connection(c) for c in range(connections)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "tps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
        "requests": len(latencies),
        "not_00": failures[0],
        "seconds": elapsed,
    }


# A purchase's time inside a switch, from its own metrics (sums and counts, all label sets).
_INSIDE = ("payswitch_request_seconds", "payswitch_acquirer_seconds", "payswitch_journal_commit_seconds",
           "payswitch_journal_batch_size")


def scrape(http_port: int) -> dict[str, float]:
    """The ``_sum`` and ``_count`` of each of :data:`_INSIDE` on a switch's admin port."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        return parse_inside(r.read().decode())


def parse_inside(text: str) -> dict[str, float]:
    """The ``_sum`` and ``_count`` of each of :data:`_INSIDE` in a Prometheus text, label sets added up."""
    got: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        base = name.split("{", 1)[0]
        if base.endswith(("_sum", "_count")) and base.rsplit("_", 1)[0] in _INSIDE:
            got[base] = got.get(base, 0.0) + float(value.rsplit(" ", 1)[-1])
    return got


def inside(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Means over a measurement: the request inside the switch, its acquirer call, a journal
    batch (its ops, the share of the time the writer spent in batches)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

    def mean(name: str, scale: float = 1000.0) -> float:
        n = d.get(name + "_count", 0.0)
        return d.get(name + "_sum", 0.0) / n * scale if n else 0.0

    return {
        "request_ms": mean("payswitch_request_seconds"),
        "acquirer_ms": mean("payswitch_acquirer_seconds"),
        "commit_ms": mean("payswitch_journal_commit_seconds"),
        "batch_ops": mean("payswitch_journal_batch_size", 1.0),
        "writer_busy": d.get("payswitch_journal_commit_seconds_sum", 0.0) / seconds if seconds else 0.0,
    }


def wait_line(proc, marker: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if marker in line:
            return
    raise RuntimeError(f"process did not print {marker!r}")


def median_of(rounds: list[dict]) -> dict:
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], (int, float))]
    return {k: statistics.median(r[k] for r in rounds) for k in keys}


PYISO_NAME = "switch (pyiso8583)"


def purchases():
    """``body(connection, i)``: the i-th card purchase of a connection's terminal, each under a STAN of its
    own (``body.made[0]``: how many so far)."""
    from switch.client import TERMINAL, now_fields

    t = now_fields()
    counter = [0]

    # Whole units: the sandbox acquirer answers with the amount's last two digits (1005 -> 05).
    def body(cid: int, i: int) -> bytes:
        counter[0] += 1
        return TERMINAL.encode({
            "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "%012d" % (1000 + 100 * (i % 50)),
            7: t[7], 11: "%06d" % (counter[0] % 1000000), 12: t[12], 13: t[13], 22: "051",
            41: "DEMO%04d" % (cid + 1), 42: "DEMO00000000001", 49: "978",
        })
    body.made = counter
    return body


def p99_growth(medians: dict, levels: list[int], base: int = 50) -> dict[str, dict[int, float]]:
    """Per set-up: its p99 at each connection count above ``base`` over its own p99 at ``base``
    ({} when ``base`` or no higher count was measured).

    Closed loop, Little's law: a set-up whose CPU is already saturated at ``base`` connections
    answers N/base times as many requests in flight in about the same time, so its latency grows
    about N/base-fold; the bare forwarder's growth, measured beside the switch's, shows what the
    machine alone does."""
    higher = [c for c in levels if c > base]
    if base not in levels or not higher:
        return {}
    return {name: {c: by[c]["p99_ms"] / by[base]["p99_ms"] for c in higher if by[base]["p99_ms"] > 0}
            for name, by in medians.items()}


def compiled_vs_pyiso(medians: dict, levels: list[int], writer: str) -> dict[int, dict]:
    """Per connection count: the compiled switch's TPS over pyiso8583's, and pyiso8583's CPU per
    transaction over the compiled one's (same journal writer); {} when either was not measured."""
    compiled = medians.get(f"switch ({writer} writer)")
    pyiso = medians.get(PYISO_NAME)
    if not compiled or not pyiso:
        return {}
    out = {}
    for conns in levels:
        c, p = compiled[conns], pyiso[conns]
        cpu = p["cpu_us_per_txn"] / c["cpu_us_per_txn"] if c.get("cpu_us_per_txn") else None
        out[conns] = {"tps_ratio": c["tps"] / p["tps"], "cpu_ratio": cpu}
        c["ratio_vs_pyiso8583"] = out[conns]["tps_ratio"]
    return out


def fsync_ms(directory: Path, count: int = 200) -> dict[str, float]:
    """p50 and p99 of an fsync after a 4 KiB write, in ``directory`` (where the journals are).

    Every purchase waits for two of the journal's commits in series, each
    ending in an fsync: on a shared disk whose fsync has a long tail, that
    tail is in the switch's p99 whatever the code does.
    """
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for i in range(count):
            os.pwrite(fd, b"\0" * 4096, (i % 16) * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", default="10,50,200", help="comma-separated connection counts")
    ap.add_argument("--requests", type=int, default=6000, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writers", default="thread,process", help="[journal] writer of each switch measured")
    ap.add_argument("--workers", default="1", help="comma-separated worker counts (serve --workers; 'auto': one per core); 1: the writers above")
    ap.add_argument("--pyiso-writer", default="thread", choices=["thread", "process", "none"],
                    help="[journal] writer of the switch on pyiso8583 ('none': leave that switch out)")
    ap.add_argument("--json", default="bench-e2e.json", help="write the results here ('' for none)")
    ap.add_argument("--sim", choices=["fast", "trio"], default="fast",
                    help="card simulator behind the switch: uvloop (--fast) or trio")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.connections.split(",")]
    writers = [w for w in args.writers.split(",") if w]

    sys.path.insert(0, str(ROOT))
    from benchmarks.switches import COMPILED, PYISO, BenchSwitch, bench_config, checkout_env, switch_pids
    from switch.client import TERMINAL

    import uvloop

    switches: dict[str, tuple] = {}
    counts = [os.cpu_count() or 1 if n == "auto" else int(n) for n in args.workers.split(",") if n]
    kinds = [(f"switch ({w} writer)", COMPILED, w, 1) for w in writers] if 1 in counts else []
    kinds += [(f"switch ({n} workers)", COMPILED, "process", n) for n in counts if n > 1]
    if args.pyiso_writer != "none":
        kinds.append((PYISO_NAME, PYISO, args.pyiso_writer, 1))
    fwd_port, up_port, sim_port, bare_port = free_port(), free_port(), free_port(), free_port()
    fwd = subprocess.Popen(
        [sys.executable, "-c", FORWARDER, str(fwd_port), str(up_port)], stdout=subprocess.PIPE, text=True
    )
    env = checkout_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "switch.cli", "sim", "acquirer", "--port", str(sim_port), "--latency-ms", "0",
         "--name", "forwarder-sim", *(["--fast"] if args.sim == "fast" else [])],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    bare = None
    try:
        wait_line(fwd, "listening")
        wait_line(sim, "listening")
        bare = subprocess.Popen([sys.executable, "-m", "benchmarks.forwarder", str(bare_port), str(sim_port)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        wait_line(bare, "listening")
        for name, module, writer, workers in kinds:
            tmp = Path(tempfile.mkdtemp(prefix=f"payswitch-bench-{writer}-{workers}-"))
            text, ports = bench_config(tmp, writer=writer, max_in_flight=2 * max(levels), sim=args.sim,
                                       workers=workers)
            sw = BenchSwitch(tmp, text, ports, module)
            sw.start(timeout=60)
            switches[name] = (sw, ports["term"], ports["http"] if workers == 1 else None)

        body = purchases()

        def approved(answer: bytes) -> bool:
            try:
                return TERMINAL.decode(answer).get(39) == "00"
            except Exception:
                return False

        def forwarded(answer: bytes) -> bool:
            return True

        setups = [("pass-through", fwd_port, None, forwarded), ("bare forwarder", bare_port, bare, approved)]
        setups += [(name, port, sw, approved) for name, (sw, port, _http) in switches.items()]
        # Warm-up: connections, caches, the journal's first pages.
        for _name, port, _sw, check in setups:
            uvloop.run(drive(port, 1000, 10, body, check))

        disk = Path(tempfile.gettempdir())  # the journals' directory (bench_config puts them under tmp)
        fsyncs = [fsync_ms(disk)]
        results: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in levels} for name, *_ in setups}
        for r in range(args.rounds):
            for conns in levels:
                for name, port, sw, check in setups:
                    pids = [bare.pid] if sw is bare else switch_pids(sw.proc.pid) if sw is not None else []
                    http = switches[name][2] if name in switches else None
                    seen = scrape(http) if http else None
                    cpu0 = cpu_seconds(pids)
                    res = uvloop.run(drive(port, args.requests, conns, body, check))
                    if pids:
                        res["cpu_us_per_txn"] = (cpu_seconds(pids) - cpu0) / res["requests"] * 1e6
                    if seen is not None:
                        res.update(inside(seen, scrape(http), res["seconds"]))
                    results[name][conns].append(res)
                    print(
                        f"round {r + 1} {conns:4d} conns {name:>24}: {res['tps']:8.0f} TPS "
                        f"p50 {res['p50_ms']:6.2f} p99 {res['p99_ms']:6.2f} p999 {res['p999_ms']:6.2f} ms",
                        flush=True,
                    )
            if body.made[0] > 900_000:
                print("warning: STANs wrap: fewer --requests or --rounds", file=sys.stderr)

        fsyncs.append(fsync_ms(disk))
        medians = {name: {c: median_of(v) for c, v in by_level.items()} for name, by_level in results.items()}
        print(f"\nmedians of {args.rounds} rounds, {args.requests} requests each, closed loop:")
        print(f"{'':>24} {'conns':>5} {'TPS':>8} {'p50 ms':>7} {'p99 ms':>7} {'p999 ms':>8} "
              f"{'CPU µs/txn':>10} {'not 00':>6} {'vs fwd':>6} {'vs pass':>7}")
        for conns in levels:
            base = medians["bare forwarder"][conns]["tps"]
            passing = medians["pass-through"][conns]["tps"]
            for name in medians:
                m = medians[name][conns]
                cpu = f"{m['cpu_us_per_txn']:10.0f}" if "cpu_us_per_txn" in m else f"{'-':>10}"
                print(f"{name:>24} {conns:5d} {m['tps']:8.0f} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f} "
                      f"{m['p999_ms']:8.2f} {cpu} {m['not_00']:6.0f} {m['tps'] / base:6.2f} {m['tps'] / passing:7.2f}")
                m["ratio_vs_forwarder"] = m["tps"] / base
                m["ratio_vs_pass_through"] = m["tps"] / passing
        print("\nthe journals' disk, fsync of a 4 KiB write (a purchase waits for two commits in series): "
              + ", ".join(f"{when} p50 {f['p50_ms']:.2f} p99 {f['p99_ms']:.2f} ms"
                          for when, f in zip(("before the rounds", "after"), fsyncs)))
        inner = [n for n in medians if "request_ms" in medians[n][levels[0]]]
        if inner:
            print("\ninside the switch, means (its own metrics): a request from its bytes to its answer, its"
                  "\nacquirer call, a journal batch (ops in it, and the share of the time the writer was in one):")
            print(f"{'':>24} {'conns':>5} {'request ms':>10} {'acquirer ms':>11} {'batch ms':>8} {'ops':>5} {'writer busy':>11}")
            for conns in levels:
                for name in inner:
                    m = medians[name][conns]
                    print(f"{name:>24} {conns:5d} {m['request_ms']:10.2f} {m['acquirer_ms']:11.2f} "
                          f"{m['commit_ms']:8.2f} {m['batch_ops']:5.1f} {m['writer_busy']:11.0%}")
        growth = p99_growth(medians, levels)
        if growth:
            print("\np99 against the same set-up's p99 at 50 connections:")
            for name, by in growth.items():
                print(f"{name:>24} " + "  ".join(f"{c} conns {r:5.2f}x" for c, r in by.items()))
        against_pyiso = compiled_vs_pyiso(medians, levels, args.pyiso_writer)
        if against_pyiso:
            print(f"\ncompiled codec against pyiso8583, the same switch ({args.pyiso_writer} writer):")
            print(f"{'conns':>5} {'TPS ratio':>9} {'CPU ratio':>9}")
            for conns, r in against_pyiso.items():
                cpu = f"{r['cpu_ratio']:9.2f}" if r["cpu_ratio"] is not None else f"{'-':>9}"
                print(f"{conns:5d} {r['tps_ratio']:9.2f} {cpu}")
        if args.json:
            out = {
                "requests": args.requests,
                "sim": args.sim,
                "rounds": args.rounds,
                "connections": levels,
                "cpus": os.cpu_count(),
                "pyiso_writer": args.pyiso_writer,
                "fsync_before_after": fsyncs,
                "medians": {n: {str(c): m for c, m in v.items()} for n, v in medians.items()},
                "compiled_vs_pyiso8583": {str(c): r for c, r in against_pyiso.items()},
                "p99_against_50_connections": {n: {str(c): r for c, r in by.items()} for n, by in growth.items()},
                "rounds_detail": {n: {str(c): v for c, v in by.items()} for n, by in results.items()},
            }
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
            print(f"\nJSON: {args.json}")
    finally:
        for sw, _port, _http in switches.values():
            sw.stop()
        for proc in (bare, sim, fwd):
            if proc is not None:
                proc.terminate()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
