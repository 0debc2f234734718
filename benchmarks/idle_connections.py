"""What idle terminal connections cost the switch in memory.

    .venv/bin/python -m benchmarks.idle_connections [--connections 10000] [--hold 10]

Starts ``payswitch serve`` from this checkout, pays once (so the first
request's imports and caches are in the baseline), samples the switch's RSS,
opens ``--connections`` terminal connections that send nothing (from
127.0.0.2, .3, ...: at most 1,000 a source address, the switch's default
per-address cap), waits ``--hold`` seconds, pays again on a connection of its
own, and samples again.  Prints the RSS before and with the idle connections,
the difference per connection, and whether the total is under ``--budget``
MB (issue 9: 10,000 idle connections under 100 MB).  Exit status 0 when it
is.

tests/test_e2e_resources.py opens the same 10,000 connections with a
slow-loris client beside them and bounds the cost per connection; this
prints the figure against the budget.
"""
from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import switches  # noqa: E402
from tests import e2e  # noqa: E402

PER_ADDRESS = 1000


def pay(port: int) -> str:
    client = e2e.Client(port, timeout=10)
    try:
        return client.transact(e2e.purchase(1000))["39"]
    finally:
        client.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to hold them open before sampling")
    ap.add_argument("--budget", type=float, default=100.0, help="MB the switch may use in all with them open")
    args = ap.parse_args(argv)
    if not 0 < args.connections <= 250 * PER_ADDRESS:
        ap.error(f"--connections must be 1-{250 * PER_ADDRESS}")

    need = args.connections + 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))  # the switch inherits it

    tmp = Path(tempfile.mkdtemp(prefix="payswitch-idle-"))
    text, ports = switches.bench_config(tmp)
    text = f"max_connections = {args.connections + 100}\n" + text
    sw = switches.BenchSwitch(tmp, text, ports).start()
    idle: list[socket.socket] = []
    try:
        if pay(ports["term"]) != "00":
            raise SystemExit("the first purchase was not approved")
        time.sleep(1.0)
        before = switches.memory_kib(sw.proc.pid)
        t0 = time.perf_counter()
        for i in range(args.connections):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // PER_ADDRESS}", 0))
            s.connect(("127.0.0.1", ports["term"]))
            idle.append(s)
        opened = time.perf_counter() - t0
        time.sleep(args.hold)
        code = pay(ports["term"])
        during = switches.memory_kib(sw.proc.pid)
        if during is None:
            raise SystemExit("the switch process is gone:\n" + sw.log_text()[-2000:])
        _, metrics = sw.http_get("/metrics")
        open_now = [ln.split()[-1] for ln in metrics.decode().splitlines()
                    if ln.startswith("payswitch_terminal_connections ")]
    finally:
        for s in idle:
            s.close()
        sw.stop()

    per_conn = (during["rss"] - before["rss"]) / args.connections
    total_mb = during["rss"] * 1024 / 1e6
    ok = total_mb < args.budget and code == "00"
    print(f"{args.connections} idle connections opened in {opened:.1f} s "
          f"(switch counts {open_now[0] if open_now else '?'} open)")
    print(f"switch RSS {before['rss'] / 1024:.1f} MiB before, {during['rss'] / 1024:.1f} MiB with them "
          f"(anon {before.get('anon', 0) / 1024:.1f} -> {during.get('anon', 0) / 1024:.1f} MiB): "
          f"{per_conn:.1f} KiB per idle connection")
    print(f"total {total_mb:.1f} MB: {'under' if total_mb < args.budget else 'OVER'} the {args.budget:g} MB budget; "
          f"a purchase meanwhile: {code}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
