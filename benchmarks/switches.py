"""The switch processes the benchmarks start: this checkout's code, compiled codec or pyiso8583.

``tests.e2e.SwitchProcess`` runs ``python -m switch.cli`` from a temporary
directory, so it imports whatever ``switch`` the interpreter finds installed;
the benchmarks put this checkout first on ``PYTHONPATH`` instead (the code
being measured is the code next to the benchmark), and can run
``benchmarks.pyiso_switch`` in place of ``switch.cli``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests import e2e

ROOT = Path(__file__).resolve().parent.parent

COMPILED = "switch.cli"
PYISO = "benchmarks.pyiso_switch"


class BenchSwitch(e2e.SwitchProcess):
    """``payswitch serve`` from this checkout, run as ``python -m <module>``."""

    def __init__(self, tmp: Path, config_text: str, ports: dict, module: str = COMPILED):
        super().__init__(tmp, config_text, ports)
        self.module = module
        self.banner: list[str] = []  # what it printed up to "payswitch: ready"

    def start(self, timeout: float = 30.0):
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO",
                   PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "serve", "--config", str(self.config)],
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


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process (KiB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
