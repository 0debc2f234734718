"""The event relay against a real NATS JetStream server and a webhook receiver.

The journal is a file written by this process (the real SQLite journal, so
the outbox rows come from its triggers); the relay is ``payswitch relay``
as a process, killed with SIGKILL mid-stream and started again.  Then: a
JetStream consumer holds every outcome exactly once by message id, in
order per merchant; the webhook partner saw every event of its merchant
(at least once, first sightings in order), each signature valid; a partner
without a grant saw nothing; the audit log says what went to whom.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switch.core.vas import verify
from switch.journal import TxnRecord
from switch.journal.sqlite import SqliteJournal
from tests.test_relay_faults import A, B, journal_and_merchants  # the merchants and their configuration text

NATS = ("127.0.0.1", 4222)


def _nats_up() -> bool:
    try:
        socket.create_connection(NATS, 1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222 (CI runs one)")


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict, bool]] = []
    secret = b""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(Receiver.secret, body, self.headers.get("X-Payswitch-Signature", ""), time.time())
        Receiver.seen.append((self.path, json.loads(body), ok))
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def produce(journal: SqliteJournal, start: int, count: int, pause: float = 0.0) -> None:
    for i in range(start, start + count):
        merchant = A if i % 3 else B
        rec, _ = journal.insert(TxnRecord(terminal_id="EVT00001" if merchant == A else "EVT00002",
                                          merchant_id=merchant, mti="0200", stan="%06d" % i,
                                          transmission_time="0101120000", processing_code="000000",
                                          amount=100 + i, currency="978", content_digest="d",
                                          pan_masked="476173******0119", customer_token="tabc")).result()
        journal.update(rec.id, response=b"x", response_code="00" if i % 5 else "05", state="answered").result()
        if pause:
            time.sleep(pause)


async def stream_ids(prefix: str, run: str, merchant: str) -> list[int]:
    import nats

    nc = await nats.connect(f"nats://{NATS[0]}:{NATS[1]}")
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"{run}.events.{merchant}.>", stream=f"{prefix}_{merchant}")
        ids = []
        while True:
            try:
                msgs = await sub.fetch(200, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py 2.16 raises the latter
                break
            for msg in msgs:
                assert json.loads(msg.data)["id"] == int(msg.headers["Nats-Msg-Id"])
                ids.append(int(msg.headers["Nats-Msg-Id"]))
                await msg.ack()
        return ids
    finally:
        await nc.close()


async def delete_streams(prefix: str) -> None:
    import nats

    nc = await nats.connect(f"nats://{NATS[0]}:{NATS[1]}")
    try:
        js = nc.jetstream()
        for merchant in (A, B):
            try:
                await js.delete_stream(f"{prefix}_{merchant}")
            except Exception:  # noqa: BLE001 - cleanup
                pass
    finally:
        await nc.close()


def test_relay_killed_mid_stream_delivers_every_event_once_by_id_in_order_per_merchant(tmp_path):
    run = "t" + secrets.token_hex(4)
    prefix = run.upper()
    secret = secrets.token_bytes(32)
    (tmp_path / "partner.secret").write_text(secret.hex())
    Receiver.seen, Receiver.secret = [], secret
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    path = tmp_path / "journal.sqlite"
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f"""{journal_and_merchants(path)}
[[merchants]]
id = "SOMEONEELSE0001"
terminals = ["EVT00003"]

[events]
nats_url = "nats://{NATS[0]}:{NATS[1]}"
subject_prefix = "{run}.events"
stream_prefix = "{prefix}"

[[events.partners]]
name = "books"
merchants = ["{A}"]
webhook = "http://127.0.0.1:{port}/books"
secret_file = "{tmp_path / 'partner.secret'}"

[[events.partners]]
name = "nosy"
merchants = ["SOMEONEELSE0001"]
webhook = "http://127.0.0.1:{port}/nosy"
secret_file = "{tmp_path / 'partner.secret'}"
""")
    journal = SqliteJournal(str(path), inline=True)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "switch.cli", "relay", "--config", str(cfg)]
    relay = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "relaying" in relay.stdout.readline()
        produce(journal, 1, 150)
        produce(journal, 151, 150, pause=0.002)  # still writing when the relay dies
        deadline = time.monotonic() + 10
        while len(Receiver.seen) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        relay.send_signal(signal.SIGKILL)
        relay.wait(5)
        delivered_before_kill = {e["id"] for p, e, _ in Receiver.seen}
        produce(journal, 301, 60)
        relay = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert "relaying" in relay.stdout.readline()
        conn = sqlite3.connect(path)
        expected = {m: [r[0] for r in conn.execute("SELECT id FROM outbox WHERE merchant_id = ? ORDER BY id", (m,))]
                    for m in (A, B)}
        assert len(expected[A]) + len(expected[B]) == 360
        assert len(delivered_before_kill) < len(expected[A])  # killed mid-stream
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = {e["id"] for p, e, _ in Receiver.seen if p == "/books"}
            if got >= set(expected[A]):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # let NATS catch up too
        for m in (A, B):
            ids = asyncio.run(stream_ids(prefix, run, m))
            assert ids == expected[m]  # every one, once, in order
        books = [(e, ok) for p, e, ok in Receiver.seen if p == "/books"]
        assert all(ok for _, ok in books)
        assert {e["merchant"] for e, _ in books} == {A}
        first_seen = list(dict.fromkeys(e["id"] for e, _ in books))
        assert first_seen == expected[A]
        assert not [s for s in Receiver.seen if s[0] == "/nosy"]
        state = sqlite3.connect(str(path) + ".relay")
        audited = {r[0] for r in state.execute("SELECT event_id FROM audit WHERE sink = 'webhook:books' AND outcome = 'sent'")}
        assert audited == set(expected[A])
        assert not state.execute("SELECT count(*) FROM audit WHERE sink = 'webhook:nosy'").fetchone()[0]
        for e, _ in books:
            assert "4761739001010119" not in json.dumps(e)
    finally:
        relay.kill()
        relay.wait(5)
        journal.close()
        server.shutdown()
        asyncio.run(delete_streams(prefix))


def test_a_nats_server_out_of_reach_is_one_warning_line_per_try_not_a_traceback(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[journal]\nurl = "sqlite://{tmp_path / "journal.sqlite"}"\n\n'
                   f'[events]\nnats_url = "nats://127.0.0.1:{port}"\n')
    SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True).close()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    relay = subprocess.Popen([sys.executable, "-m", "switch.cli", "relay", "--config", str(cfg)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "relaying" in relay.stdout.readline()
        lines = []
        while len(lines) < 2:  # the client tries again every 2 s
            lines.append(relay.stderr.readline())
    finally:
        relay.kill()
        relay.wait(5)
    assert all(" WARNING payswitch.relay NATS: " in line and line.endswith("; retrying\n") for line in lines), lines


class OwnNats:
    """A NATS server of this test's own (``nats-server -js``) that it can stop and start again on the same port and store."""

    def __init__(self, store) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.store = store
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


async def own_stream_ids(url: str, stream: str, subjects: str) -> list[int]:
    import nats

    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(subjects, stream=stream)
        ids = []
        while True:
            try:
                msgs = await sub.fetch(200, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            ids += [int(m.headers["Nats-Msg-Id"]) for m in msgs]
        return ids
    finally:
        await nc.close()


def relay_config(tmp_path, nats_url: str, prefix: str):
    from switch import config as config_mod

    return config_mod.loads(f"""{journal_and_merchants(tmp_path / 'journal.sqlite')}
[events]
nats_url = "{nats_url}"
subject_prefix = "{prefix.lower()}.events"
stream_prefix = "{prefix}"
retry_max = 0.5
""", str(tmp_path / "relay.toml"))


async def relay_while(relay, steps) -> None:
    """Run ``relay`` while the coroutine ``steps`` runs, then stop it."""
    task = asyncio.create_task(relay.run())
    try:
        await steps
    finally:
        relay.stop()
        await task


@pytest.mark.skipif(not shutil.which("nats-server"), reason="no nats-server binary to stop and start")
def test_nats_going_away_mid_run_loses_nothing_and_stores_nothing_twice(tmp_path, caplog):
    from switch.events import Relay

    server = OwnNats(tmp_path / "nats")
    server.start()
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    relay = Relay(relay_config(tmp_path, server.url, "AWAY"))
    conn = sqlite3.connect(tmp_path / "journal.sqlite")

    def outbox(m):
        return [r[0] for r in conn.execute("SELECT id FROM outbox WHERE merchant_id = ? ORDER BY id", (m,))]

    async def steps():
        produce(journal, 1, 30)
        await asyncio.sleep(1.0)
        server.stop()  # the broker goes away with the relay mid-run
        produce(journal, 31, 30)
        await asyncio.sleep(12)  # longer than a publish's wait for its ack
        server.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            cursor = relay.state.cursor("nats")
            if cursor == max(outbox(A) + outbox(B)):
                break

    try:
        with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
            asyncio.run(relay_while(relay, steps()))
        for m in (A, B):
            stored = asyncio.run(own_stream_ids(server.url, f"AWAY_{m}", f"away.events.{m}.>"))
            assert stored == outbox(m)  # every one, once, in order
    finally:
        journal.close()
        server.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any(s.startswith("NATS: event ") and "not acknowledged" in s for s in said), said
    assert "NATS: disconnected; events wait for the connection" in said
    assert f"NATS: connected again to 127.0.0.1:{server.port}" in said
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], said


def test_a_stream_that_exists_with_other_subjects_is_an_error_line_naming_it(tmp_path, caplog):
    import nats
    from nats.js.api import StreamConfig

    from switch.events import Relay

    run = "x" + secrets.token_hex(4)
    prefix = run.upper()
    url = f"nats://{NATS[0]}:{NATS[1]}"

    async def make_stream():
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(StreamConfig(name=f"{prefix}_{A}", subjects=[f"{run}.elsewhere.>"]))
        finally:
            await nc.close()

    asyncio.run(make_stream())
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    journal.close()
    relay = Relay(relay_config(tmp_path, url, prefix))

    async def steps():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("not acknowledged" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.1)

    try:
        with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
            asyncio.run(relay_while(relay, steps()))
    finally:
        asyncio.run(delete_streams(prefix))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"NATS: stream {prefix}_{A} exists with subjects ['{run}.elsewhere.>'], not {run}.events.{A}.>: "
                      f"{run}.events.{A}.approved cannot be stored until the stream takes {run}.events.{A}.> "
                      f"(nats stream edit {prefix}_{A} --subjects ...)"], errors
    assert relay.state.cursor("nats") == 0  # nothing passed over: the relay waits for the stream


def test_a_stream_of_another_name_holding_the_subjects_is_a_warning_and_events_go_there(tmp_path, caplog):
    import nats
    from nats.js.api import StreamConfig

    from switch.events import Relay

    run = "o" + secrets.token_hex(4)
    prefix = run.upper()
    url = f"nats://{NATS[0]}:{NATS[1]}"

    async def js_call(f):
        nc = await nats.connect(url)
        try:
            return await f(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(js_call(lambda js: js.add_stream(StreamConfig(name=f"{prefix}_ALL", subjects=[f"{run}.events.>"]))))
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 6)
    journal.close()
    relay = Relay(relay_config(tmp_path, url, prefix))
    last = sqlite3.connect(tmp_path / "journal.sqlite").execute("SELECT max(id) FROM outbox").fetchone()[0]

    async def steps():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and relay.state.cursor("nats") != last:
            await asyncio.sleep(0.1)

    try:
        with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
            asyncio.run(relay_while(relay, steps()))
        stored = asyncio.run(js_call(lambda js: js.stream_info(f"{prefix}_ALL"))).state.messages
    finally:
        asyncio.run(js_call(lambda js: js.delete_stream(f"{prefix}_ALL")))
    assert relay.state.cursor("nats") == last and stored == last
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said and all(s.startswith(f"NATS: stream {prefix}_EVTSHOP") and " not created: " in s and
                        s.endswith(" goes to the stream that holds it") for s in said), said
