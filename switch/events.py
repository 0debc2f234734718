"""The event relay: the journal's outbox to NATS JetStream and to partners' webhooks.

    payswitch relay [--config FILE]

A process of its own beside the switch (the switch never waits for a
broker): it reads the outbox (:mod:`switch.journal.outbox`) through its own
read-only connection to the journal, oldest first, and delivers each event
to every sink:

- **NATS JetStream** (``events.nats_url``): one stream per merchant
  (``<stream_prefix>_<merchant>``, subjects ``<subject_prefix>.<merchant>.>``),
  subject ``<subject_prefix>.<merchant>.<event>``, header ``Nats-Msg-Id`` =
  the outbox id, so the server drops a republished event (duplicate window:
  2 minutes by default).  Each publish waits for the server's ack, in order.
- **webhooks**, one sink per partner with a ``webhook`` URL: only events of
  the merchants granted to that partner, POSTed in outbox order (hence in
  order per merchant), signed like value-added service requests
  (``X-Payswitch-Signature``), retried with backoff until answered 2xx:
  at least once, never out of order.  An answer saying the partner's URL or
  our credentials are wrong (401, 403, 404, ...) holds the partner's queue
  until it accepts; one refusing the event itself (400, 422, ...) *parks* it
  and the partner gets the next one (:mod:`switch.relay_webhook`);
  ``payswitch relay parked`` lists them and ``payswitch relay redeliver``
  sends them again (:mod:`switch.relay_parked`).

Each sink's position is kept in the relay's state file (SQLite, default
``<journal>.relay``) after every delivered batch, and when the sink stops
after the last event it delivered: after a crash (kill -9) the relay starts
again from there, so an event is delivered again at most as far back as one
batch -- NATS suppresses those by message id, webhook receivers by the
``id`` in the body.  The state file also holds the audit log: what was sent
to whom, when, and how it went.

Nothing that goes wrong while running ends the relay: a journal not there
yet or not migrated yet, a broker away, a partner failing are each said in
a log line (ops/runbook.md, "Event relay") and waited out, and a sink that
fails otherwise starts again from its saved position.  What is wrong before
it starts (a secret, the state file) is a configuration error: exit 2.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

from switch import config as config_mod
from switch.journal.outbox import Event, read_after
from switch.journal.schema import SCHEMA_VERSION
from switch.relay_backoff import retried, sleep_unless, supervised
from switch.relay_state import InUse, State, lock
from switch.relay_webhook import STOPPED, Hold, Webhook, body_of
from switch.secret_refs import open_to_others

log = logging.getLogger("payswitch.relay")

BATCH = 100
POLL = 0.2  # seconds between looks at an outbox with nothing new
# At a stop, how long a delivery already on its way may take to finish (the
# webhook timeout): cut short, the partner may have it and the relay not know,
# and a restart would send it again.
STOP_GRACE = 10.0
PRUNE_EVERY = 3600.0  # seconds between two prunings of the audit log (events.audit_days)
PRUNE_CHUNK = 5000  # audit rows deleted at a time


class RelayMetrics:
    """The relay's own metrics (its process is not the switch's): served on ``events.metrics_listen``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.undeliverable = Counter(
            "payswitch_events_undeliverable", "Events parked as undeliverable: refused for good by a partner",
            ["partner"], registry=self.registry)
        self.refusing = Gauge(
            "payswitch_events_partner_refusing", "1 while a partner refuses every event (HTTP 401, 403, 404, ...): "
            "its events are held, in order, and tried again", ["partner"], registry=self.registry)


def journal_path(cfg: config_mod.Config) -> Path:
    url = cfg.journal.url
    if not url.startswith("sqlite://") or url.endswith(":memory:"):
        raise config_mod.ConfigError(f"{cfg.source}: the relay reads a journal file, not {url!r} - at `$.journal.url`")
    return Path(url.removeprefix("sqlite://"))


def state_path(cfg: config_mod.Config) -> str:
    """The relay's state file: ``events.state_file``, else ``<journal>.relay``."""
    return cfg.events.state_file or str(journal_path(cfg)) + ".relay"


def _token(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class Relay:
    def __init__(self, cfg: config_mod.Config) -> None:
        self.cfg = cfg
        self.events = cfg.events
        path = journal_path(cfg)
        self.journal = path
        self.state_path = state_path(cfg)
        self.state = State.open(cfg, self.state_path)
        # Secrets are read before the relay says it runs: a missing one is a
        # configuration error (exit 2), not a sink that never starts.
        self.secrets = {p.name: _partner_secret(cfg, i, p) for i, p in enumerate(self.events.partners) if p.webhook}
        self.metrics = RelayMetrics()
        for partner in self.events.partners:  # 0 from the start, so that increase() sees the first one parked
            if partner.webhook:
                self.metrics.undeliverable.labels(partner=partner.name)
                self.metrics.refusing.labels(partner=partner.name).set(0)
        self.metrics_server = None  # the /metrics listener, while the relay runs (events.metrics_listen)
        self.holds: dict[str, Hold] = {}  # partner -> its hold, across its sink's restarts (switch.relay_webhook)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        sinks = []
        if nats_url(self.events):
            sinks.append(("nats", self._nats))
        for partner in self.events.partners:
            if partner.webhook:
                sinks.append((f"webhook:{partner.name}", functools.partial(self._webhook, partner)))
        if not sinks:
            log.warning("relay: no NATS and no webhook partner configured; nothing to do")
            return
        held = lock(self.cfg, self.state_path)  # InUse: another relay runs on this state file
        try:
            if self.events.metrics_listen:
                self._serve_metrics()
            print(f"relaying {len(sinks)} sink(s)", flush=True)
            await self._relay(sinks)
        finally:
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            held.close()

    def _serve_metrics(self) -> None:
        from prometheus_client import start_http_server

        host, _, port = self.events.metrics_listen.rpartition(":")
        try:
            self.metrics_server, _thread = start_http_server(int(port), host, registry=self.metrics.registry)
        except OSError as e:
            raise config_mod.ConfigError(f"{self.cfg.source}: the relay's /metrics cannot listen on "
                                         f"{self.events.metrics_listen}: {e.strerror or e} "
                                         "- at `$.events.metrics_listen`") from None

    async def _relay(self, sinks: list) -> None:
        tasks = [asyncio.create_task(supervised(name, sink, self.events.retry_max, self._stop))
                 for name, sink in sinks]
        if self.events.audit_days:
            tasks.append(asyncio.create_task(supervised("audit pruning", self._prune_audit, self.events.retry_max,
                                                         self._stop)))
        await self._stop.wait()
        # Each sink ends after the event it is delivering (its _drain sees the stop); one
        # that does not within the grace is cut short.
        _done, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _prune_audit(self) -> None:
        """Delete audit rows older than ``events.audit_days``, at start and every PRUNE_EVERY seconds, a chunk
        at a time so that the sinks (same thread, same connection) go on meanwhile."""
        while not self._stop.is_set():
            before = time.time() - self.events.audit_days * 86400
            pruned = chunk = 0
            while not self._stop.is_set():
                pruned += (chunk := self.state.prune(before, PRUNE_CHUNK))
                if chunk < PRUNE_CHUNK:
                    break
                await asyncio.sleep(0)
            if pruned:
                log.info("audit log: %d row(s) older than %g days deleted", pruned, self.events.audit_days)
            await sleep_unless(self._stop, PRUNE_EVERY)

    async def _drain(self, sink: str, deliver) -> None:
        """Deliver the outbox to ``sink`` from its saved position, oldest first, for good.

        ``await deliver(event)`` returns once the event is done with: ``"sent"``,
        ``"parked"`` (refused for good, recorded as such), ``None`` when it is
        not the sink's, or ``STOPPED`` when the relay stopped before it got
        through (the next start sends it).  The position is saved after every
        batch, and when the sink stops (the relay stopped, the sink failed)
        after the last event it delivered: only a crash sends a batch again.
        """
        outbox = Outbox(self.journal, sink)
        last = saved = self.state.cursor(sink)
        audit: list[tuple] = []
        stop = self._stop
        try:
            while not stop.is_set():
                batch = outbox.read(last)
                if not batch:
                    await sleep_unless(stop, POLL)
                    continue
                for event in batch:
                    if stop.is_set():
                        break
                    outcome = await deliver(event)
                    if outcome == STOPPED:
                        break
                    if outcome == "sent":
                        audit.append((sink, event.id, event.merchant_id, event.event, "sent", time.time()))
                    last = event.id
                self.state.advance(sink, last, audit)
                saved, audit = last, []
        finally:
            outbox.close()
            if last != saved:
                try:
                    self.state.advance(sink, last, audit)
                except sqlite3.Error as e:
                    log.error("%s: position %d not saved in the state file: %s", sink, last, e)

    async def _nats(self) -> None:
        import nats

        ev = self.events
        closing = False

        async def disconnected() -> None:
            if not closing:
                log.warning("NATS: disconnected; events wait for the connection")

        async def reconnected() -> None:
            log.warning("NATS: connected again to %s", _server(nc))

        nc = await nats.connect(nats_url(ev), max_reconnect_attempts=-1, error_cb=_nats_error,
                                disconnected_cb=disconnected, reconnected_cb=reconnected)
        log.info("NATS: connected to %s", _server(nc))
        js = nc.jetstream()
        streams: set[str] = set()

        async def deliver(event: Event) -> str:
            merchant = _token(event.merchant_id)
            subject = f"{ev.subject_prefix}.{merchant}.{event.event}"
            stream = f"{ev.stream_prefix}_{merchant}"
            if stream not in streams:
                await _ensure_stream(js, stream, f"{ev.subject_prefix}.{merchant}.>", subject)
                streams.add(stream)
            return "sent" if await _publish(js, subject, event, ev.retry_max, self._stop) else STOPPED

        try:
            await self._drain("nats", deliver)
        finally:
            closing = True
            await nc.close()

    async def _webhook(self, partner) -> None:
        webhook = Webhook(partner, self.secrets[partner.name], self.state, self.metrics, self.events.retry_max,
                          self._stop, self.holds.setdefault(partner.name, Hold()))
        try:
            await self._drain(webhook.sink, webhook.deliver)
        finally:
            await webhook.close()


class Outbox:
    """The journal's outbox through a read-only connection, opened once the journal exists.

    What keeps it from being read (no journal file yet, a journal of an older
    schema, a file that is not a journal) is said once at warning level, and
    again whenever it changes, until the outbox can be read; a journal locked
    for a moment (the switch migrating it) is not worth a warning.
    """

    def __init__(self, path: Path, sink: str) -> None:
        self.path = path
        self.sink = sink
        self.conn: sqlite3.Connection | None = None
        self.problem: str | None = None

    def read(self, after: int) -> list[Event]:
        try:
            if self.conn is None:
                if not self.path.exists():
                    return self._cannot(f"journal {self.path} does not exist yet (the switch creates it); waiting")
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            events = read_after(self.conn, after, BATCH)
        except sqlite3.DatabaseError as e:
            if "locked" in str(e) or "busy" in str(e):
                log.debug("%s: journal %s busy: %s", self.sink, self.path, e)
                return []
            return self._cannot(self._why(e))
        if self.problem is not None:
            log.warning("%s: the outbox of journal %s is readable again", self.sink, self.path)
            self.problem = None
        return events

    def _why(self, e: sqlite3.DatabaseError) -> str:
        try:
            version = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        except (sqlite3.DatabaseError, AttributeError):
            version = 0
        if version < SCHEMA_VERSION and "no such" in str(e):  # no such table / column: not migrated yet
            return (f"journal {self.path} has schema version {version}, the relay reads version {SCHEMA_VERSION} "
                    f"({e}): start the switch of this version on it to migrate it; waiting")
        return f"cannot read the outbox of journal {self.path}: {e}; trying again"

    def _cannot(self, problem: str) -> list[Event]:
        if problem != self.problem:
            log.warning("%s: %s", self.sink, problem)
            self.problem = problem
        return []

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _partner_secret(cfg: config_mod.Config, i: int, partner) -> bytes:
    from switch.io.vas import read_secret

    where = f"events.partners[{i}].{'secret_env' if partner.secret_env else 'secret_file'}"
    secret = read_secret(cfg.source, f"partner {partner.name!r} secret", partner.secret_file, partner.secret_env, where)
    if partner.secret_file and not partner.secret_env and (problem := open_to_others(partner.secret_file)):
        log.warning("%s - at `$.%s`", problem, where)
    return secret


async def _ensure_stream(js, stream: str, subjects: str, subject: str) -> None:
    """Create the merchant's stream; one that exists with other settings is used as it is, and an
    error line says so if its subjects do not take the merchant's events."""
    from nats.js.api import StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subjects]))
        return
    except BadRequestError as e:
        reason = e.description or str(e)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:  # another stream holds the subjects: the server stores the events there
        log.warning("NATS: stream %s not created: %s; %s goes to the stream that holds it", stream, reason, subject)
        return
    held = info.config.subjects or []
    if not any(_subject_matches(pattern, subject) for pattern in held):
        log.error("NATS: stream %s exists with subjects %s, not %s: %s cannot be stored until the stream "
                  "takes %s (nats stream edit %s --subjects ...)", stream, held, subjects, subject, subjects, stream)


def _subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more to the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or token not in ("*", s[i]):
            return False
    return len(p) == len(s)


async def _publish(js, subject: str, event: Event, retry_max: float, stop: asyncio.Event) -> bool:
    """Publish and wait for the server's ack, trying again with doubling waits until acknowledged (True)
    or ``stop`` (False): the message id is the outbox id, so a publish the server did store before its
    ack was lost is dropped as a duplicate."""
    import nats.errors

    async def attempt() -> str | None:
        try:
            await js.publish(subject, body_of(event), headers={"Nats-Msg-Id": str(event.id)}, timeout=10.0)
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            return f"{type(e).__name__}: {e}"

    def retrying(failure: str, wait: float) -> None:
        log.warning("NATS: event %d to %s not acknowledged (%s); trying again in %.1f s",
                    event.id, subject, failure, wait)

    return await retried(attempt, retrying, retry_max, stop)


def nats_url(events) -> str | None:
    """The NATS URL: ``events.nats_url``, or the environment variable ``events.nats_url_env``
    names (the way to give it a user and password: never in the file)."""
    if events.nats_url_env:
        return os.environ.get(events.nats_url_env) or None
    return events.nats_url


def _server(nc) -> str:
    """host:port of the server ``nc`` is connected to (never the URL: it may hold a user and password)."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url else "(none)"


async def _nats_error(e: Exception) -> None:
    """One line per NATS connection problem: the client retries on its own (the default logs a traceback each time)."""
    log.warning("NATS: %s: %s; retrying", type(e).__name__, e)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from switch.security.coredump import no_core_dumps

    no_core_dumps()  # it holds the partners' webhook secrets

    parser = argparse.ArgumentParser(prog="payswitch relay", description="relay the journal's event outbox")
    config_help = "TOML configuration file (default: the embedded default)"
    parser.add_argument("--config", help=config_help)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("parked", help="list the events parked as undeliverable").add_argument(
        "--config", default=argparse.SUPPRESS, help=config_help)
    again = commands.add_parser("redeliver", help="have the relay (stopped) send a partner's parked events again")
    again.add_argument("partner", help="the partner's name, as in [[events.partners]]")
    again.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = config_mod.load(args.config) if args.config else config_mod.default()
        if args.command:
            from switch.relay_parked import command

            return command(cfg, state_path(cfg), args)
        relay = Relay(cfg)
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e, args.config), file=sys.stderr)
        return 2
    except InUse as e:  # redeliver's position would be overwritten by the relay's own
        print(f"payswitch relay {args.command}: {e}: stop the relay first, then run it again", file=sys.stderr)
        return 2

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()

    try:
        asyncio.run(go())
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e, args.config), file=sys.stderr)
        return 2
    except InUse as e:  # two relays on one state file would each save its position over the other's
        print(f"payswitch relay: {e}: one relay per state file; this one does not start", file=sys.stderr)
        return 2
    return 0
