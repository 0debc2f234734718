"""Instructions a purchase of the served switch, end to end (callgrind).

    .venv/bin/python -m benchmarks.served_cpu [--requests 2000] [--connections 50]
        [--writer thread|process] [--top 40] [--keep DIR]

``benchmarks.loop_cpu`` drives ``Switch.handle`` in process against an
acquirer that answers at once: no sockets, no card host link.  This one runs
``payswitch serve`` (the benchmark configuration of ``benchmarks.switches``)
under ``valgrind --tool=callgrind`` with the fast card simulator behind it,
drives card purchases over ``--connections`` terminal connections, and
counts the instructions of a measured window only (callgrind's counters are
zeroed after a warm-up and dumped after the window).  Printed: instructions
a purchase of the event-loop thread and of the journal writer thread (with
``--writer process`` the writer process, followed under callgrind too), and
with ``--top`` the event loop's largest inclusive entries of the project's
own code, a purchase each.

Instructions, not seconds: the count holds on a busy machine.  It moves a
little with the journal's batch sizes (valgrind slows the switch fiftyfold,
so batches are larger than at full speed): compare two trees with the same
arguments, not this figure with ``loop_cpu``'s.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loop_cpu import thread_total  # noqa: E402

# A function of the project's own, as callgrind names a compiled module's C function.
_OWN = re.compile(r"__pyx_(?:pw|gb|f)_\d+(?:switch|native|adapters)_\w+")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--writer", choices=("thread", "process"), default="thread")
    ap.add_argument("--top", type=int, default=0, help="print the N largest inclusive entries of the project's code")
    ap.add_argument("--keep", type=Path, help="copy the callgrind files into this directory")
    args = ap.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("served_cpu needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2

    import uvloop

    from benchmarks.e2e_throughput import drive, purchases
    from benchmarks.switches import BenchSwitch, bench_config
    from switch.client import TERMINAL

    tmp = Path(tempfile.mkdtemp(prefix="payswitch-served-cpu-"))
    out = tmp / "callgrind"
    text, ports = bench_config(tmp, writer=args.writer, max_in_flight=2 * args.connections)
    # A writer process is counted too: valgrind follows the switch's children but the simulators.
    children = ("--trace-children=yes", "--trace-children-skip-by-arg=sim") if args.writer == "process" \
        else ("--trace-children=no",)
    prefix = (valgrind, "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--separate-threads=yes", *children)
    sw = BenchSwitch(tmp, text, ports, prefix=prefix, env={"PYTHONHASHSEED": "0"})
    sw.start(timeout=300)
    try:
        body = purchases()

        def approved(answer: bytes) -> bool:
            return TERMINAL.decode(answer).get(39) == "00"

        uvloop.run(drive(ports["term"], max(args.connections, args.requests // 4), args.connections, body, approved))
        pid = sw.proc.pid
        control(pid if args.writer == "thread" else None, "-z")
        res = uvloop.run(drive(ports["term"], args.requests, args.connections, body, approved))
        control(pid if args.writer == "thread" else None, "-d")
        if res["not_00"]:
            raise SystemExit(f"{res['not_00']} purchases not approved")
        n = res["requests"]
        files = wait_dumps(f"{out}.{pid}.1-")
        loop, writer = files[0], files[2] if args.writer == "thread" and len(files) > 2 else None
        line = f"instructions per purchase, served ({args.writer} writer, {args.connections} connections): " \
               f"event loop {thread_total(loop) / n:,.0f}"
        if writer:
            line += f", journal writer {thread_total(writer) / n:,.0f}"
        elif args.writer == "process":
            process = writer_dump(out, pid)
            line += f", journal writer process {sum(thread_total(f) for f in process) / n:,.0f}"
            files += process
        print(line)
        if args.top:
            for cost, name in top_entries(loop, args.top):
                print(f"{cost / n:10,.0f}  {name}")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy(f, args.keep)
    finally:
        sw.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def control(pid: int | None, flag: str) -> None:
    """Zero (-z) or dump (-d) the counters of ``pid``, or of every process under callgrind (None)."""
    subprocess.run(["callgrind_control", flag, *([str(pid)] if pid else [])], check=True, stdout=subprocess.DEVNULL)


def writer_dump(out: Path, switch_pid: int) -> list[str]:
    """The dump files of the journal writer process (a child of the switch under callgrind)."""
    for stem in sorted({f.rsplit(".", 2)[0] + "." + f.rsplit(".", 2)[1] for f in glob.glob(f"{out}.*.1-01")}):
        pid = int(stem.rsplit(".", 1)[1])
        if pid != switch_pid:
            files = wait_dumps(f"{stem}.1-")
            with open(files[0], errors="replace") as f:
                if "switch.journal.writer" in f.read(4096):
                    return files
    raise SystemExit("no callgrind dump of the journal writer process")


def wait_dumps(stem: str, timeout: float = 60.0) -> list[str]:
    """The dump's files, one a thread (``<stem>01``, ``<stem>02``...), once all are written.

    callgrind ends each file with its ``totals:`` line; on a loaded machine a fixed wait
    after the first file appears can read one half-written (a loop of 145,975 instructions
    a purchase, or 357,452).  So: every file complete, and no new one for half a second.
    """
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        files = sorted(glob.glob(stem + "[0-9][0-9]"))
        if files and files == seen and all(_complete(f) for f in files):
            return files
        seen = files
        time.sleep(0.5)
    raise SystemExit(f"no complete callgrind dump at {stem}* within {timeout:.0f} s")


def _complete(path: str) -> bool:
    """Whether a callgrind file has been written to its end (its last line is ``totals:``)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256))
        tail = f.read().rstrip().rsplit(b"\n", 1)[-1]
    return tail.startswith(b"totals:")


def top_entries(path: str, count: int) -> list[tuple[int, str]]:
    """The ``count`` largest inclusive costs of the project's own functions."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                          check=True, capture_output=True, text=True).stdout
    seen: dict[str, int] = {}
    for line in text.splitlines():
        m = _OWN.search(line)
        cost = line.split(maxsplit=1)[0].replace(",", "") if line.strip() else ""
        if m and cost.isdigit() and "'2" not in line:
            seen[m.group(0)] = max(seen.get(m.group(0), 0), int(cost))
    return sorted(((c, n) for n, c in seen.items()), reverse=True)[:count]


if __name__ == "__main__":
    sys.exit(main())
