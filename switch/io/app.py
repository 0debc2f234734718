"""``payswitch serve``: the whole process on uvloop.

Start order: bundled simulators (embedded default) → journal and acquirers
(sign-on) → terminal listeners → HTTP.  SIGHUP or ``POST /admin/reload``
re-reads the configuration file; SIGTERM/SIGINT stop it cleanly: listeners
first, then in-flight requests finish (up to ``drain_timeout``; nothing new
is started meanwhile: :mod:`switch.core.drain`), then the acquirer links
sign off and close, then the journal.  While it still starts,
they stop start-up where it is and close what it opened
(:mod:`switch.io.early_stop`); exit 0 either way.  If the journal writer
(the thread of ``[journal] writer = "thread"``, or the process of
``"process"``) dies, the switch stops the same way by itself and exits 1:
the service manager starts it again.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import sys

from switch import config as config_mod
from switch import config_reload, config_timing, logs, preflight, wiring
from switch.config_security import load_admin_token
from switch.io import early_stop, hangup, journal_watch, ports
from switch.io.children import Children
from switch.io.http import AdminHttp
from switch.io.server import start_listeners
from switch.io.service import Switch, WorkerRole
from switch.io.workers import Fleet, read_config, worker_http_port, worker_reload_refused
from switch.journal import JournalError
from switch.security.coredump import no_core_dumps

log = logging.getLogger("payswitch")


# The young generation's threshold while serving.  A purchase allocates a few
# hundred container objects (dicts, records, frames), nearly all freed by
# reference counting; with CPython's default of 700 the collector ran every
# two or three purchases to find almost nothing.  (+4-6% TPS at 50
# connections, A/B against the default in one run; see the issue 9 note.)
GEN0_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once started: what start-up built (configuration, dialects, modules) is
    moved out of the collector's sight, and young collections run less often.
    Cycles are still collected; only the cadence changes."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, max(gen1, 10), max(gen2, 10))


async def serve(cfg: config_mod.Config, config_path: str | None, *, demo: bool = False,
                worker: WorkerRole | None = None, ready=None, load=None) -> str | None:
    """The switch until SIGTERM; ``worker``: as one of several worker processes
    (:mod:`switch.io.workers`), ``ready()`` called once it serves; ``load()``: the
    configuration a reload takes (the file ``config_path``; a worker's: what its
    supervisor accepted).  None after a stop; why, when the switch stopped because
    it cannot go on (the exit status is 1)."""
    stop = asyncio.Event()
    me = "payswitch" if worker is None else f"payswitch[worker {worker.index}]"
    # SIGTERM/SIGINT from here on: while starting, they cancel start-up (what
    # was opened is closed below, exit 0); once serving, they drain.
    stopper = early_stop.LoopStop(stop)
    switch = Switch(cfg, acquirer_factory=functools.partial(wiring.build_acquirer, source=cfg.source), worker=worker)
    fatal: list[str] = []  # why the switch stops on its own: exit 1
    if worker is None:  # with workers, the supervisor watches the shared writer
        _stop_when_the_writer_dies(switch, stop, fatal)
    servers, http = [], None
    watchdog = None
    try:
        await switch.start()
        if worker is None:  # with workers, the supervisor watches the shared writer
            watchdog = asyncio.get_running_loop().create_task(_watch_the_writer(switch))
        servers = await start_listeners(switch, cfg.listeners, reuse_port=worker is not None)
        # Terminals may send from now on: a stop drains what they sent (a stop
        # that came while starting cancelled start-up above, or lands here).
        await stopper.serving()

        started = cfg  # what listeners, HTTP, the journal and the acquirers were built from

        def reload() -> tuple[bool, str]:
            if not config_path:
                return False, "running on the embedded default: there is no file to reload"
            try:
                new = load() if load is not None else config_mod.load(config_path)
                config_reload.check_files(new)  # a file a restart would refuse is not taken either
                # applied: against the last configuration taken; needing a
                # restart: against what the process was started with.
                applied, _ = config_mod.reload_changes(switch.cfg, new)
                _, refused = config_mod.reload_changes(started, new)
                switch.reload(new)
            except config_mod.ConfigError as e:
                switch.metrics.reloaded(False)
                why = config_mod.error_for_others(e, config_path)  # read by the admin client and the log's readers
                log.error("reload rejected, keeping the running configuration: %s%s", why, hangup.REJECTED_HINT)
                return False, why
            switch.metrics.reloaded(True)
            short_drain = config_timing.drain_warning(new)
            if short_drain:
                log.warning("%s", short_drain)
            message = f"reloaded {config_path}; applied: {', '.join(applied) or 'no changes'}"
            if refused:
                message += f"; not applied, needs a restart: {', '.join(refused)}"
                log.warning("configuration reloaded from %s; not applied, needs a restart: %s",
                            config_path, ", ".join(refused))
            else:
                log.info("configuration reloaded from %s", config_path)
            return True, message

        http_port = cfg.http.port if worker is None else worker_http_port(cfg, worker.index)
        # A worker's own /admin/reload: only the supervisor checks the file (SIGHUP reaches it from there).
        on_post = reload if worker is None else functools.partial(worker_reload_refused, cfg, config_path, worker.index)
        http = await AdminHttp(switch, on_post, token=load_admin_token(cfg.http, cfg.source)).serve(
            cfg.http.host, http_port
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload)
        if hangup.pending():  # a SIGHUP while starting: the file may have changed since it was read
            log.info("SIGHUP received while starting: re-reading the configuration now")
            reload()
        for lst in cfg.listeners:
            print(f"{me}: terminals connect to {lst.host}:{lst.port} ({lst.header} length framing"
                  f"{', TPDU' if lst.tpdu else ''}{', TLS' if lst.tls_cert_file else ''}, dialect {lst.dialect})", flush=True)
        print(f"{me}: metrics and health on http://{cfg.http.host}:{http_port}/metrics /healthz", flush=True)
        print(f"{me}: configuration {cfg.source}; journal {cfg.journal.url}", flush=True)
        if demo:
            await _demo_purchase(cfg)
        settle_heap()
        print(f"{me}: ready", flush=True)
        if ready is not None:
            ready()
        await stop.wait()
        # Drain (section 6: every request taken is answered): stop accepting,
        # let requests in flight finish within drain_timeout (wallet customers
        # still confirming included) while new ones are answered 91 and each
        # connection closes once answered, then sign off and close the links.
        log.info("stopping: draining requests in flight (up to %.0f s)", switch.cfg.drain_budget)
        for s in servers:
            s.close()
        drained = await switch.drain() or await switch.cut()
        log.info("drained" if drained else "drain budget spent; closing with requests in flight")
    except asyncio.CancelledError:
        if not stopper.cancelled_start():
            raise
        log.info("%s received while starting: stopped before serving", stopper.signal_name)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for s in servers:
            s.close()
        if http is not None:
            http.close()
        await switch.close()
    return fatal[0] if fatal else None


def _stop_when_the_writer_dies(switch: Switch, stop: asyncio.Event, fatal: list[str]) -> None:
    """A journal writer (thread or process) that dies is not started again, and without
    it every payment would be answered 96 until someone restarts the switch: stop it
    the way a SIGTERM does (stop accepting, answer what is in flight) and exit 1, for
    the service manager to start it again, as the supervisor of workers does
    (:mod:`switch.io.workers`).  A stop of ours closes the journal first: no death."""
    journal = switch.journal
    entry = f"The journal writer {switch.cfg.journal.writer} died"  # its runbook section
    loop = asyncio.get_running_loop()

    def died(why: str) -> None:
        if fatal:
            return
        fatal.append(why)
        switch.metrics.journal_writable.set(0)
        log.error("%s: stopping the switch; the service manager starts it again (runbook: \"%s\")", why, entry)
        stop.set()

    journal.on_died = lambda why: loop.call_soon_threadsafe(died, why)


async def _watch_the_writer(switch: Switch) -> None:
    """A journal writer that hangs ends as a dead one does (switch.io.journal_watch)."""
    journal = switch.journal

    def exit_now(code: int) -> None:
        print("payswitch: stopped: journal writer thread hangs", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(code)

    await journal_watch.watch(
        journal.ping, lambda waited: journal_watch.stop_hung_writer(journal, waited, log=log, exit=exit_now)
    )


def _fail(cfg: config_mod.Config, path: str, msg: str):
    raise config_mod.ConfigError(f"{cfg.source}: {msg} - at `$.{path}`")


async def _demo_purchase(cfg: config_mod.Config) -> None:
    """Send one sandbox purchase through our own listener and print it (``make run``)."""
    from switch.client import Terminal, build, describe

    port = cfg.listeners[0].port

    def go():
        with Terminal("127.0.0.1", port, timeout=15) as t:
            req = build("purchase", pan="4761739001010119", amount=1250, expiry="2812")
            resp = t.transact(req)
            return req, resp

    try:
        req, resp = await asyncio.to_thread(go)
    except Exception as e:  # the switch still serves; say what happened
        print(f"payswitch: sample purchase failed: {e}", flush=True)
        return
    print("payswitch: sample purchase 0200 (12.50, card 476173******0119) →", flush=True)
    for line in describe(resp):
        print(line, flush=True)


def run(config_path: str | None, *, demo: bool = False, log_format: str = "text", workers: int | str | None = None) -> int:
    """The ``serve`` command: exit 0 after a clean stop, 2 for any configuration
    problem (one line, the same as ``check-config`` prints), 1 when the
    configuration is fine but the switch cannot start (a port in use), or
    when it stopped because its journal writer (thread or process) died.
    SIGTERM or SIGINT while starting: what was started is stopped, exit 0."""
    hangup.hold()  # a SIGHUP before the loop serves must not end the process
    early_stop.hold()  # nor a SIGTERM kill it half-started
    try:
        return _run(config_path, demo=demo, log_format=log_format, workers=workers)
    except early_stop.StopRequested as e:
        log.info("%s received while starting: stopped before serving", e)
        return 0


def _run(config_path: str | None, *, demo: bool, log_format: str, workers: int | str | None) -> int:
    try:
        level = logs.level_from_env(os.environ.get("PAYSWITCH_LOG"))
    except ValueError as e:
        print(f"payswitch: {e}", file=sys.stderr)
        return 2
    logs.setup(log_format, level)
    no_core_dumps()  # before any key is read; workers and simulators inherit it
    try:
        cfg, text = read_config(config_path) if config_path else (config_mod.default(), None)
        count = config_mod.worker_count(cfg.server.workers if workers is None else workers)
        if workers is not None:  # --workers: what N workers need of the file, said as for the key
            config_mod.check_workers(cfg, count, lambda path, msg: _fail(cfg, path, f"{msg} (serve --workers {workers})"))
        preflight.check(cfg)
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e, config_path), file=sys.stderr)
        return 2
    import uvloop

    from switch.config_security import secret_env_names

    try:
        ports.check(cfg, count)  # nothing started yet: a port in use stops it here, named
        ports.journal_free(cfg)
    except ports.Unavailable as e:
        print(f"payswitch: cannot start: {e}", file=sys.stderr)
        return 1
    children = Children(relay_stderr=log_format == "json", withhold_env=secret_env_names(cfg))
    try:
        children.start(cfg.simulators)
        if count > 1:
            code = uvloop.run(Fleet(cfg, config_path, count, log_format, text=text).run(demo=demo))
            if code:
                return code
        else:
            fatal = uvloop.run(serve(cfg, config_path, demo=demo))
            if fatal:
                print(f"payswitch: stopped: {fatal}", file=sys.stderr)
                return 1
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e, config_path), file=sys.stderr)
        return 2
    except (OSError, RuntimeError, JournalError) as e:  # JournalError names the file and what to do
        print(f"payswitch: cannot start: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # never a traceback on the console; the log has it at DEBUG
        log.debug("start-up failed", exc_info=True)
        print(f"payswitch: cannot start: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        children.stop()
    return 0
