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
import os
import secrets
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

NATS = ("127.0.0.1", 4222)
A, B = "EVTSHOPA0000001", "EVTSHOPB0000001"


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
    cfg.write_text(f"""
[journal]
url = "sqlite://{path}"

[[merchants]]
id = "{A}"
terminals = ["EVT00001"]

[[merchants]]
id = "{B}"
terminals = ["EVT00002"]

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
