"""The switch end to end against a bare forwarder, in the same run.

    .venv/bin/python -m benchmarks.e2e_throughput [--requests 4000] [--concurrency 64] [--rounds 3]

Two set-ups, both two TCP hops on loopback, driven by the same client:

- **bare forwarder**: a uvloop process that passes each length-prefixed frame
  to an upstream responder and the answer back, decoding nothing — the cost
  of the sockets and event loops alone;
- **switch**: ``payswitch serve`` with the card simulator behind it — decode,
  checks, routing, journal (SQLite, group commit, durable), host-link
  re-keying, encode.

Prints median requests/s and median latency of each, and the ratio.  This
machine has 2 shared cores: compare ratios from one run, not absolute
numbers across runs.
"""
from __future__ import annotations

import argparse
import asyncio
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(port: int, requests: int, concurrency: int, make_body) -> tuple[float, float]:
    """Send ``requests`` requests over ``concurrency`` connections; (requests/s, median latency s)."""
    latencies: list[float] = []
    per_conn = requests // concurrency
    # Connect first: only request/response time is measured.
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]

    async def one_connection(cid: int):
        reader, writer = conns[cid]
        for i in range(per_conn):
            body = make_body(cid, i)
            t0 = time.perf_counter()
            writer.write(struct.pack(">H", len(body)) + body)
            n = struct.unpack(">H", await reader.readexactly(2))[0]
            await reader.readexactly(n)
            latencies.append(time.perf_counter() - t0)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_connection(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return len(latencies) / elapsed, statistics.median(latencies)


def wait_line(proc, marker: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if marker in line:
            return
    raise RuntimeError(f"process did not print {marker!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from switch.client import TERMINAL, now_fields
    from tests import e2e

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="payswitch-bench-"))
    text, ports = e2e.card_config(tmp, acquirer_timeout=10.0)
    text = text.replace('args = ["--ledger"', 'args = ["--latency-ms", "0", "--ledger"')
    sw = e2e.SwitchProcess(tmp, text, ports)
    fwd_port, up_port = free_port(), free_port()
    fwd = subprocess.Popen([sys.executable, "-c", FORWARDER, str(fwd_port), str(up_port)], stdout=subprocess.PIPE, text=True)
    try:
        wait_line(fwd, "listening")
        sw.start()
        t = now_fields()
        counter = [0]

        def body(cid, i):
            counter[0] += 1
            return TERMINAL.encode({
                "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "%012d" % (1000 + i % 50),
                7: t[7], 11: "%06d" % (counter[0] % 1000000), 12: t[12], 13: t[13], 22: "051",
                41: "DEMO%04d" % (cid + 1), 42: "DEMO00000000001", 49: "978",
            })

        results = {"forwarder": [], "switch": []}
        for r in range(args.rounds):
            for name, port in (("forwarder", fwd_port), ("switch", ports["term"])):
                rps, lat = uvloop.run(drive(port, args.requests, args.concurrency, body))
                results[name].append((rps, lat))
                print(f"round {r + 1} {name:>9}: {rps:8.0f} req/s, median latency {lat * 1000:6.2f} ms", flush=True)
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
        print()
        for k, (rps, lat) in med.items():
            print(f"median {k:>9}: {rps:8.0f} req/s, latency {lat * 1000:6.2f} ms")
        print(f"switch / bare forwarder throughput: {med['switch'][0] / med['forwarder'][0]:.2f}")
    finally:
        sw.stop()
        fwd.terminate()
        fwd.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
