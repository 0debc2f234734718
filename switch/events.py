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
  at least once, never out of order.

Each sink's position is kept in the relay's state file (SQLite, default
``<journal>.relay``) after every delivered batch: after a crash (kill -9)
the relay starts again from there, so an event is delivered again at most
as far back as one batch -- NATS suppresses those by message id, webhook
receivers by the ``id`` in the body.  The state file also holds the audit
log: what was sent to whom, when, and how it went.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sqlite3
import time
from pathlib import Path

from switch import config as config_mod
from switch.core.vas import sign
from switch.journal.outbox import Event, read_after

log = logging.getLogger("payswitch.relay")

BATCH = 100
POLL = 0.2  # seconds between looks at an outbox with nothing new
SIGNATURE_HEADER = "X-Payswitch-Signature"

_STATE = (
    "CREATE TABLE IF NOT EXISTS cursor (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL) STRICT",
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,          -- nats, or webhook:<partner>
        event_id INTEGER NOT NULL,
        merchant_id TEXT NOT NULL,
        event TEXT NOT NULL,
        outcome TEXT NOT NULL,       -- sent, or the failure of this try
        at REAL NOT NULL
    ) STRICT""",
)


def journal_path(cfg: config_mod.Config) -> Path:
    url = cfg.journal.url
    if not url.startswith("sqlite://") or url.endswith(":memory:"):
        raise config_mod.ConfigError(f"{cfg.source}: the relay reads a journal file, not {url!r} - at `$.journal.url`")
    return Path(url.removeprefix("sqlite://"))


def body_of(event: Event) -> bytes:
    """The event as partners get it: the outbox body with its ``id``."""
    return json.dumps({"id": event.id, **json.loads(event.body)}, separators=(",", ":")).encode()


def _token(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class State:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        for statement in _STATE:
            self.conn.execute(statement)

    def cursor(self, sink: str) -> int:
        row = self.conn.execute("SELECT last_id FROM cursor WHERE sink = ?", (sink,)).fetchone()
        return row[0] if row else 0

    def advance(self, sink: str, last_id: int, audit: list[tuple]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES (?, ?, ?, ?, ?, ?)", audit)
            self.conn.execute("INSERT INTO cursor (sink, last_id) VALUES (?, ?) "
                              "ON CONFLICT (sink) DO UPDATE SET last_id = excluded.last_id", (sink, last_id))

    def note(self, sink: str, event: Event, outcome: str) -> None:
        self.conn.execute("INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES (?, ?, ?, ?, ?, ?)",
                          (sink, event.id, event.merchant_id, event.event, outcome, time.time()))


class Relay:
    def __init__(self, cfg: config_mod.Config) -> None:
        self.cfg = cfg
        self.events = cfg.events
        path = journal_path(cfg)
        self.journal_uri = f"file:{path}?mode=ro"
        self.state = State(self.events.state_file or str(path) + ".relay")
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _read(self, conn: sqlite3.Connection, after: int) -> list[Event]:
        try:
            return read_after(conn, after, BATCH)
        except sqlite3.OperationalError as e:  # no outbox yet: the switch has not migrated this journal
            log.debug("outbox not readable yet: %s", e)
            return []

    async def run(self) -> None:
        sinks = []
        if self.events.nats_url:
            sinks.append(self._nats())
        for partner in self.events.partners:
            if partner.webhook:
                sinks.append(self._webhook(partner))
        if not sinks:
            log.warning("relay: no NATS and no webhook partner configured; nothing to do")
            return
        print(f"relaying {len(sinks)} sink(s)", flush=True)
        tasks = [asyncio.create_task(s) for s in sinks]
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.journal_uri, uri=True, isolation_level=None)

    async def _nats(self) -> None:
        import nats
        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError

        ev = self.events
        nc = await nats.connect(ev.nats_url, max_reconnect_attempts=-1, error_cb=_nats_error)
        js = nc.jetstream()
        streams: set[str] = set()
        conn = self._connect()
        sink = "nats"
        last = self.state.cursor(sink)
        try:
            while True:
                batch = self._read(conn, last)
                if not batch:
                    await asyncio.sleep(POLL)
                    continue
                audit = []
                for event in batch:
                    merchant = _token(event.merchant_id)
                    stream = f"{ev.stream_prefix}_{merchant}"
                    if stream not in streams:
                        try:
                            await js.add_stream(StreamConfig(name=stream, subjects=[f"{ev.subject_prefix}.{merchant}.>"]))
                        except BadRequestError:
                            pass  # exists
                        streams.add(stream)
                    await js.publish(f"{ev.subject_prefix}.{merchant}.{event.event}", body_of(event),
                                     headers={"Nats-Msg-Id": str(event.id)}, timeout=10.0)
                    audit.append((sink, event.id, event.merchant_id, event.event, "sent", time.time()))
                last = batch[-1].id
                self.state.advance(sink, last, audit)
        finally:
            conn.close()
            await nc.close()

    async def _webhook(self, partner) -> None:
        from adapters.wallet.http import ConnectionPool, TransportError
        from switch.io.vas import read_secret

        secret = read_secret(self.cfg.source, f"partner {partner.name!r} secret", partner.secret_file,
                             partner.secret_env, "events.partners")
        granted = set(partner.merchants)
        sink = f"webhook:{partner.name}"
        pool = ConnectionPool(partner.webhook, size=1)
        conn = self._connect()
        last = self.state.cursor(sink)
        try:
            while True:
                batch = self._read(conn, last)
                if not batch:
                    await asyncio.sleep(POLL)
                    continue
                audit = []
                for event in batch:
                    if event.merchant_id not in granted:
                        continue  # not this partner's: never sent, never logged as sent
                    body = body_of(event)
                    wait = 0.1
                    while True:
                        headers = [(SIGNATURE_HEADER, sign(secret, body, int(time.time()))),
                                   ("X-Payswitch-Event-Id", str(event.id))]
                        try:
                            resp = await pool.request("POST", "" if pool.base_path else "/", body, timeout=10.0,
                                                      headers=headers)
                            outcome = "sent" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
                        except TransportError as e:
                            outcome = f"failed: {e}"
                        if outcome == "sent":
                            break
                        self.state.note(sink, event, outcome)
                        await asyncio.sleep(wait)
                        wait = min(wait * 2, self.events.retry_max)
                    audit.append((sink, event.id, event.merchant_id, event.event, "sent", time.time()))
                last = batch[-1].id
                self.state.advance(sink, last, audit)
        finally:
            conn.close()
            await pool.close()


async def _nats_error(e: Exception) -> None:
    """One line per NATS connection problem: the client retries on its own (the default logs a traceback each time)."""
    log.warning("NATS: %s: %s; retrying", type(e).__name__, e)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="payswitch relay", description="relay the journal's event outbox")
    parser.add_argument("--config", help="TOML configuration file (default: the embedded default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = config_mod.load(args.config) if args.config else config_mod.default()
        relay = Relay(cfg)
    except config_mod.ConfigError as e:
        print(config_mod.error_line(e), file=__import__("sys").stderr)
        return 2

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()

    asyncio.run(go())
    return 0
