"""``payswitch serve --workers N``: several worker processes behind one port (issue 9).

The real switch as processes: a supervisor, one journal writer, two workers
with SO_REUSEPORT listeners; terminals from pyiso8583 (tests/e2e.py).  Which
worker holds a connection is read from the kernel (psutil), so a test can put
a request on one worker and its retransmission on the other, or kill -9 the
worker holding a purchase in flight.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from switch import config as config_mod
from tests import e2e
from tests.e2e import wait_for

SLOW_MS = 2500  # bank-a (VISA) answers this late: a purchase stays in flight long enough to act on


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(e2e.ROOT), os.environ.get("PYTHONPATH")) if p))


def fleet(tmp_path: Path, workers: int | str = 2, slow_ms: int = SLOW_MS,
          acquirer_timeout: float = 8.0, merchant: str = "") -> e2e.SwitchProcess:
    """``merchant``: more keys of the demo merchant's table."""
    text, ports = e2e.card_config(tmp_path, acquirer_timeout=acquirer_timeout)
    terminals = 'terminals = ["DEMO0001-DEMO0999"]\n'
    assert terminals in text
    text = text.replace(terminals, terminals + merchant)
    ledger = str(tmp_path / "bank-a.ledger")
    text = text.replace(f'args = ["--ledger", "{ledger}"]', f'args = ["--ledger", "{ledger}", "--latency-ms", "{slow_ms}"]')
    assert "--latency-ms" in text
    text += f"\n[server]\nworkers = {json.dumps(workers)}\n"
    return e2e.SwitchProcess(tmp_path, text, ports).start(timeout=60)


def health(sw: e2e.SwitchProcess) -> tuple[int, dict]:
    status, body = sw.http_get("/healthz")
    return status, json.loads(body)


def worker_pids(sw: e2e.SwitchProcess) -> dict[int, int]:
    _, doc = health(sw)
    return {w["worker"]: w["pid"] for w in doc["workers"]}


def holder(sw: e2e.SwitchProcess, client: e2e.Client) -> int:
    """The index of the worker whose socket is the other end of ``client``."""
    mine = client.sock.getsockname()[1]
    for index, pid in worker_pids(sw).items():
        if pid is None:
            continue
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == sw.ports["term"] and c.raddr and c.raddr.port == mine:
                return index
    raise AssertionError("no worker holds this connection")


def clients_on(sw: e2e.SwitchProcess, wanted: set[int], tries: int = 60) -> dict[int, e2e.Client]:
    """One connection held by each worker in ``wanted`` (the kernel picks; we keep connecting)."""
    got: dict[int, e2e.Client] = {}
    spare = []
    for _ in range(tries):
        c = e2e.Client(sw.ports["term"], timeout=30)
        index = holder(sw, c)
        if index in wanted and index not in got:
            got[index] = c
            if set(got) == wanted:
                break
        else:
            spare.append(c)
    for c in spare:
        c.close()
    assert set(got) == wanted, f"the kernel never gave a connection to workers {wanted - set(got)}"
    return got


def rows(tmp: Path, where: str = "1", args: tuple = ()) -> list[dict]:
    conn = sqlite3.connect(tmp / "journal.sqlite", timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT id, stan, state, response_code, rrn FROM txn WHERE {where}", args)]
    finally:
        conn.close()


def ledger(sw: e2e.SwitchProcess, name: str = "bank-a") -> list[dict]:
    return sw.ledger(name)


def test_two_workers_share_the_port_and_both_take_purchases(tmp_path):
    sw = fleet(tmp_path, slow_ms=0)
    try:
        clients = [e2e.Client(sw.ports["term"]) for _ in range(40)]
        seen = [holder(sw, c) for c in clients]
        # SO_REUSEPORT hashes connections over the two listeners: both get a fair share.
        assert 8 <= seen.count(0) <= 32 and seen.count(0) + seen.count(1) == 40, seen
        for c in clients:
            resp = c.transact(e2e.purchase(1000, e2e.MASTERCARD))
            assert resp["39"] == "00", resp
            c.close()
        status, doc = health(sw)
        assert status == 200 and doc["status"] == "alive" and [w["alive"] for w in doc["workers"]] == [True, True]
        status, body = sw.http_get("/metrics")
        text = body.decode()
        assert status == 200 and "payswitch_workers 2.0" in text
        answered = {w: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("payswitch_requests_total{") and f'worker="{w}"' in line)
                    for w in ("0", "1")}
        assert answered["0"] == seen.count(0) and answered["1"] == seen.count(1), answered
        assert 'payswitch_worker_up{worker="1"} 1.0' in text
        assert 'payswitch_worker_restarts_total{worker="1"} 0.0' in text  # the dashboard's worker panels read both
        # Each worker's event loop, and the one journal writer they share (the supervisor's child).
        for w in ("0", "1"):
            assert f'payswitch_cpu_seconds_total{{part="event_loop",worker="{w}"}}' in text
        assert 'payswitch_cpu_seconds_total{part="journal_writer",worker="supervisor"}' in text
        # Each worker's own admin HTTP: port + 1 + index.
        for index in (0, 1):
            w_status, _ = e2e.SwitchProcess.http_get(
                type("P", (), {"ports": {"http": sw.ports["http"] + 1 + index}})(), "/healthz")
            assert w_status == 200
    finally:
        sw.stop()
    assert sw.proc.returncode == 0


def test_a_retransmission_on_the_other_worker_gets_the_original_answer(tmp_path):
    sw = fleet(tmp_path)
    try:
        on = clients_on(sw, {0, 1})
        doc = e2e.purchase(4200)  # VISA: bank-a answers SLOW_MS later
        on[0].send(doc)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in ledger(sw)), 10)
        # The terminal lost patience and sends it again on another connection: worker 1.
        t0 = time.monotonic()
        again = on[1].transact(doc)
        first = on[0].recv()
        assert time.monotonic() - t0 < SLOW_MS / 1000 + 3
        assert first["39"] == "00" and again["39"] == "00", (first, again)
        assert (again["37"], again["38"]) == (first["37"], first["38"])
        # Once answered, from the journal at once, on either worker.
        t1 = time.monotonic()
        assert on[1].transact(doc)["38"] == first["38"]
        assert time.monotonic() - t1 < 1.5
        auths = [e for e in ledger(sw) if e["event"] == "authorization"]
        assert len(auths) == 1, auths  # never authorized twice
        # Other content under the same key on the other worker: 94 (section 6).
        assert on[1].transact({**doc, "4": "%012d" % 4300})["39"] == "94"
    finally:
        sw.stop()


def test_a_reversal_on_the_other_worker_while_the_original_is_at_the_acquirer(tmp_path):
    sw = fleet(tmp_path)
    try:
        on = clients_on(sw, {0, 1})
        doc = e2e.purchase(4400)  # VISA: at bank-a for SLOW_MS, approved then
        on[0].send(doc)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in ledger(sw)), 10)
        t0 = time.monotonic()
        assert on[1].transact(e2e.reversal_of(doc))["39"] == "00"
        assert time.monotonic() - t0 < 3  # section 6.1: an 0410 within 3 s
        original = on[0].recv()
        assert original["39"] == "68", original  # never 00 once reversed
        assert wait_for(lambda: rows(tmp_path, "stan = ?", (doc["11"],))[0]["state"] == "reversed", 30), \
            rows(tmp_path, "stan = ?", (doc["11"],))
        [auth] = [e for e in ledger(sw) if e["event"] == "authorization"]
        assert auth["response_code"] == "00"
        assert any(e["event"] == "reversal" and e["original_stan"] == auth["stan"] and e["original_found"]
                   for e in ledger(sw))
        # Worker 1 queued it without ever seeing the card; worker 0 sealed it
        # into the journal when it learnt, and the reversal carries field 2.
        assert all(e["pan"] == auth["pan"] for e in ledger(sw) if e["event"] == "reversal")
        # Its retransmission now gets the 68 from the journal, on either worker.
        assert on[1].transact(doc)["39"] == "68"
    finally:
        sw.stop()


def test_an_uncertain_approval_queued_by_a_worker_is_reversed_by_the_sender_with_field_2(tmp_path):
    # bank-a approves, but after the switch gave up: worker 1 queues the
    # reversal, worker 0 (the sender) sends it, with the card from the journal.
    sw = fleet(tmp_path, slow_ms=1500, acquirer_timeout=0.8)
    try:
        on = clients_on(sw, {1})
        doc = e2e.purchase(4600)
        assert on[1].transact(doc)["39"] == "68"
        assert wait_for(lambda: rows(tmp_path, "stan = ?", (doc["11"],))[0]["state"] == "reversed", 30), \
            rows(tmp_path, "stan = ?", (doc["11"],))
        [auth] = [e for e in ledger(sw) if e["event"] == "authorization"]
        reversals = [e for e in ledger(sw) if e["event"] == "reversal"]
        assert auth["response_code"] == "00" and auth["pan"]
        assert reversals and all(e["pan"] == auth["pan"] for e in reversals), reversals
        assert any(e["original_found"] and e["delta"] == -4600 for e in reversals)
        # The sealed copy went with the reversal; no clear PAN in the journal files.
        conn = sqlite3.connect(tmp_path / "journal.sqlite", timeout=10)
        try:
            assert conn.execute("SELECT count(*) FROM reversal_card").fetchone() == (0,)
        finally:
            conn.close()
        for f in tmp_path.glob("journal.sqlite*"):
            assert doc["2"].encode() not in f.read_bytes(), f.name
    finally:
        sw.stop()


def test_refunds_at_once_on_two_workers_keep_to_the_merchants_daily_limit(tmp_path):
    # Section 6.1: two refunds that do not fit the day's limit together, each at
    # bank-a for SLOW_MS on its own worker: the journal lets exactly one through.
    sw = fleet(tmp_path, merchant="refund_daily_max = { 978 = 150000 }\n")
    try:
        on = clients_on(sw, {0, 1})
        docs = {0: e2e.purchase(100000, pcode="200000"), 1: e2e.purchase(60000, pcode="200000")}
        for index, doc in docs.items():
            on[index].send(doc)
        answers = {index: on[index].recv() for index in docs}
        assert sorted(a["39"] for a in answers.values()) == ["00", "58"], answers
        [passed] = [int(docs[i]["4"]) for i, a in answers.items() if a["39"] == "00"]
        auths = [e for e in ledger(sw) if e["event"] == "authorization"]
        assert len(auths) == 1, auths  # the refused one never reached the acquirer
        # What is left of the day fits, on either worker; one unit more does not.
        assert on[1].transact(e2e.purchase(150000 - passed, pcode="200000"))["39"] == "00"
        assert on[0].transact(e2e.purchase(1, pcode="200000"))["39"] == "58"
    finally:
        sw.stop()


def test_sighup_and_admin_reload_reach_every_worker(tmp_path):
    sw = fleet(tmp_path, slow_ms=0)
    try:
        sw.config.write_text(sw.config.read_text().replace("response_timeout = 30.0", "response_timeout = 29.0"))
        sw.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: all(f"payswitch[worker {i}]: configuration reloaded" in
                                    (tmp_path / "switch.log").read_text() for i in (0, 1)), 15)
        status, body = sw.http_post("/admin/reload")
        assert status == 200 and "signalled to 2 of 2 workers" in json.loads(body)["message"]
        assert wait_for(lambda: (tmp_path / "switch.log").read_text().count("configuration reloaded") >= 4, 15)
        _, metrics = sw.http_get("/metrics")
        assert b'payswitch_config_last_reload_successful{worker="supervisor"} 1.0' in metrics
        good = sw.config.read_text()
        sw.config.write_text(good + "\nnot toml [\n")
        status, body = sw.http_post("/admin/reload")
        assert status == 400 and b"invalid TOML" in body
        # a key file a restart would not find: refused by the supervisor, no worker signalled
        key = str(tmp_path / "keys" / "journal.key")
        sw.config.write_text(good.replace(f'"{key}"', f'"{key}.moved"'))
        status, body = sw.http_post("/admin/reload")
        assert status == 400 and b"`$.journal.hmac_key_file`" in body, body
        _, metrics = sw.http_get("/metrics")
        assert b'payswitch_config_last_reload_successful{worker="supervisor"} 0.0' in metrics
        assert b'payswitch_config_reloads_total{result="rejected",worker="supervisor"} 2.0' in metrics
    finally:
        sw.stop()


def test_the_switch_stops_when_the_journal_writer_dies(tmp_path):
    sw = fleet(tmp_path, slow_ms=0)
    try:
        [writer] = [c for c in psutil.Process(sw.proc.pid).children()
                    if "switch.journal.writer" in " ".join(c.cmdline())]
        pids = worker_pids(sw)
        writer.kill()
        assert sw.proc.wait(60) == 1
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                       for p in pids.values())
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert ("the journal writer process exited (code -9): stopping every worker; the service manager"
            ' starts the switch again (runbook: "The journal writer process died")') in log


def test_kill_9_a_worker_restarts_it_alone_and_its_purchase_in_flight_is_reversed(tmp_path):
    sw = fleet(tmp_path)
    try:
        on = clients_on(sw, {0, 1})
        pids = worker_pids(sw)
        doc = e2e.purchase(5100)  # VISA: in flight at bank-a for SLOW_MS
        on[1].send(doc)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in ledger(sw)), 10)
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises((ConnectionError, OSError)):
            on[1].recv()
        # Worker 0 kept serving meanwhile.
        assert on[0].transact(e2e.purchase(1000, e2e.MASTERCARD))["39"] == "00"
        # The supervisor restarted worker 1, alone.
        assert wait_for(lambda: health(sw)[1]["workers"][1]["alive"] and worker_pids(sw)[1] != pids[1], 30)
        _, doc_h = health(sw)
        assert doc_h["workers"][1]["restarts"] == 1 and worker_pids(sw)[0] == pids[0]
        # Worker 0, the reversal sender, reversed what worker 1 had in flight.
        [rec] = rows(tmp_path, "stan = ?", (doc["11"],))
        assert wait_for(lambda: rows(tmp_path, "stan = ?", (doc["11"],))[0]["state"] == "reversed", 30), \
            rows(tmp_path, "stan = ?", (doc["11"],))
        reversals = [e for e in ledger(sw) if e["event"] == "reversal"]
        assert [e["original_stan"] for e in reversals] == [
            e["stan"] for e in ledger(sw) if e["event"] == "authorization"]
        # The restarted worker serves too.
        fresh = clients_on(sw, {1})
        assert fresh[1].transact(e2e.purchase(1100, e2e.MASTERCARD))["39"] == "00"
        # Host STANs from both workers, before and after the restart, are never the same
        # (bank-b's ledger: worker 0's purchase and the restarted worker 1's).
        for name in ("bank-a", "bank-b"):
            stans = [e["stan"] for e in ledger(sw, name) if e["event"] == "authorization"]
            assert len(stans) == len(set(stans)), (name, stans)
        # Only worker 0 sends reversals.
        _, body = sw.http_get("/metrics")
        tries = [line for line in body.decode().splitlines()
                 if line.startswith("payswitch_reversals_total{") and 'trigger="queue"' in line]
        sent = [line for line in tries if not line.endswith(" 0.0")]  # (every worker exports them at 0)
        assert sent and all('worker="0"' in line for line in sent), tries
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert "worker 1 (pid" in log and "restarting it (runbook: \"A worker died\")" in log


def test_a_worker_that_keeps_failing_to_start_is_tried_again_until_it_starts(tmp_path):
    """A worker killed while a file it needs at start is gone (its journal key, moved away)
    dies at each start: the supervisor keeps trying, with its growing delay, and keeps watching
    (a failed restart seen by both its watch and the restart itself once ended the watch:
    no worker was restarted again, and a journal writer's death went unseen)."""
    sw = fleet(tmp_path, slow_ms=0)
    try:
        key, away = tmp_path / "keys" / "journal.key", tmp_path / "keys" / "journal.key.away"
        key.rename(away)
        os.kill(worker_pids(sw)[1], signal.SIGKILL)

        def restarts() -> int:
            _, doc = health(sw)
            return doc["workers"][1]["restarts"]

        assert wait_for(lambda: restarts() >= 4, 30), (tmp_path / "switch.log").read_text()
        away.rename(key)
        assert wait_for(lambda: health(sw)[1]["status"] == "alive", 30), (tmp_path / "switch.log").read_text()
        log = (tmp_path / "switch.log").read_text()
        assert "worker 1 restarted" in log and "Task exception was never retrieved" not in log
        assert sw.proc.poll() is None
    finally:
        sw.stop()
    assert sw.proc.returncode == 0


def test_a_worker_restarted_after_a_rejected_reload_runs_the_accepted_configuration(tmp_path):
    """Workers start, restart and reload on the text the supervisor last accepted: one killed
    after a rejected reload comes back on what the other runs, not on the file as it is now;
    the next accepted reload moves both."""
    sw = fleet(tmp_path, slow_ms=0)
    newcomer = "DEMO1500"  # a terminal that configuration A alone knows

    def answers() -> dict[int, str]:
        on = clients_on(sw, {0, 1})
        try:
            return {i: c.transact(e2e.purchase(1000, e2e.MASTERCARD, terminal=newcomer))["39"] for i, c in on.items()}
        finally:
            for c in on.values():
                c.close()

    def reloaded(times: int) -> bool:
        return (tmp_path / "switch.log").read_text().count("configuration reloaded") >= times

    try:
        original = sw.config.read_text()
        a = original.replace('terminals = ["DEMO0001-DEMO0999"]', 'terminals = ["DEMO0001-DEMO1999"]')
        assert a != original
        sw.config.write_text(a)
        assert sw.http_post("/admin/reload")[0] == 200
        assert wait_for(lambda: reloaded(2), 15)
        sw.config.write_text(original + "\nnot toml [\n")  # B: refused by the supervisor
        assert sw.http_post("/admin/reload")[0] == 400
        pids = worker_pids(sw)
        os.kill(pids[1], signal.SIGKILL)
        assert wait_for(lambda: "worker 1 restarted" in (tmp_path / "switch.log").read_text(), 30), \
            (tmp_path / "switch.log").read_text()
        assert answers() == {0: "00", 1: "00"}  # both on A
        sw.config.write_text(original)
        assert sw.http_post("/admin/reload")[0] == 200
        assert wait_for(lambda: reloaded(4), 15)
        assert answers() == {0: "03", 1: "03"}  # both on the original again
    finally:
        sw.stop()


def test_restarting_the_reversal_sender_never_reverses_another_workers_flight(tmp_path):
    sw = fleet(tmp_path)
    try:
        on = clients_on(sw, {0, 1})
        pids = worker_pids(sw)
        doc = e2e.purchase(5200)  # in flight on worker 1 while worker 0 dies and comes back
        on[1].send(doc)
        assert wait_for(lambda: any(e["event"] == "authorization" for e in ledger(sw)), 10)
        os.kill(pids[0], signal.SIGKILL)
        assert wait_for(lambda: health(sw)[1]["workers"][0]["alive"] and worker_pids(sw)[0] != pids[0], 30)
        resp = on[1].recv()
        assert resp["39"] == "00", resp
        time.sleep(1.5)  # two rounds of the new sender's orphan check
        [rec] = rows(tmp_path, "stan = ?", (doc["11"],))
        assert rec["state"] == "answered" and rec["response_code"] == "00", rec
        assert not [e for e in ledger(sw) if e["event"] == "reversal"]
    finally:
        sw.stop()


def test_sigterm_stops_every_worker_and_the_journal_writer(tmp_path):
    sw = fleet(tmp_path, slow_ms=0)
    pids = worker_pids(sw)
    children = psutil.Process(sw.proc.pid).children(recursive=True)
    sw.stop()
    assert sw.proc.returncode == 0
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
               for p in [*pids.values(), *(c.pid for c in children)])


def test_a_watch_that_fails_stops_the_switch_for_its_restart(caplog):
    """The supervisor's watch restarts workers and notices the journal writer's death: if a
    bug ends it, the switch stops (exit 1, as when the writer dies) instead of running on
    unwatched, and the log says so."""
    from switch.io.workers import Fleet

    async def scenario():
        fleet = Fleet(config_mod.default(), None, 2, "text")

        async def broken():
            raise AttributeError("a bug in the watch")

        task = asyncio.get_running_loop().create_task(broken())
        task.add_done_callback(fleet._watch_ended)
        await asyncio.wait_for(fleet._stop.wait(), 2)
        return fleet.fatal

    with caplog.at_level(logging.ERROR):
        fatal = asyncio.run(scenario())
    assert fatal == "the supervisor's watch of its workers failed (AttributeError)"
    [line] = [r for r in caplog.records if "watch of its workers failed" in r.getMessage()]
    assert line.exc_info is not None


def test_auto_is_one_worker_per_core():
    cfg = config_mod.loads('[server]\nworkers = "auto"\n')
    assert config_mod.worker_count(cfg.server.workers) == os.cpu_count()
    assert config_mod.worker_count(config_mod.default().server.workers) == 1


@pytest.mark.parametrize("text, message", [
    ("[server]\nworkers = 0\n", 'x.toml: must be 1 to 256 or "auto", got 0 - at `$.server.workers`'),
    ('[server]\nworkers = "all"\n',
     'x.toml: expected a number of worker processes or "auto", got \'all\' - at `$.server.workers`'),
    ("[server]\nworkers = 2.5\n", "x.toml: Expected `int | str`, got `float` - at `$.server.workers`"),
    ("[server]\nworkers = 2\n[[listeners]]\nport = 0\n",
     "x.toml: port 0 (any free port) cannot be shared by several workers: name a port - at `$.listeners[0].port`"),
])
def test_bad_workers_settings_name_the_key(text, message):
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads(text, "x.toml")
    assert str(e.value) == message


def test_serve_workers_flag_overrides_the_file_and_is_checked_against_it(tmp_path, capsys):
    from switch import cli

    conf = tmp_path / "switch.toml"
    conf.write_text(f'[journal]\nurl = "sqlite://{tmp_path}/j.sqlite"\n[[listeners]]\nport = 0\n')
    assert cli.main(["serve", "--config", str(conf), "--workers", "2"]) == 2
    assert capsys.readouterr().err == (
        f"payswitch: configuration error: {conf}: port 0 (any free port) cannot be shared by several workers: "
        "name a port (serve --workers 2) - at `$.listeners[0].port`\n")
    with pytest.raises(SystemExit):
        cli.main(["serve", "--workers", "0"])
    assert "must be 1 to 256 or 'auto', got 0" in capsys.readouterr().err


def test_a_listener_on_a_workers_http_port_is_refused():
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads("[server]\nworkers = 2\n[http]\nport = 9000\n[[listeners]]\nport = 9002\n", "x.toml")
    assert str(e.value) == ("x.toml: port 9002 is worker 1's HTTP port (http.port + 1 + worker index, 2 workers)"
                            " - at `$.listeners[0].port`")


def test_a_workers_http_port_in_use_stops_the_start_before_anything_starts(tmp_path):
    text, ports = e2e.card_config(tmp_path)
    (tmp_path / "switch.toml").write_text(text + "\n[server]\nworkers = 2\n")
    with socket.socket() as taken:
        # Worker 0's own admin HTTP port: tried with the listeners and http.port (switch.io.ports),
        # so no worker, simulator or journal is started to find it taken.
        taken.bind(("127.0.0.1", ports["http"] + 1))
        taken.listen()
        proc = subprocess.run([sys.executable, "-m", "switch.cli", "serve", "--config", str(tmp_path / "switch.toml")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc
    assert proc.stderr.splitlines()[-1] == (f"payswitch: cannot start: {tmp_path / 'switch.toml'}: 127.0.0.1:{ports['http'] + 1} is "
                           "already in use by another process (worker 0's own HTTP port, http.port + 1)"
                           " - at `$.http.port`")
    assert "payswitch[worker" not in proc.stdout + proc.stderr  # no worker was started


def test_a_killed_supervisors_socket_directory_is_swept_and_a_live_one_kept(tmp_path):
    from switch.io.workers import SOCKET_DIR_PREFIX, sweep_stale_socket_dirs

    dead = tmp_path / (SOCKET_DIR_PREFIX + "dead")
    live = tmp_path / (SOCKET_DIR_PREFIX + "live")
    fresh = tmp_path / (SOCKET_DIR_PREFIX + "fresh")
    other = tmp_path / "someone-else"
    for d in (dead, live, fresh, other):
        d.mkdir(mode=0o700)
    # The writer of "dead" is gone: its socket file stays, nobody listens.
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(str(dead / "journal.sock"))
    gone.close()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(live / "journal.sock"))
    listening.listen(1)
    try:
        assert sweep_stale_socket_dirs(str(tmp_path)) == 1
        assert not dead.exists()
        assert live.exists() and fresh.exists() and other.exists()
        # A directory whose socket never came, a minute later, goes too.
        old = time.time() - 120
        os.utime(fresh, (old, old))
        assert sweep_stale_socket_dirs(str(tmp_path)) == 1
        assert not fresh.exists() and live.exists()
    finally:
        listening.close()


def _refused_in(tmp_path: Path) -> str:
    """A journal holding one approved purchase whose reversal bank-a refused (64): its RRN."""
    from switch.journal import TxnRecord, open_journal

    journal = open_journal(f"sqlite://{tmp_path / 'journal.sqlite'}")
    try:
        rec, _ = journal.insert(TxnRecord(terminal_id=e2e.TERMINAL, merchant_id=e2e.MERCHANT, mti="0200",
                                          stan="000001", transmission_time="0101000000", processing_code="000000",
                                          amount=2500, currency="978", acquirer="bank-a",
                                          state="reversal_refused", response_code="00",
                                          reversal_code="64")).result(10)
    finally:
        journal.close()
    return rec.rrn


def _refused_gauge(sw: e2e.SwitchProcess) -> float | None:
    _, body = sw.http_get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith('payswitch_reversals_refused{worker="0"}'):
            return float(line.split()[-1])
    return None


def test_the_supervisor_closes_a_refused_reversal_through_worker_0(tmp_path):
    text, ports = e2e.card_config(tmp_path)
    rrn = _refused_in(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text + "\n[server]\nworkers = 2\n", ports).start(timeout=60)
    try:
        assert wait_for(lambda: _refused_gauge(sw) == 1, 15)
        status, body = sw.http_post(f"/admin/reversals/{rrn}/close")
        assert status == 200, body
        assert json.loads(body) == {"rrn": rrn, "state": "reversal_closed"}
        with sqlite3.connect(tmp_path / "journal.sqlite", timeout=10) as db:
            assert db.execute("SELECT state, reversal_code FROM txn WHERE rrn = ?", (rrn,)).fetchall() == [
                ("reversal_closed", "64")]
        assert _refused_gauge(sw) == 0
        status, body = sw.http_post(f"/admin/reversals/{rrn}/close")
        assert (status, json.loads(body)["error"]) == (409, "already closed")
        assert sw.http_post("/admin/reversals/999999999999/close")[0] == 404
    finally:
        sw.stop()
    log = (tmp_path / "switch.log").read_text()
    assert f"rrn {rrn}" in log and "an operator closed its refused reversal at bank-a" in log
