"""The switch processes the benchmarks start: this checkout's code, compiled codec or pyiso8583.

``tests.e2e.SwitchProcess`` runs ``python -m switch.cli`` from a temporary
directory, so it imports whatever ``switch`` the interpreter finds installed;
the benchmarks put this checkout first on ``PYTHONPATH`` instead (the code
being measured is the code next to the benchmark), and can run
``benchmarks.pyiso_switch`` in place of ``switch.cli``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests import e2e

ROOT = Path(__file__).resolve().parent.parent

COMPILED = "switch.cli"
PYISO = "benchmarks.pyiso_switch"


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH`` (and ``extra``):
    a process started with it runs this checkout's code, whatever the interpreter has installed."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, **extra, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


class BenchSwitch(e2e.SwitchProcess):
    """``payswitch serve`` from this checkout, run as ``python -m <module>``."""

    def __init__(self, tmp: Path, config_text: str, ports: dict, module: str = COMPILED,
                 prefix: tuple[str, ...] = (), env: dict[str, str] | None = None):
        super().__init__(tmp, config_text, ports)
        self.module = module
        self.prefix = list(prefix)  # a command to run the interpreter under (valgrind, say)
        self.extra_env = env or {}
        self.banner: list[str] = []  # what it printed up to "payswitch: ready"

    def start(self, timeout: float = 30.0):
        env = checkout_env(PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO", **self.extra_env)
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", self.module, "serve", "--config", str(self.config)],
            cwd=self.tmp, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.banner.append(line)
            if line.startswith("payswitch: ready"):
                return self
        log = self.log_text()
        self.stop()
        raise RuntimeError(f"switch ({self.module}) did not start:\n" + "".join(self.banner) + log)

    def stop(self):
        if self.log.closed:
            return
        super().stop()


def bench_config(tmp: Path, *, writer: str = "thread", max_in_flight: int = 128,
                 sim: str = "fast", workers: int = 1) -> tuple[str, dict]:
    """``tests.e2e.card_config`` tuned for measuring: simulators without ledgers, answering at once.

    ``sim``: "fast" (the uvloop card simulator, which takes less of the
    machine) or "trio"; ``writer``: the ``[journal] writer``;
    ``max_in_flight``: room for the largest connection count (no 91 from the
    listener's in-flight limit); ``workers``: ``[server] workers``.
    """
    text, ports = e2e.card_config(tmp, acquirer_timeout=10.0)
    # No ledger (a flushed JSON line per transaction is the simulator's cost, not the switch's).
    sim_args = '"--latency-ms", "0"' + (', "--fast"' if sim == "fast" else "")
    text = re.sub(r'args = \["--ledger", "[^"]*"\]', f"args = [{sim_args}]", text)
    text = text.replace("[journal]\n", f'[journal]\nwriter = "{writer}"\n', 1)
    text = text.replace("max_in_flight = 128", f"max_in_flight = {max(128, max_in_flight)}")
    if workers > 1:
        text += f"\n[server]\nworkers = {workers}\n"
    return text, ports


def switch_pids(pid: int) -> list[int]:
    """The switch process, its journal writer process and its workers (not the simulators it starts)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"switch.journal.writer" in cmdline or b"switch.io.workers" in cmdline:
                pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS and its anonymous / file-backed parts (KiB) of a process, None once it is gone.

    A leak grows ``anon``; ``file`` (mapped libraries, SQLite's files) is
    the kernel's to drop.
    """
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                    key, value = line.split()[:2]
                    out[{"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}[key]] = int(value)
    except OSError:
        return None
    return out if "rss" in out else None


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process (KiB), None once it is gone."""
    m = memory_kib(pid)
    return m["rss"] if m else None
