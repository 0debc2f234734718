"""``payswitch serve --workers N``: a supervisor, one journal writer, N worker processes.

Each worker is a whole switch (:func:`switch.io.app.serve`) on one core: its
own uvloop, acquirer links, admin HTTP, and terminal listeners bound with
SO_REUSEPORT, so the kernel spreads new terminal connections evenly over the
workers (a socket shared by fork is not: measured 14/186 of 200 long-lived
connections between two processes, against 101/99 with SO_REUSEPORT).

The supervisor (this module, the process ``serve`` started):

- starts the bundled simulators as before, then the one journal writer
  process (:mod:`switch.journal.shared`) on a Unix socket in a private
  directory, and holds its control connection (the writer ends with it);
- starts worker 0 first, alone: it is the reversal sender (store-and-forward
  sweeps, orphan adoption) and at this first start reverses every
  transaction left ``sent`` by the previous run; only when it is ready do
  the other workers start, so that recovery never meets a live worker's
  transaction in flight;
- restarts a worker that dies, alone: the others keep serving, the dead one's
  terminals reconnect (to any worker).  Its transactions in flight are left
  ``sent`` in the journal, which knows they were the dead worker's; worker 0
  reverses them within :data:`switch.io.service.ORPHAN_CHECK` seconds, as a
  restart would.  A restarted worker 0 only adopts orphans: it never reverses
  another live worker's transactions;
- serves ``/metrics``, ``/healthz``, ``/readyz`` and ``POST /admin/reload``
  on ``[http] port`` for the whole switch (:mod:`switch.io.fleet_http`);
  worker ``i`` has its own admin HTTP on ``port + 1 + i``;
- SIGTERM/SIGINT: every worker drains (up to ``drain_timeout``), then the
  journal closes; SIGHUP: the supervisor checks the file and, if it accepts
  it, every worker takes it (one still starting, once it is ready).

Workers never read the configuration file themselves: they start, restart
and reload on the text the supervisor last accepted (a copy, ``accepted.toml``
in its private directory), so a worker restarted after a rejected reload
runs what the others run, not the file as it is now.  For that the
supervisor accepts only what every running worker applies whole: it refuses
what a worker refuses (a changed set of acquirers), and a change that needs
a restart (:func:`Fleet.check_reload`).

If the journal writer dies the workers cannot journal anything: the
supervisor stops them all and exits 1 (the service manager restarts the
switch; start-up recovery then reverses what was in flight).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from switch import config as config_mod
from switch import config_reload
from switch.io import early_stop, hangup, journal_watch
from switch.io.children import _die_with_parent

log = logging.getLogger("payswitch")

SOCKET_DIR_PREFIX = "payswitch-journal-"
_STALE_EMPTY_AFTER = 60.0  # seconds: a directory without its socket that long was never used


def sweep_stale_socket_dirs(parent: str | None = None) -> int:
    """Remove the journal socket directories of supervisors that were killed (SIGKILL
    leaves no chance to clean up): ours, under ``parent`` (the temporary directory),
    whose socket nobody listens on any more; how many went.

    A live switch's socket accepts the connection and is left alone, as is a
    directory just made whose socket is not bound yet (younger than a minute).
    """
    parent = parent or tempfile.gettempdir()
    removed = 0
    try:
        names = os.listdir(parent)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(SOCKET_DIR_PREFIX):
            continue
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid():
            continue
        sock_path = os.path.join(path, "journal.sock")
        if os.path.exists(sock_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(sock_path)
                continue  # someone listens: a running switch
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # the socket's writer is gone
            except OSError:
                continue  # not sure: leave it
            finally:
                probe.close()
        elif time.time() - st.st_mtime < _STALE_EMPTY_AFTER:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not os.path.exists(path)
    return removed

def read_config(path: str | os.PathLike) -> tuple[config_mod.Config, str]:
    """The configuration in file ``path`` (errors as :func:`switch.config.load`'s) and its text."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise config_mod.ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return config_mod.loads(text, str(path)), text


def load_accepted(accepted: str, source: str) -> config_mod.Config:
    """A worker's configuration: the text its supervisor accepted (``accepted``), named as ``source``."""
    try:
        text = Path(accepted).read_text()
    except OSError as e:
        raise config_mod.ConfigError(f"{source}: the supervisor's accepted copy {accepted}: {e.strerror}") from None
    return config_mod.loads(text, source)


RESTART_DELAY_MAX = 10.0  # seconds: a worker that keeps dying is restarted at most this often
_WATCH = 0.2  # seconds between two looks at the child processes


class Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.ready = asyncio.Event()
        self.restarts = 0
        self.started_at = 0.0
        self.quick_deaths = 0  # deaths in a row within a minute of starting
        self.started_on: str | None = None  # the accepted configuration's text when it was started

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def state(self) -> str:
        """What the supervisor's /healthz, /readyz and /status say of it: ready, starting
        (not ready yet), exited (dead, not yet seen by the watch), restarting (dead and
        seen: started again after its delay) or not started."""
        if self.proc is None:
            return "restarting" if self.restarts else "not started"
        if self.proc.poll() is not None:
            return "exited"
        return "ready" if self.ready.is_set() else "starting"


class Fleet:
    """The supervisor: the journal writer, the workers, and the fleet's HTTP."""

    def __init__(self, cfg: config_mod.Config, config_path: str | None, count: int, log_format: str,
                 withhold_env: frozenset[str] | set[str] = frozenset(), text: str | None = None) -> None:
        """``text``: the file's text ``cfg`` was loaded from (read again at start if not given)."""
        self.cfg = cfg
        self.config_path = config_path
        self.accepted = text  # the text of the configuration last accepted: every worker's
        self.count = count
        self.log_format = log_format
        self.workers = [Worker(i) for i in range(count)]
        self.stopping = False
        self.writer: subprocess.Popen | None = None
        self.journal = None  # the control connection to the shared writer
        self.socket_path = ""
        self._dir = ""
        self._stop = asyncio.Event()
        # Reloads checked here (the workers count their own): /metrics as worker="supervisor".
        self.reloads = {"ok": 0, "rejected": 0}
        self.last_reload_ok = True

    # -- the journal writer ----------------------------------------------------------

    def start_journal(self) -> None:
        from switch import wiring
        from switch.journal.process import ProcessJournal, start_shared_writer

        key = wiring.load_hmac_key(self.cfg)  # created here, once, before any worker reads it
        removed = sweep_stale_socket_dirs()
        if removed:
            log.info("removed %d journal socket director%s left by a supervisor that was killed",
                     removed, "y" if removed == 1 else "ies")
        self._dir = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # mode 0700: the socket's only door
        self.writer, self.socket_path = start_shared_writer(self._dir)
        self.journal = ProcessJournal(self.cfg.journal.url, hmac_key=key, connect=self.socket_path, control=True)
        if self.config_path:
            if self.accepted is None:
                self.accepted = read_config(self.config_path)[1]
            self._accept(self.accepted)

    def _accept(self, text: str) -> None:
        """``text`` is the configuration every worker starts, restarts and reloads on from now."""
        fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".toml")  # mode 0600, in our 0700 directory
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.accepted_path)
        except OSError:
            os.unlink(tmp)
            raise
        self.accepted = text

    @property
    def accepted_path(self) -> str:
        return os.path.join(self._dir, "accepted.toml")

    def close_journal(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.writer is not None:
            try:
                self.writer.wait(30)
            except subprocess.TimeoutExpired:
                self.writer.kill()
                self.writer.wait()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------

    def spawn(self, w: Worker, *, recover_all: bool) -> None:
        from switch.journal.process import writer_env

        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "switch.io.workers", "--index", str(w.index), "--count", str(self.count),
               "--journal-socket", self.socket_path, "--control-fd", str(theirs.fileno()),
               "--log-format", self.log_format]
        if self.config_path:
            cmd += ["--config", self.config_path, "--accepted", self.accepted_path]
        if recover_all:
            cmd.append("--recover-all")
        try:
            w.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=writer_env(), stdin=subprocess.DEVNULL,
                                      preexec_fn=_die_with_parent)
        finally:
            theirs.close()
        w.started_at = time.monotonic()
        w.started_on = self.accepted
        w.ready = asyncio.Event()
        w.control = ours
        ours.setblocking(False)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_control, w, ours)

    def _on_control(self, w: Worker, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            if w.control is sock:
                w.control = None
            return
        if b"ready" in data and w.control is sock:
            w.ready.set()
            if w.started_on != self.accepted and w.alive and not self.stopping:
                # A reload was accepted while it started: it read the copy before and the reload's
                # SIGHUP went to the ready workers only.  It takes it now, as they did.
                log.info("worker %d started on the configuration before the last reload: reload signalled",
                         w.index)
                w.started_on = self.accepted
                try:
                    w.proc.send_signal(signal.SIGHUP)
                except ProcessLookupError:
                    pass  # it died meanwhile: the watch restarts it on the accepted copy

    async def start_one(self, w: Worker, *, recover_all: bool, timeout: float = 60.0) -> None:
        self.spawn(w, recover_all=recover_all)
        proc = w.proc  # the watch forgets it (w.proc = None) once it sees it dead
        deadline = time.monotonic() + timeout
        while not w.ready.is_set():
            if proc.poll() is not None:
                raise RuntimeError(f"worker {w.index} exited during start-up (exit code {proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {w.index} not ready after {timeout:.0f} s")
            try:
                await asyncio.wait_for(w.ready.wait(), _WATCH)
            except TimeoutError:
                pass

    async def watch(self) -> None:
        """Restart a worker that died, alone; stop everything if the journal writer died."""
        while not self.stopping:
            await asyncio.sleep(_WATCH)
            if self.stopping:
                return
            if self.writer.poll() is not None:
                log.error("the journal writer process exited (code %s): stopping every worker; the service "
                          "manager starts the switch again (runbook: \"The journal writer process died\")",
                          self.writer.returncode)
                self.fatal = f"journal writer process exited (code {self.writer.returncode})"
                self._stop.set()
                return
            for w in self.workers:
                if w.proc is None or w.alive or self.stopping:
                    continue  # None: dead and seen, its restart waits for its delay
                lived = time.monotonic() - w.started_at
                w.quick_deaths = w.quick_deaths + 1 if lived < 60 else 1
                delay = min(RESTART_DELAY_MAX, 0.5 * 2 ** (w.quick_deaths - 1)) if w.quick_deaths > 1 else 0.0
                log.error("worker %d (pid %d) exited with code %s after %.0f s; restarting it%s"
                          " (runbook: \"A worker died\")", w.index, w.proc.pid, w.proc.returncode, lived,
                          f" in {delay:.1f} s" if delay else "")
                w.restarts += 1
                w.proc = None
                asyncio.get_running_loop().create_task(self._restart(w, delay))

    def _writer_hangs(self, waited: float) -> None:
        """The shared writer has not answered a ping for ``waited`` s (switch.io.journal_watch):
        killed, its death stops every worker (:meth:`watch`), each write it had not confirmed
        failing (96) in its worker."""
        log.error("the journal writer process has not answered for %.0f s (runbook: \"The journal writer hangs\"):"
                  " killing it (pid %d)", waited, self.writer.pid)
        self.writer.kill()

    def _watch_ended(self, task: asyncio.Task) -> None:
        """The watch ends only when told to; a bug that ends it would leave dead workers
        dead and the journal writer unwatched: stop the switch (exit 1) for the service
        manager to start it again, as when the writer dies."""
        if task.cancelled() or task.exception() is None:
            return
        e = task.exception()
        log.error("the supervisor's watch of its workers failed: stopping every worker; the service manager"
                  " starts the switch again (an internal error: report it with this line)", exc_info=e)
        self.fatal = f"the supervisor's watch of its workers failed ({type(e).__name__})"
        self._stop.set()

    async def _restart(self, w: Worker, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            await self.start_one(w, recover_all=False)
        except RuntimeError as e:
            log.error("%s", e)  # the watch sees it dead again and tries later
            return
        log.info("worker %d restarted (pid %d)", w.index, w.proc.pid)
        print(f"payswitch: worker {w.index} restarted (pid {w.proc.pid})", flush=True)

    def signal_all(self, sig: int, *, ready_only: bool = False) -> int:
        """Signal every live worker (``ready_only``: those whose signal handlers are set: a
        SIGHUP before that would end a worker still starting)."""
        sent = 0
        for w in self.workers:
            if w.alive and (w.ready.is_set() or not ready_only):
                try:
                    w.proc.send_signal(sig)
                    sent += 1
                except ProcessLookupError:
                    pass
        return sent

    async def stop_workers(self) -> None:
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.drain_budget + 15
        for w in self.workers:
            while w.proc is not None and w.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if w.proc is not None and w.proc.poll() is None:
                log.error("worker %d did not stop in time: killed", w.index)
                w.proc.kill()
                w.proc.wait()

    # -- reload ----------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Check the file here as a worker would, then have every worker take it (SIGHUP)."""
        if not self.config_path:
            return False, "running on the embedded default: there is no file to reload"
        try:
            new, text = read_config(self.config_path)
            applied = self.check_reload(new)
            try:  # before the SIGHUP: what each worker reloads, and a restarted one starts on
                self._accept(text)
            except OSError as e:
                raise config_mod.ConfigError(f"{self.config_path}: its copy for the workers cannot be"
                                             f" written: {e.strerror or e}") from None
        except config_mod.ConfigError as e:
            self.reloads["rejected"] += 1
            self.last_reload_ok = False
            why = config_mod.error_for_others(e, self.config_path)  # read by the admin client and the log's readers
            log.error("reload rejected, keeping the running configuration: %s%s", why, hangup.REJECTED_HINT)
            return False, why
        self.cfg = new  # its drain_timeout bounds the stop; nothing it was started with differs
        self.reloads["ok"] += 1
        self.last_reload_ok = True
        sent = self.signal_all(signal.SIGHUP, ready_only=True)
        log.info("configuration %s: reload signalled to %d worker(s)", self.config_path, sent)
        return True, (f"reload of {self.config_path} signalled to {sent} of {self.count} workers; applied:"
                      f" {', '.join(applied) or 'no changes'} (each worker logs what it applied)")

    def check_reload(self, new: config_mod.Config) -> list[str]:
        """The key paths a reload to ``new`` applies; a ConfigError if the fleet must not take it.

        A worker refuses what a single process refuses (a file a restart would
        refuse, a changed set of acquirers): accepted here, such a file would
        be what a worker restarted later starts on, alone.  Beyond that, a
        change a single process takes with "needs a restart" is refused as a
        whole: the running workers could not apply it, but one restarted
        later would start on it (other listener ports, another journal,
        other acquirer endpoints) and the supervisor would still poll the
        old HTTP ports.  Workers and the supervisor thus always run, and
        restart on, one configuration; a restart of the switch takes the file.
        """
        config_reload.check_files(new)
        why = config_reload.acquirers_changed({a.name for a in self.cfg.acquirers}, new)
        if why:
            raise config_mod.ConfigError(why)
        applied, refused = config_reload.reload_changes(self.cfg, new)
        if refused:
            raise config_mod.ConfigError(
                f"{new.source}: not applied, needs a restart: {', '.join(refused)} (with --workers a reload"
                " that needs a restart is refused whole, so that a worker restarted later runs what the others"
                " run: restart the switch to take it, or put these keys back to reload the rest)")
        return applied

    # -- the whole -------------------------------------------------------------------

    async def run(self, demo: bool = False) -> int:
        from switch.io.fleet_http import FleetHttp
        from switch.config_security import load_admin_token

        self.fatal = None
        loop = asyncio.get_running_loop()
        http = None
        # SIGTERM/SIGINT while the workers start: start-up stops (the finally below), exit 0.
        stopper = early_stop.LoopStop(self._stop)
        try:
            self.start_journal()
            print(f"payswitch: journal {self.cfg.journal.url} in one writer process for {self.count} workers",
                  flush=True)
            await self.start_one(self.workers[0], recover_all=True)
            await asyncio.gather(*(self.start_one(w, recover_all=False) for w in self.workers[1:]))
            http = await FleetHttp(self, token=load_admin_token(self.cfg.http, self.cfg.source)).serve(
                self.cfg.http.host, self.cfg.http.port)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            await stopper.serving()  # from now on a stop drains every worker
            if hangup.pending():  # a SIGHUP while the workers started: re-read the file now
                log.info("SIGHUP received while starting: re-reading the configuration now")
                self.reload()
            watch = loop.create_task(self.watch())
            watch.add_done_callback(self._watch_ended)
            hung = loop.create_task(journal_watch.watch(self.journal.ping, self._writer_hangs))
            for w in self.workers:
                print(f"payswitch: worker {w.index} pid {w.proc.pid}, admin HTTP on "
                      f"http://{self.cfg.http.host}:{worker_http_port(self.cfg, w.index)}"
                      f"{' (reversal sender)' if w.index == 0 else ''}", flush=True)
            print(f"payswitch: metrics and health of all {self.count} workers on "
                  f"http://{self.cfg.http.host}:{self.cfg.http.port}/metrics /healthz", flush=True)
            if demo:
                from switch.io.app import _demo_purchase

                await _demo_purchase(self.cfg)
            print("payswitch: ready", flush=True)
            await self._stop.wait()
            log.info("stopping: every worker drains its requests in flight (up to %.0f s)", self.cfg.drain_budget)
            watch.cancel()
            hung.cancel()
        except asyncio.CancelledError:
            if not stopper.cancelled_start():
                raise
            log.info("%s received while starting: stopping the workers started so far", stopper.signal_name)
        finally:
            if http is not None:
                http.close()
            await self.stop_workers()
            self.close_journal()
        if self.fatal:
            print(f"payswitch: stopped: {self.fatal}", file=sys.stderr)
            return 1
        return 0


def worker_http_port(cfg: config_mod.Config, index: int) -> int:
    """Worker ``index``'s own admin HTTP port (0: any free one)."""
    return cfg.http.port + 1 + index if cfg.http.port else 0


def worker_reload_refused(cfg: config_mod.Config, config_path: str | None, index: int) -> tuple[bool, str]:
    """A worker's own ``POST /admin/reload``: refused.  A worker reloads only the copy its
    supervisor accepted, so taking it here would say "reloaded" for a file nobody checked."""
    return False, (f"worker {index} of serve --workers reloads only what the supervisor accepted: POST"
                   f" /admin/reload on port {cfg.http.port} (or SIGHUP the supervisor) to check"
                   f" {config_path or 'the configuration'} and reload every worker; nothing reloaded")


# -- a worker process ------------------------------------------------------------------


def worker_main(argv: list[str]) -> int:
    from switch.security import coredump

    coredump.no_core_dumps()  # it holds keys and card data; PR_SET_DUMPABLE does not survive exec
    p = argparse.ArgumentParser(prog="python -m switch.io.workers", description="one payswitch worker process")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--journal-socket", required=True)
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--config")
    p.add_argument("--accepted", help="the text of --config the supervisor accepted: the one read")
    p.add_argument("--log-format", default="text")
    p.add_argument("--recover-all", action="store_true")
    args = p.parse_args(argv)
    hangup.hold()  # the supervisor signals only ready workers, but an operator may not
    early_stop.hold()  # a stop while this worker starts (the supervisor stopping too): exit 0
    try:
        return _worker(args)
    except early_stop.StopRequested:
        return 0


def _worker(args) -> int:
    from switch import logs
    from switch.io.app import serve
    from switch.io.service import WorkerRole

    logs.setup(args.log_format, logs.level_from_env(os.environ.get("PAYSWITCH_LOG")), worker=args.index)
    control = socket.socket(fileno=args.control_fd)
    if args.accepted:  # never the file itself: it may hold a reload the supervisor refused
        def load() -> config_mod.Config:
            return load_accepted(args.accepted, args.config)
    else:
        def load() -> config_mod.Config:
            return config_mod.load(args.config) if args.config else config_mod.default()
    try:
        cfg = load()
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e, args.config), file=sys.stderr)
        return 2
    role = WorkerRole(args.index, args.count, args.journal_socket, recover_all=args.recover_all)
    import uvloop

    try:
        uvloop.run(serve(cfg, args.config, worker=role, ready=lambda: control.sendall(b"ready\n"), load=load))
    except (OSError, RuntimeError, config_mod.ConfigError) as e:
        why = config_mod.error_for_others(e, args.config) if isinstance(e, config_mod.ConfigError) else e
        print(f"payswitch[worker {args.index}]: cannot start: {why}", file=sys.stderr)
        return 1
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
