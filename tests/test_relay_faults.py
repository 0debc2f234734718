"""The event relay when things go wrong: a partner's webhook failing, a journal
not there yet or not migrated yet, a corrupt state file, configuration errors.

The relay (:class:`switch.events.Relay`) runs in this process against a
journal file written here and webhook receivers in a thread; no NATS needed.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switch import config as config_mod
from switch.core.vas import verify
from switch.events import Relay
from switch.journal import TxnRecord
from switch.journal import schema
from switch.journal.sqlite import SqliteJournal

A, B = "EVTSHOPA0000001", "EVTSHOPB0000001"
FULL_PAN = "4761739001010119"


class Partners:
    """Webhook receivers on one port, by path: each answers the statuses in ``script[path]`` first, then 200."""

    def __init__(self, secret: bytes, port: int = 0) -> None:
        self.seen: list[tuple[str, dict, bool]] = []
        self.signed: list[tuple[str, bytes]] = []  # (X-Payswitch-Signature, body) of every POST
        self.script: dict[str, list[int]] = {}
        self.delay: dict[str, float] = {}  # seconds a path takes to answer, after taking the event
        self.secret = secret
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(outer.secret, body, self.headers.get("X-Payswitch-Signature", ""), time.time())
                outer.signed.append((self.headers.get("X-Payswitch-Signature", ""), body))
                planned = outer.script.get(self.path, [])
                status = planned.pop(0) if planned else 200
                event = json.loads(body)
                assert int(self.headers["X-Payswitch-Event-Id"]) == event["id"]
                if status == 200:
                    outer.seen.append((self.path, event, ok))
                time.sleep(outer.delay.get(self.path, 0.0))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self, path: str) -> list[int]:
        return [e["id"] for p, e, _ in self.seen if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_text(tmp_path, port: int, *, partner_toml: str | None = None, extra: str = "") -> str:
    (tmp_path / "partner.secret").write_text(secrets.token_hex(32))
    (tmp_path / "partner.secret").chmod(0o600)
    partners = partner_toml if partner_toml is not None else f"""
[[events.partners]]
name = "books"
merchants = ["{A}"]
webhook = "http://127.0.0.1:{port}/books"
secret_file = "{tmp_path / 'partner.secret'}"

[[events.partners]]
name = "stock"
merchants = ["{A}", "{B}"]
webhook = "http://127.0.0.1:{port}/stock"
secret_file = "{tmp_path / 'partner.secret'}"
"""
    return f"""{journal_and_merchants(tmp_path / 'journal.sqlite')}
[events]
retry_max = 0.2
{extra}
{partners}
"""


def journal_and_merchants(journal) -> str:
    """The relay configurations' [journal] (the file ``journal``) and merchants A and B."""
    return f"""
[journal]
url = "sqlite://{journal}"

[[merchants]]
id = "{A}"
terminals = ["EVT00001"]

[[merchants]]
id = "{B}"
terminals = ["EVT00002"]
"""


def produce(journal: SqliteJournal, start: int, count: int) -> None:
    for i in range(start, start + count):
        merchant = A if i % 3 else B
        rec, _ = journal.insert(TxnRecord(terminal_id="EVT00001" if merchant == A else "EVT00002",
                                          merchant_id=merchant, mti="0200", stan="%06d" % i,
                                          transmission_time="0101120000", processing_code="000000",
                                          amount=100 + i, currency="978", content_digest="d",
                                          pan_masked="476173******0119", pan_hash="v1:" + "ab" * 32,
                                          customer_token="tabc")).result()
        journal.update(rec.id, response=b"x", response_code="00" if i % 5 else "05", state="answered").result()


def outbox_ids(tmp_path, merchants=(A, B)) -> list[int]:
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    try:
        marks = ",".join("?" * len(merchants))
        return [r[0] for r in conn.execute(f"SELECT id FROM outbox WHERE merchant_id IN ({marks}) ORDER BY id",
                                           merchants)]
    finally:
        conn.close()


async def relay_until(relay: Relay, done, timeout: float = 15.0) -> None:
    task = asyncio.create_task(relay.run())
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        relay.stop()
        await task


def relay_until_stocked(tmp_path, partners: "Partners") -> None:
    """Run a relay until "stock" (granted every merchant) has every event of the outbox and
    "books" every one of merchant A's: the two sinks deliver side by side, and stopping at
    the first one's last event would cut the other short (on a busy machine, by a few)."""
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: partners.ids("/stock") == outbox_ids(tmp_path)
                            and partners.ids("/books") == outbox_ids(tmp_path, (A,))))


@pytest.fixture
def partners():
    p = Partners(b"")
    yield p
    p.close()


def relay_for(tmp_path, partners: Partners, **kw) -> Relay:
    cfg = config_mod.loads(config_text(tmp_path, partners.port, **kw), str(tmp_path / "relay.toml"))
    partners.secret = bytes.fromhex((tmp_path / "partner.secret").read_text())
    return Relay(cfg)


def test_a_failing_partner_gets_every_event_in_order_and_holds_no_other_partner_back(tmp_path, partners, caplog):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 30)
    relay = relay_for(tmp_path, partners)
    first_a = outbox_ids(tmp_path, (A,))[0]
    # books: its first event answered 500 five times (backoff 0.1, 0.2, 0.2 ...), then 503, then 200
    partners.script["/books"] = [500, 500, 500, 500, 500, 503]
    stock_done_while_books_failing: list[bool] = []

    def done():
        if partners.script["/books"] and len(partners.ids("/stock")) == len(outbox_ids(tmp_path)):
            stock_done_while_books_failing.append(True)
        return partners.ids("/books") == outbox_ids(tmp_path, (A,)) and partners.ids("/stock") == outbox_ids(tmp_path)

    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, done))
    journal.close()
    assert partners.ids("/books") == outbox_ids(tmp_path, (A,))  # none skipped, none reordered, none twice
    assert partners.ids("/stock") == outbox_ids(tmp_path)
    assert stock_done_while_books_failing  # stock had all while books was still failing
    assert all(ok for _, _, ok in partners.seen)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings.count(f"webhook:books: event {first_a} HTTP 500; trying again in 0.1 s") == 1
    assert f"webhook:books: event {first_a} HTTP 503; trying again in 0.2 s" in warnings
    audit = sqlite3.connect(str(tmp_path / "journal.sqlite") + ".relay")
    outcomes = [r[0] for r in audit.execute("SELECT outcome FROM audit WHERE sink = 'webhook:books' AND event_id = ? "
                                             "ORDER BY id", (first_a,))]
    assert outcomes == ["HTTP 500"] * 5 + ["HTTP 503", "sent"]


def test_a_partner_down_for_a_while_gets_everything_in_order_once_it_is_back(tmp_path, partners, caplog):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 12)
    relay = relay_for(tmp_path, partners)
    partners.close()  # nobody listens on the partners' port
    back: list[Partners] = []

    def done():
        refused = [r for r in caplog.records if r.getMessage().startswith("webhook:books: event 1 failed: connect to")]
        if not back and len(refused) >= 3:
            back.append(Partners(partners.secret, partners.port))
        return bool(back) and back[0].ids("/books") == outbox_ids(tmp_path, (A,)) \
            and back[0].ids("/stock") == outbox_ids(tmp_path)

    try:
        with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
            asyncio.run(relay_until(relay, done))
        assert back[0].ids("/books") == outbox_ids(tmp_path, (A,))
        assert back[0].ids("/stock") == outbox_ids(tmp_path)
    finally:
        journal.close()
        for p in back:
            p.close()


def test_a_restarted_relay_delivers_from_its_cursor_nothing_lost_nothing_twice(tmp_path, partners):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 20)
    relay_until_stocked(tmp_path, partners)
    produce(journal, 21, 20)
    relay_until_stocked(tmp_path, partners)
    journal.close()
    assert partners.ids("/stock") == outbox_ids(tmp_path)
    assert partners.ids("/books") == outbox_ids(tmp_path, (A,))


def test_a_relay_stopped_mid_batch_saves_its_position_and_sends_nothing_twice(tmp_path, partners):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 20)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    # books takes four events, then its server fails until the relay is stopped (SIGTERM does relay.stop())
    partners.script["/books"] = [200] * 4 + [500] * 1000
    asyncio.run(relay_until(relay, lambda: len(partners.ids("/books")) == 4 and
                            relay.state.conn.execute("SELECT count(*) FROM audit WHERE outcome = 'HTTP 500'")
                            .fetchone()[0] > 0))
    assert ids[3] <= relay.state.cursor("webhook:books") < ids[4]  # past the last one it delivered, not the next
    partners.script["/books"] = []
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: len(partners.ids("/books")) >= len(ids)))
    journal.close()
    assert partners.ids("/books") == ids  # each once, in order


def test_event_bodies_carry_the_masked_pan_and_no_other_card_data(tmp_path, partners):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 6)
    relay_until_stocked(tmp_path, partners)
    journal.close()
    assert partners.seen
    for _, event, ok in partners.seen:
        assert ok
        text = json.dumps(event)
        assert FULL_PAN not in text and "card_sealed" not in text and "pan_hash" not in text
        assert "track" not in text and "cvv" not in text.lower()
        assert event["pan_masked"] == "476173******0119"
        assert set(event) == {"id", "event", "txn", "rrn", "merchant", "terminal", "mti", "processing_code", "kind",
                              "amount", "currency", "code", "auth_code", "pan_masked", "customer_token", "at"}


def test_the_signature_header_is_as_the_documentation_says(tmp_path, partners):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    relay_until_stocked(tmp_path, partners)
    journal.close()
    for header, body in partners.signed:  # t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
        t, v1 = header.split(",")
        assert t.startswith("t=") and abs(int(t[2:]) - time.time()) < 60
        expected = hmac.new(partners.secret, t[2:].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert v1 == "v1=" + expected


def test_a_journal_not_there_yet_is_one_warning_then_its_events_are_delivered(tmp_path, partners, caplog):
    relay = relay_for(tmp_path, partners)
    path = tmp_path / "journal.sqlite"
    created: list[SqliteJournal] = []

    def done():
        if not created and len([r for r in caplog.records if "does not exist yet" in r.getMessage()]) >= 2:
            created.append(SqliteJournal(str(path), inline=True))
            produce(created[0], 1, 9)
        return bool(created) and partners.ids("/stock") == outbox_ids(tmp_path)

    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, done))
    created[0].close()
    assert partners.ids("/stock") == outbox_ids(tmp_path) != []
    said = [r.getMessage() for r in caplog.records if "does not exist yet" in r.getMessage()]
    assert said == [f"webhook:{p}: journal {path} does not exist yet (the switch creates it); waiting"
                    for p in ("books", "stock")]


def test_a_journal_of_an_older_schema_is_a_warning_naming_its_version_until_it_is_migrated(tmp_path, partners,
                                                                                            caplog, monkeypatch):
    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 13)
    schema.migrate(conn, str(path))
    monkeypatch.undo()
    relay = relay_for(tmp_path, partners)
    migrated: list[SqliteJournal] = []

    def done():
        if not migrated and any(r.name == "payswitch.relay" and "schema version 13" in r.getMessage()
                                for r in caplog.records):  # the relay's word, not the journal's own
            migrated.append(SqliteJournal(str(path), inline=True))  # the switch starts: it migrates to 14
            produce(migrated[0], 1, 6)
        return bool(migrated) and partners.ids("/stock") == outbox_ids(tmp_path)

    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, done))
    migrated[0].close()
    conn.close()
    assert partners.ids("/stock") == outbox_ids(tmp_path) != []
    said = [r.getMessage() for r in caplog.records if r.name == "payswitch.relay" and "webhook:stock" in r.getMessage()]
    assert said[0].startswith(f"webhook:stock: journal {path} has schema version 13, the relay reads version "
                              f"{schema.SCHEMA_VERSION} (no such column: ")
    assert said[0].endswith("): start the switch of this version on it to migrate it; waiting")
    assert said[1:] == [f"webhook:stock: the outbox of journal {path} is readable again"]


def test_a_corrupt_state_file_is_a_configuration_error_naming_it(tmp_path, partners):
    (tmp_path / "journal.sqlite.relay").write_bytes(b"not a database, " * 100)
    with pytest.raises(config_mod.ConfigError) as e:
        relay_for(tmp_path, partners)
    assert str(e.value) == (
        f"{tmp_path / 'relay.toml'}: relay state file {tmp_path / 'journal.sqlite.relay'} is not usable: "
        "file is not a database (moved aside, the relay starts again from the first event: see the runbook) "
        "- at `$.events.state_file` (not set: the default, beside the journal)")


@pytest.mark.parametrize("secret_file, message", [
    ("missing.secret", "cannot read partner 'books' secret {file}: No such file or directory"),
    ("empty.secret", "partner 'books' secret must hold at least 16 bytes as hex"),
])
def test_a_partner_secret_that_cannot_be_read_stops_the_relay_before_it_starts(tmp_path, partners, secret_file,
                                                                               message):
    (tmp_path / "empty.secret").write_text("")
    file = tmp_path / secret_file
    text = f"""
[[events.partners]]
name = "books"
merchants = ["{A}"]
webhook = "http://127.0.0.1:{partners.port}/books"
secret_file = "{file}"
"""
    with pytest.raises(config_mod.ConfigError) as e:
        relay_for(tmp_path, partners, partner_toml=text)
    assert str(e.value) == (f"{tmp_path / 'relay.toml'}: {message.format(file=file)} "
                            "- at `$.events.partners[0].secret_file`")


@pytest.mark.parametrize("partners_text, error", [
    (f'[[events.partners]]\nname = "books"\nmerchants = ["{A}", "NOSUCHSHOP00001"]\n',
     "unknown merchant 'NOSUCHSHOP00001' - at `$.events.partners[0].merchants[1]`"),
    (f'[[events.partners]]\nname = "books"\nmerchants = ["{A}"]\n\n[[events.partners]]\nname = "books"\nmerchants = ["{B}"]\n',
     "partner 'books' is configured twice - at `$.events.partners[1].name`"),
    ('[[events.partners]]\nname = "books"\nmerchants = []\nwebhook = "http://127.0.0.1:9/x"\n',
     "a webhook partner needs secret_file or secret_env (webhooks are signed) - at `$.events.partners[0]`"),
    ('audit_days = -1\n', "must be 0 (kept for ever) or more, got -1.0 - at `$.events.audit_days`"),
    ('metrics_listen = "9584"\n',
     "expected 'host:port', got '9584' - at `$.events.metrics_listen`"),
])
def test_event_partner_configuration_errors_name_the_key(tmp_path, partners_text, error):
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads(config_text(tmp_path, 9, partner_toml=partners_text), "relay.toml")
    assert str(e.value) == f"relay.toml: {error}"


def test_a_sink_that_fails_is_an_error_line_and_starts_again_from_its_position(tmp_path, partners, caplog,
                                                                                monkeypatch):
    from switch import events, relay_backoff

    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 12)
    relay = relay_for(tmp_path, partners)
    real, failed = events.read_after, []

    def read_after(conn, after, limit):
        if not failed:  # the first read of the first sink fails
            failed.append(after)
            raise RuntimeError("disk on fire")
        return real(conn, after, limit)

    monkeypatch.setattr(events, "read_after", read_after)
    monkeypatch.setattr(relay_backoff, "RESTART_FIRST_WAIT", 0.05)
    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, lambda: partners.ids("/books") == outbox_ids(tmp_path, (A,))
                                and partners.ids("/stock") == outbox_ids(tmp_path)))
    journal.close()
    assert partners.ids("/books") == outbox_ids(tmp_path, (A,))
    assert partners.ids("/stock") == outbox_ids(tmp_path)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].endswith(" stopped: RuntimeError: disk on fire; starting again in 0.05 s from its last "
                              "saved position")


def test_a_partner_secret_file_others_may_read_is_a_warning_naming_its_key(tmp_path, partners, caplog):
    text = config_text(tmp_path, partners.port)
    (tmp_path / "partner.secret").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        Relay(config_mod.loads(text, "relay.toml"))
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"secret file {tmp_path / 'partner.secret'} is open to others than its owner (mode 0644; "
                    f"chmod 600) - at `$.events.partners[{i}].secret_file`" for i in (0, 1)]


def test_a_stop_while_a_webhook_is_on_its_way_lets_it_finish_and_a_restart_sends_it_never_again(tmp_path, partners):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 10)
    ids = outbox_ids(tmp_path, (A,))
    partners.delay["/books"] = 0.4  # books takes each event at once, and answers slowly
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: len(partners.ids("/books")) >= 2))  # stopped while its answer is due
    assert partners.ids("/books") == ids[:2]
    assert relay.state.cursor("webhook:books") == ids[1]  # the relay knows it was delivered
    partners.delay["/books"] = 0.0
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: len(partners.ids("/books")) >= len(ids)))
    journal.close()
    assert partners.ids("/books") == ids  # each once, in order


def test_a_stop_during_nats_publish_retries_ends_the_sink_after_the_try_on_its_way(tmp_path, monkeypatch, caplog):
    """With the broker not acknowledging, a stop ends the NATS sink after the publish in progress:
    no publish is started after it, and the relay does not wait out its grace."""
    import nats
    import nats.errors

    from switch import events

    tries: list[bool] = []  # one per publish: was the relay stopped when it started?
    relay_box: list[Relay] = []

    class Js:
        async def add_stream(self, config):
            return None

        async def publish(self, subject, body, headers, timeout):
            tries.append(relay_box[0]._stop.is_set())
            raise nats.errors.TimeoutError

    class Nc:
        connected_url = None

        def jetstream(self):
            return Js()

        async def close(self):
            pass

    async def connect(url, **kw):
        return Nc()

    monkeypatch.setattr(nats, "connect", connect)
    monkeypatch.setattr(events, "STOP_GRACE", 60.0)  # a sink cut short at the grace would hang this test
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    journal.close()
    cfg = config_mod.loads(f"{journal_and_merchants(tmp_path / 'journal.sqlite')}\n[events]\n"
                           'nats_url = "nats://127.0.0.1:4222"\nretry_max = 0.2\n', str(tmp_path / "relay.toml"))
    relay = Relay(cfg)
    relay_box.append(relay)

    async def run():
        task = asyncio.create_task(relay.run())
        while len(tries) < 3:
            await asyncio.sleep(0.01)
        relay.stop()
        await asyncio.wait_for(task, 5.0)

    with caplog.at_level(logging.WARNING, logger="payswitch.relay"):
        asyncio.run(run())
    assert tries and not any(tries)  # no publish started once stopped
    assert relay.state.cursor("nats") == 0  # nothing passed over


def test_the_relay_serves_its_metrics_on_metrics_listen(tmp_path, partners):
    import urllib.request

    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    relay = relay_for(tmp_path, partners, extra='metrics_listen = "127.0.0.1:0"')
    partners.script["/books"] = [400]
    scraped: list[str] = []

    def done():
        if relay.metrics_server is None or not relay.state.conn.execute("SELECT count(*) FROM parked").fetchone()[0]:
            return False
        port = relay.metrics_server.server_address[1]
        scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        return True

    asyncio.run(relay_until(relay, done))
    journal.close()
    assert 'payswitch_events_undeliverable_total{partner="books"} 1.0' in scraped[0]
    assert 'payswitch_events_undeliverable_total{partner="stock"} 0.0' in scraped[0]
    assert 'payswitch_events_partner_refusing{partner="books"} 0.0' in scraped[0]


def test_a_metrics_listen_address_in_use_is_a_configuration_error_naming_the_key(tmp_path, partners):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = relay_for(tmp_path, partners, extra=f'metrics_listen = "127.0.0.1:{port}"')
        with pytest.raises(config_mod.ConfigError) as e:
            asyncio.run(relay.run())
    assert str(e.value) == (f"{tmp_path / 'relay.toml'}: the relay's /metrics cannot listen on 127.0.0.1:{port}: "
                            "Address already in use - at `$.events.metrics_listen`")


@pytest.mark.parametrize("extra, kept_days", [("", 90), ("audit_days = 7", 7), ("audit_days = 0", None)])
def test_the_audit_log_keeps_audit_days_of_rows(tmp_path, partners, extra, kept_days, monkeypatch):
    from switch import events

    monkeypatch.setattr(events, "PRUNE_CHUNK", 2)  # deleted two at a time
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    relay = relay_for(tmp_path, partners, extra=extra)
    day = 86400.0
    ages = [400, 91, 89, 8, 6, 1]  # days before now
    relay.state.conn.executemany(
        "INSERT INTO audit (sink, event_id, merchant_id, event, outcome, at) VALUES ('webhook:books', ?, ?, "
        "'approved', 'sent', ?)", [(-i, A, time.time() - age * day) for i, age in enumerate(ages)])
    asyncio.run(relay_until(relay, lambda: partners.ids("/stock") == outbox_ids(tmp_path)))
    journal.close()
    kept = [round((time.time() - at) / day) for (at,) in relay.state.conn.execute(
        "SELECT at FROM audit WHERE event_id <= 0 ORDER BY at")]
    assert kept == sorted(age for age in ages if kept_days is None or age < kept_days)[::-1]
    assert relay.state.conn.execute("SELECT count(*) FROM audit WHERE event_id > 0").fetchone()[0] > 0  # today's
