"""``serve --workers``: the supervisor accepts a reload only if every worker, running or
restarted later, would run it the same (switch.io.workers ``Fleet.reload``).

What the supervisor accepts is ``accepted.toml``, the text each worker reloads
on and a worker restarted later starts on: a file a running worker refuses, or
one whose restart-only keys a running worker leaves as they were, would start
that worker on a configuration the others do not run.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from switch import config as config_mod
from switch.io.workers import Fleet, worker_http_port
from tests import e2e
from tests.e2e import wait_for
from tests.test_e2e_workers import fleet, worker_pids



@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch):  # the workers import this checkout (as in test_e2e_workers)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(e2e.ROOT), os.environ.get("PYTHONPATH")) if p))


BANK_Z = """
[[acquirers]]
name = "bank-z"
type = "card"
endpoints = ["127.0.0.1:{port}"]
timeout = 2.0
acquirer_id = "10000000009"
"""


def supervisor(tmp_path: Path) -> tuple[Fleet, Path, str]:
    """A supervisor with no worker started, its accepted copy written as at its start."""
    text, _ = e2e.card_config(tmp_path)
    path = tmp_path / "switch.toml"
    path.write_text(text)
    sup = Fleet(config_mod.loads(text, str(path)), str(path), 2, "text", text=text)
    sup._dir = str(tmp_path / "private")
    os.mkdir(sup._dir, 0o700)
    sup._accept(text)
    return sup, path, text


def accepted(sup: Fleet) -> str:
    return Path(sup.accepted_path).read_text()


def test_the_supervisor_refuses_a_changed_set_of_acquirers_as_a_worker_does(tmp_path):
    sup, path, text = supervisor(tmp_path)
    path.write_text(text + BANK_Z.format(port=e2e.free_port()))
    # bank-z is a value of the file: named by its key path (check-config and the local log are for its values)
    assert sup.reload() == (False, f"{path}: acquirers changed (<value not shown> added at `$.acquirers[3]`);"
                                   " that needs a restart")
    assert accepted(sup) == text
    assert sup.reloads == {"ok": 0, "rejected": 1} and not sup.last_reload_ok


def test_a_reload_with_keys_that_need_a_restart_is_refused_whole_and_named(tmp_path):
    """A single process takes the terminal and answers "not applied, needs a restart" for the
    ports and the endpoint; the supervisor refuses it all, saying the same, so that a worker
    restarted later does not bind other ports or reach another host than the others do."""
    sup, path, text = supervisor(tmp_path)
    http_port = worker_http_port(sup.cfg, 1)
    changed = text.replace('terminals = ["DEMO0001-DEMO0999"]', 'terminals = ["DEMO0001-DEMO1999"]')
    for key in ("port", "http"):
        old = f"port = {sup.cfg.listeners[0].port if key == 'port' else sup.cfg.http.port}\n"
        assert old in changed
        changed = changed.replace(old, f"port = {e2e.free_port()}\n", 1)
    endpoint = sup.cfg.acquirers[1].endpoints[0]
    changed = changed.replace(f'"{endpoint}"', f'"127.0.0.1:{e2e.free_port()}"')
    assert changed.count("port = ") == text.count("port = ") and endpoint not in changed
    path.write_text(changed)
    ok, message = sup.reload()
    assert not ok
    assert message == (
        f"{path}: not applied, needs a restart: acquirers[1].endpoints[0], listeners[0].port, http.port"
        " (with --workers a reload that needs a restart is refused whole, so that a worker restarted later"
        " runs what the others run: restart the switch to take it, or put these keys back to reload the rest)")
    assert accepted(sup) == text
    assert sup.reloads == {"ok": 0, "rejected": 1}
    assert worker_http_port(sup.cfg, 1) == http_port  # the port it polls is still worker 1's
    # the same file without the restart-only keys: taken
    only_terminals = text.replace('terminals = ["DEMO0001-DEMO0999"]', 'terminals = ["DEMO0001-DEMO1999"]')
    path.write_text(only_terminals)
    ok, message = sup.reload()
    assert ok and message.endswith("; applied: merchants[0].terminals[0] (each worker logs what it applied)"), message
    assert accepted(sup) == only_terminals and sup.reloads == {"ok": 1, "rejected": 1}


def test_a_reloaded_drain_timeout_bounds_the_supervisors_stop(tmp_path):
    """stop_workers kills a worker still draining after drain_budget + 15 s: the budget of
    the configuration last accepted, not the one the switch started with."""
    sup, path, text = supervisor(tmp_path)
    assert sup.cfg.drain_budget == 30.0  # response_timeout: no drain_timeout at start
    longer = text.replace("response_timeout = 30.0\n", "response_timeout = 30.0\ndrain_timeout = 90.0\n")
    assert longer != text
    path.write_text(longer)
    ok, message = sup.reload()
    assert ok and sup.cfg.drain_budget == 90.0
    assert "applied: drain_timeout" in message, message
    assert accepted(sup) == longer


@pytest.mark.e2e
def test_a_worker_restarted_after_a_refused_acquirer_change_runs_the_others_acquirers(tmp_path):
    """The README's promise: a worker restarted after a rejected reload runs what the others
    run.  Accepted by the supervisor and refused by each worker, bank-z would be in the copy
    a worker restarted later starts on: links and routes no other worker has."""
    sw = fleet(tmp_path, slow_ms=0)
    try:
        sw.config.write_text(sw.config.read_text() + BANK_Z.format(port=e2e.free_port()))
        why = f"{sw.config}: acquirers changed (<value not shown> added at `$.acquirers[3]`); that needs a restart"
        status, body = sw.http_post("/admin/reload")
        assert (status, json.loads(body)) == (400, {"reloaded": False, "message": why}), body
        assert f"ERROR payswitch: reload rejected, keeping the running configuration: {why}" in sw.log_text()
        _, metrics = sw.http_get("/metrics")
        assert b'payswitch_config_reloads_total{result="rejected",worker="supervisor"} 1.0' in metrics
        os.kill(worker_pids(sw)[1], signal.SIGKILL)
        assert wait_for(lambda: "worker 1 restarted" in sw.log_text(), 30), sw.log_text()
        _, own = e2e.http_request(sw.ports["http"] + 2, "GET", "/metrics")  # worker 1's own
        assert b'acquirer="bank-a"' in own
        assert b"bank-z" not in own
    finally:
        sw.stop()


def test_a_refused_reload_quotes_no_value_of_the_file(tmp_path, caplog):
    """The answer to POST /admin/reload and the log line name the file, the key path and
    the problem, not the value: it may be a secret pasted where its reference belongs."""
    sup, path, text = supervisor(tmp_path)
    secret = "sk_live_PAYSWITCH_TOP_SECRET_42"
    assert "\n[journal]\n" in text
    path.write_text(text.replace("\n[journal]\n", f'\n[journal]\nwriter = "{secret}"\n'))
    why = f'{path}: must be "thread" or "process", got <value not shown> - at `$.journal.writer`'
    assert sup.reload() == (False, why)
    assert f"reload rejected, keeping the running configuration: {why}" in caplog.text
    assert secret not in caplog.text
