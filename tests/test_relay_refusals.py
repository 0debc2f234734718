"""A partner's refusals, as the relay tells them apart (:mod:`switch.relay_webhook`): an event it refuses
for good is parked, a partner that refuses every event (its URL or our credentials wrong) has its queue
held, in order, until it accepts; and the state file's lock, which keeps ``redeliver`` and a second relay
off a state file a relay runs on.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from switch.journal.sqlite import SqliteJournal
from tests.test_relay_faults import (A, FULL_PAN, Partners, config_text, outbox_ids, produce, relay_for,
                                     relay_until)


@pytest.fixture
def partners():
    p = Partners(b"")
    yield p
    p.close()


@pytest.mark.parametrize("status", [400, 409, 413, 415, 422])
def test_a_refusal_of_the_event_parks_it_and_the_partner_gets_the_next_ones(tmp_path, partners, caplog, status):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 12)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    # books: its first event is answered 429 (too many requests: tried again), then 200; its second refused
    partners.script["/books"] = [429, 200, status]
    with caplog.at_level(logging.INFO, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, lambda: partners.ids("/books") == [ids[0]] + ids[2:]
                                and partners.ids("/stock") == outbox_ids(tmp_path)))
    journal.close()
    assert partners.ids("/books") == [ids[0]] + ids[2:]  # every later event, in order, once
    assert partners.ids("/stock") == outbox_ids(tmp_path)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"webhook:books: event {ids[1]} (merchant {A}, approved) refused with HTTP {status}: parked as "
                      "undeliverable, not tried again (payswitch relay parked lists them; runbook: "
                      "events parked as undeliverable)"]
    assert FULL_PAN not in caplog.text and "476173" not in caplog.text
    state = sqlite3.connect(str(tmp_path / "journal.sqlite") + ".relay")
    parked = state.execute("SELECT sink, event_id, merchant_id, status, redelivered FROM parked").fetchall()
    assert parked == [("webhook:books", ids[1], A, f"HTTP {status}", None)]
    outcomes = [r[0] for r in state.execute("SELECT outcome FROM audit WHERE sink = 'webhook:books' AND event_id = ? "
                                            "ORDER BY id", (ids[1],))]
    assert outcomes == [f"parked: HTTP {status}"]
    assert relay.metrics.registry.get_sample_value("payswitch_events_undeliverable_total",
                                                    {"partner": "books"}) == 1
    assert relay.metrics.registry.get_sample_value("payswitch_events_undeliverable_total",
                                                    {"partner": "stock"}) == 0


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
def test_a_passing_refusal_is_tried_again_never_parked(tmp_path, partners, status):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 3)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    partners.script["/books"] = [status, status]
    asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids))
    journal.close()
    assert partners.ids("/books") == ids
    assert not relay.state.conn.execute("SELECT count(*) FROM parked").fetchone()[0]


def test_parked_events_are_listed_and_sent_again_on_redeliver(tmp_path, partners, capsys):
    from switch import events

    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 9)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    partners.script["/books"] = [200, 400, 200, 413]  # its second and fourth events refused for good
    last = outbox_ids(tmp_path)[-1]
    # Until its position is saved past the last event too: a partner has the events before the
    # relay saves how far it got, and redeliver reports the saved position.
    asyncio.run(relay_until(relay, lambda: partners.ids("/books") == [ids[0], ids[2]] + ids[4:]
                            and relay.state.cursor("webhook:books") == last))
    assert partners.ids("/books") == [ids[0], ids[2]] + ids[4:]
    config = tmp_path / "relay.toml"
    config.write_text(config_text(tmp_path, partners.port))
    partners.secret = bytes.fromhex((tmp_path / "partner.secret").read_text())  # config_text wrote a new one
    capsys.readouterr()

    assert events.main(["parked", "--config", str(config)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(" at ")[0] for line in listed] == [
        f"webhook:books event {ids[1]} merchant {A} approved: HTTP 400",
        f"webhook:books event {ids[3]} merchant {A} declined: HTTP 413"]
    assert events.main(["redeliver", "--config", str(config), "nosuch"]) == 2
    assert events.main(["redeliver", "books", "--config", str(config)]) == 0
    assert capsys.readouterr().out == (f"webhook:books: 2 parked event(s) to send again; position moved back from "
                                       f"{last} to {ids[1] - 1}: start the relay (it sends every later event "
                                       "again too, partners de-duplicate by id)\n")
    assert events.main(["parked", "--config", str(config)]) == 0
    assert capsys.readouterr().out == ""

    partners.seen.clear()
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids[1:]))
    journal.close()
    assert partners.ids("/books") == ids[1:]  # the parked ones and every later one, in order
    assert relay.state.conn.execute("SELECT count(*) FROM parked WHERE redelivered IS NULL").fetchone()[0] == 0


def refusing(relay, partner: str) -> float:
    return relay.metrics.registry.get_sample_value("payswitch_events_partner_refusing", {"partner": partner})


def held_line(status: int, event_id: int) -> str:
    return (f"webhook:books: refused with HTTP {status} (event {event_id}): the partner's URL or our credentials "
            "for it are wrong, not the event; its events are held, in order, and tried again until it accepts them "
            "(runbook: a partner refuses every event)")


def audited(relay, event_id: int) -> list[str]:
    return [r[0] for r in relay.state.conn.execute(
        "SELECT outcome FROM audit WHERE sink = 'webhook:books' AND event_id = ? ORDER BY id", (event_id,))]


@pytest.mark.parametrize("status", [401, 403, 404, 405, 407, 410, 421, 426])
def test_a_partner_refusing_every_event_has_its_queue_held_in_order_until_it_accepts(tmp_path, partners, caplog,
                                                                                       status):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 12)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    partners.script["/books"] = [status] * 6  # then the partner fixes its side: 200 from there on
    gauge: list[float] = []

    def done():
        gauge.append(refusing(relay, "books"))
        return partners.ids("/books") == ids and partners.ids("/stock") == outbox_ids(tmp_path)

    with caplog.at_level(logging.DEBUG, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, done))
    journal.close()
    assert partners.ids("/books") == ids  # every one, once, in order: none parked, none skipped
    assert partners.ids("/stock") == outbox_ids(tmp_path)  # the other partner was not held back
    assert not relay.state.conn.execute("SELECT count(*) FROM parked").fetchone()[0]
    assert relay.metrics.registry.get_sample_value("payswitch_events_undeliverable_total", {"partner": "books"}) == 0
    assert 1 in gauge and refusing(relay, "books") == 0 and refusing(relay, "stock") == 0
    # One error line for the episode, not one per try; one line when it ends; the tries in the audit log.
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [held_line(status, ids[0])]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"webhook:books: HTTP 200 to event {ids[0]} after ")
    assert warnings[0].endswith(f" s refusing with HTTP {status}: delivering its held events")
    assert audited(relay, ids[0]) == [f"HTTP {status}"] * 6 + ["sent"]


def test_a_hold_is_told_again_when_the_refusal_changes_and_ends_when_the_partner_answers_for_the_event(
        tmp_path, partners, caplog):
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 6)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    # Its URL is wrong (404), then its server deploys (503), then the URL is right but the secret is not (401),
    # then it answers for the event itself: 422, the event is refused for good.
    partners.script["/books"] = [404, 503, 404, 401, 422]
    with caplog.at_level(logging.INFO, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids[1:]))
    journal.close()
    assert partners.ids("/books") == ids[1:]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [held_line(404, ids[0]), held_line(401, ids[0]),
                      f"webhook:books: event {ids[0]} (merchant {A}, approved) refused with HTTP 422: parked as "
                      "undeliverable, not tried again (payswitch relay parked lists them; runbook: "
                      "events parked as undeliverable)"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == f"webhook:books: event {ids[0]} HTTP 503; trying again in 0.2 s"
    assert warnings[1].startswith(f"webhook:books: HTTP 422 to event {ids[0]} after ")
    assert len(warnings) == 2, warnings
    assert refusing(relay, "books") == 0
    assert audited(relay, ids[0]) == ["HTTP 404", "HTTP 503", "HTTP 404", "HTTP 401", "parked: HTTP 422"]


def test_a_relay_stopped_while_held_keeps_its_position_and_delivers_everything_once_its_url_is_fixed(
        tmp_path, partners):
    from switch import config as config_mod
    from switch.events import Relay

    def partner_toml(path: str) -> str:
        return f"""
[[events.partners]]
name = "books"
merchants = ["{A}"]
webhook = "http://127.0.0.1:{partners.port}/{path}"
secret_file = "{tmp_path / 'partner.secret'}"

[[events.partners]]
name = "stock"
merchants = ["{A}"]
webhook = "http://127.0.0.1:{partners.port}/stock"
secret_file = "{tmp_path / 'partner.secret'}"
"""

    def relay_at(path: str) -> Relay:
        cfg = config_mod.loads(config_text(tmp_path, partners.port, partner_toml=partner_toml(path)),
                               str(tmp_path / "relay.toml"))
        partners.secret = bytes.fromhex((tmp_path / "partner.secret").read_text())
        return Relay(cfg)

    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 12)
    ids = outbox_ids(tmp_path, (A,))
    partners.script["/wrong"] = [404] * 1000  # a webhook URL with a typo
    relay = relay_at("wrong")
    asyncio.run(relay_until(relay, lambda: refusing(relay, "books") == 1 and len(partners.script["/wrong"]) <= 996
                            and partners.ids("/stock") == ids))
    assert refusing(relay, "books") == 1 and partners.ids("/stock") == ids
    assert relay.state.cursor("webhook:books") < ids[0]  # nothing passed over
    assert not relay.state.conn.execute("SELECT count(*) FROM parked").fetchone()[0]

    relay = relay_at("books")  # the URL fixed, the relay started again
    asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids))
    journal.close()
    assert partners.ids("/books") == ids
    assert partners.ids("/stock") == ids  # nothing twice
    assert refusing(relay, "books") == 0


def test_redeliver_and_a_second_relay_refuse_while_a_relay_runs_on_the_state_file(tmp_path, partners, capsys):
    from switch import events

    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 6)
    ids = outbox_ids(tmp_path, (A,))
    partners.script["/books"] = [422]  # its first event parked
    relay = relay_for(tmp_path, partners)
    asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids[1:]))
    journal.close()
    config = tmp_path / "relay.toml"
    config.write_text(config_text(tmp_path, partners.port))
    partners.secret = bytes.fromhex((tmp_path / "partner.secret").read_text())
    state = str(tmp_path / "journal.sqlite") + ".relay"
    conn = sqlite3.connect(state)
    position = conn.execute("SELECT last_id FROM cursor WHERE sink = 'webhook:books'").fetchone()
    cmd = [sys.executable, "-m", "switch.cli", "relay", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    running = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "relaying" in running.stdout.readline()
        capsys.readouterr()
        in_use = (f"relay state file {state} is in use by process {running.pid} (a running payswitch relay, "
                  f"or a redeliver; lock {state}.lock)")
        assert events.main(["redeliver", "books", "--config", str(config)]) == 2
        assert capsys.readouterr().err == (f"payswitch relay redeliver: {in_use}: stop the relay first, "
                                           "then run it again\n")
        assert conn.execute("SELECT last_id FROM cursor WHERE sink = 'webhook:books'").fetchone() == position
        assert conn.execute("SELECT redelivered FROM parked").fetchall() == [(None,)]

        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.splitlines()[-1] == (f"payswitch relay: {in_use}: one relay per state file; "
                                                  "this one does not start")
        assert "relaying" not in second.stdout
    finally:
        running.send_signal(signal.SIGKILL)  # a crash: its lock goes with it
        running.wait(10)
    assert events.main(["redeliver", "books", "--config", str(config)]) == 0
    assert conn.execute("SELECT last_id FROM cursor WHERE sink = 'webhook:books'").fetchone() == (ids[0] - 1,)
    conn.close()


def test_a_hold_ends_on_the_partners_next_acceptance_even_after_its_sink_started_again(tmp_path, partners, caplog,
                                                                                         monkeypatch):
    """The sink fails while the partner's queue is held (its audit row cannot be written once) and starts
    again: the relay keeps the partner's hold across it, so the partner's acceptance still ends the hold,
    sets the gauge back to 0 (no alert left firing) and says so."""
    from switch import relay_backoff, relay_state

    monkeypatch.setattr(relay_backoff, "RESTART_FIRST_WAIT", 0.05)
    journal = SqliteJournal(str(tmp_path / "journal.sqlite"), inline=True)
    produce(journal, 1, 4)
    ids = outbox_ids(tmp_path, (A,))
    relay = relay_for(tmp_path, partners)
    partners.script["/books"] = [404, 404]  # then 200
    note, failed = relay_state.State.note, []

    def note_failing_once(self, sink, event, outcome):
        if sink == "webhook:books" and outcome == "HTTP 404" and not failed:
            failed.append(event.id)
            raise sqlite3.OperationalError("database is locked")
        return note(self, sink, event, outcome)

    monkeypatch.setattr(relay_state.State, "note", note_failing_once)
    with caplog.at_level(logging.INFO, logger="payswitch.relay"):
        asyncio.run(relay_until(relay, lambda: partners.ids("/books") == ids))
    journal.close()
    assert failed and partners.ids("/books") == ids
    assert refusing(relay, "books") == 0
    assert [r.getMessage() for r in caplog.records if "stopped: OperationalError" in r.getMessage()]
    ended = [r.getMessage() for r in caplog.records if r.getMessage().endswith("delivering its held events")]
    assert len(ended) == 1 and ended[0].startswith(f"webhook:books: HTTP 200 to event {ids[0]} after ")
