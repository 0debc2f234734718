"""The bundled simulators as child processes (spec section 7: started beside the switch).

A simulator that dies while the switch serves (killed, out of memory, a bug)
is started again, on the same port and with the same arguments: the sandbox
must not turn into a switch that answers 91 to everything until someone
restarts it.  The card simulator reads its ledger back on start, as a bank
host keeps its authorizations, so reversals of payments it approved before
it died still find them.  Repeated deaths back off (1 s doubling to 30 s).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from switch import config as config_mod
from switch.core.backoff import Backoff

log = logging.getLogger("payswitch")

POLL = 0.5  # seconds between looks at the simulators
RESTART_MIN, RESTART_MAX = 1.0, 30.0  # back-off between starts of one simulator
STEADY = 60.0  # a simulator that ran this long was fine: its back-off starts over


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the switch dies, even by kill -9 (Linux).

    Orphaned simulators would keep their ports and stop a restarted switch from
    starting its own.  The death signal follows the thread that forked, so
    children are started from the main thread, and started again from the
    watcher thread, which lives until :meth:`Children.stop`.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Children:
    """Start, watch and stop the bundled simulators."""

    def __init__(self, relay_stderr: bool = False, withhold_env: set[str] | frozenset[str] = frozenset()):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        # Secrets the switch reads from its environment (journal key, admin
        # token, ...): a simulator has no business inheriting them (issue 8).
        self.env = {k: v for k, v in os.environ.items() if k not in withhold_env}
        # JSON logs: a simulator's own stderr lines become events of logger
        # payswitch.sim.NAME, so the switch's stderr stays one JSON object a line.
        self.relay_stderr = relay_stderr
        self.restarts: dict[str, int] = {}
        self._commands: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.start_timeout = 20.0

    def _relay(self, name: str, stream) -> None:
        sim_log = logging.getLogger(f"payswitch.sim.{name}")
        for line in stream:
            sim_log.info("%s", line.rstrip("\n"))

    def _spawn(self, name: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self._commands[name], stdout=subprocess.PIPE, stderr=subprocess.PIPE if self.relay_stderr else None,
            text=True, start_new_session=True, preexec_fn=_die_with_parent, env=self.env,
        )
        if self.relay_stderr:
            threading.Thread(target=self._relay, args=(name, proc.stderr), daemon=True,
                             name=f"sim-stderr-{name}").start()
        return proc

    @staticmethod
    def _listening(proc: subprocess.Popen, deadline: float) -> str | None:
        """The simulator's "listening on" line, or None if it exits or the deadline passes first."""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                return None
            if "listening on" in line:
                return line.strip()
        return None

    def start(self, sims: list[config_mod.Simulator], timeout: float = 20.0) -> None:
        self.start_timeout = timeout
        for sim in sims:
            cmd = [sys.executable, "-m", "switch.cli", "sim", sim.kind, "--host", "127.0.0.1", "--port", str(sim.port)]
            if sim.kind == "acquirer":
                cmd += ["--name", sim.name]
            self._commands[sim.name] = cmd + list(sim.args)
            self.procs.append((sim.name, self._spawn(sim.name)))
        deadline = time.monotonic() + timeout
        for name, proc in self.procs:
            line = self._listening(proc, deadline)
            if line is None:
                self.stop()
                raise RuntimeError(f"simulator {name} did not start (exit code {proc.poll()})")
            log.info("simulator %s %s", name, line)
        if self.procs:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="simulators")
            self._watcher.start()

    def _watch(self) -> None:
        started = {name: time.monotonic() for name, _ in self.procs}
        # switch.core.backoff, the links' rule, without jitter: one process per simulator.
        backoff = {name: Backoff(RESTART_MIN, RESTART_MAX, jitter=0.0) for name in started}
        due = dict.fromkeys(started, 0.0)
        while not self._stopping.wait(POLL):
            for i, (name, proc) in enumerate(list(self.procs)):
                code = proc.poll()
                now = time.monotonic()
                if code is None or now < due[name]:
                    continue
                if now - started[name] >= STEADY:
                    backoff[name].reset()
                with self._lock:
                    if self._stopping.is_set():
                        return
                    log.warning("simulator %s exited (code %s); starting it again", name, code)
                    try:
                        new = self._spawn(name)
                    except OSError as e:
                        log.error("simulator %s could not be started again: %s", name, e)
                        due[name] = now + backoff[name].next_delay()
                        continue
                    self.procs[i] = (name, new)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                started[name] = now
                due[name] = now + backoff[name].next_delay()
                line = self._listening(new, now + self.start_timeout)
                if line is not None:
                    log.info("simulator %s started again: %s", name, line)
                elif not self._stopping.is_set():
                    log.error("simulator %s did not start again (exit code %s); next try in %.0f s",
                              name, new.poll(), max(due[name] - time.monotonic(), 0.0))

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            procs = list(self.procs)
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5)
        self.procs.clear()
