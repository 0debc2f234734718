"""The switch as an operator runs it: a journal disk that fails, a broken
configuration, several workers.

The journal's refusals are made the way tests/test_journal_full.py makes
them: the journal's method answers a JournalError ("database or disk is
full"), as the SQLite writer does on a full file system.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from switch.core import states
from switch.core.acquirer import Result
from switch.journal import JournalError
from tests import test_service as ts

FULL = "journal batch of 1 not written: OperationalError('database or disk is full')"
RETRY = 0.2  # reversal_retry of these scenarios


def refusing(sw, calls: list | None = None):
    """A journal method that refuses (disk full), counting its calls in ``calls``."""
    def refuse(*args, **kwargs):
        if calls is not None:
            calls.append(time.monotonic())
        fut = sw._loop.create_future()
        fut.set_exception(JournalError(FULL))
        return fut
    return refuse


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)


def run(scenario, *, acquirers=None):
    """tests.test_service.run with reversal_retry = RETRY."""
    acquirers = acquirers if acquirers is not None else ts.fakes()
    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV)
    cfg = ts.config_mod.loads(text.replace("reversal_retry = 0.05", f"reversal_retry = {RETRY}"), "sre.toml")

    async def main():
        sw = ts.Switch(cfg, acquirers=acquirers)
        try:
            await sw.start()
            return await scenario(sw)
        finally:
            try:
                await asyncio.wait_for(sw.close(), ts.WAIT)
            except asyncio.TimeoutError:
                sw.journal.close()
                raise AssertionError("Switch.close() did not return") from None

    return asyncio.run(main())


def lines(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# -- 1. a reversal whose outcome the journal refuses ---------------------------------


def test_a_reversal_whose_outcome_the_journal_refuses_is_held_and_retried_not_hot_looped(caplog, monkeypatch):
    """The acquirer acknowledged the reversal, the journal refuses to record it: the
    reversal is held (not sent again and again), its outcome written once the journal
    takes writes again; one log line for the burst, no traceback, no internal error."""
    bank_a = ts.FakeAcquirer("bank-a", answer=Result(response_code="68", uncertain=True))

    async def scenario(sw):
        real = sw.journal.end_reversal
        refused: list[float] = []
        monkeypatch.setattr(sw.journal, "end_reversal", refusing(sw, refused))
        with caplog.at_level(logging.INFO):
            assert (await ts.call(sw, ts.request(stan="000101")))[39] == "68"
            await asyncio.sleep(2.5 * RETRY)
            sent, tried = len(bank_a.reversed), len(refused)
            gauge = ts.sample(sw, "payswitch_reversal_queue")
            monkeypatch.setattr(sw.journal, "end_reversal", real)
            rec = await ts.wait_state(sw, "000101", states.REVERSED)
        return sent, tried, gauge, rec, sw.metrics.internal_errors._value.get()

    sent, tried, gauge, rec, internal = run(scenario, acquirers=ts.fakes(**{"bank-a": bank_a}))
    assert sent == 1  # acknowledged once: held, not sent again while its outcome waits for the journal
    assert 1 <= tried <= 4  # its outcome tried again every reversal_retry, not in a loop
    assert len(bank_a.reversed) == 1
    assert gauge == 1  # still waiting, as far as the journal knows
    assert rec.state == states.REVERSED
    said = lines(caplog, "could not be journaled")
    assert len(said) == 1 and said[0].levelno == logging.ERROR and not said[0].exc_info
    assert "disk is full" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    assert internal == 0


def test_an_unanswered_reversal_the_journal_cannot_count_waits_reversal_retry(caplog, monkeypatch):
    """The acquirer did not answer the reversal and the journal refuses its attempt count:
    the next try still waits reversal_retry (not at once, attempt after attempt)."""
    bank_a = ts.FakeAcquirer("bank-a", answer=Result(response_code="68", uncertain=True), reverse_failures=1000)

    async def scenario(sw):
        monkeypatch.setattr(sw.journal, "update_if", refusing(sw))
        assert (await ts.call(sw, ts.request(stan="000102")))[39] == "68"
        with caplog.at_level(logging.INFO):
            await asyncio.sleep(2.5 * RETRY)
        return len(bank_a.reversed)

    sent = run(scenario, acquirers=ts.fakes(**{"bank-a": bank_a}))
    assert 1 <= sent <= 4
    assert len(lines(caplog, "could not be journaled")) == 1
    assert not [r for r in caplog.records if r.exc_info]


def test_the_sweep_waits_reversal_retry_while_the_journal_fails(caplog, monkeypatch):
    async def scenario(sw):
        calls: list[float] = []
        monkeypatch.setattr(sw.journal, "reversal_backlog", refusing(sw, calls))
        with caplog.at_level(logging.INFO):
            for _ in range(5):  # reversals queued meanwhile wake it: it still waits
                sw._wake_sweeper()
                await asyncio.sleep(RETRY / 2)
            await asyncio.sleep(RETRY)
        return calls, sw.metrics.internal_errors._value.get()

    calls, internal = run(scenario)
    assert 1 <= len(calls) <= 6, len(calls)
    said = [r for r in caplog.records if "sweep" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and not said[0].exc_info, [r.getMessage() for r in said]
    assert "disk is full" in said[0].getMessage()
    assert internal == 0


# -- 2. a wallet call whose outcome the journal cannot record ------------------------


def test_a_wallet_payment_the_journal_cannot_record_is_a_journal_96(caplog):
    """The wallet adapter journals the order's state around each call; when the journal
    refuses, the call ends in a JournalError: the terminal gets 96, counted as the
    journal's, logged as a journal failure (no traceback, no internal error), and the
    order is reversed (the wallet may have taken the money)."""
    wallet = ts.FakeAcquirer("wallet-a", answer=JournalError(FULL))

    async def scenario(sw):
        with caplog.at_level(logging.INFO):
            resp = await ts.call(sw, ts.request(stan="000201", pan=None, f22="031", f48="BC018281234567890123456"))
        rec = await ts.wait_state(sw, "000201", states.REVERSED)
        return resp, rec, sw.metrics.internal_errors._value.get(), answered(sw)

    resp, rec, internal, counted = run(scenario, acquirers=ts.fakes(**{"wallet-a": wallet}))
    assert resp[39] == "96" and 38 not in resp
    assert rec.response_code == "96"
    assert counted == {("journal", "financial", "96"): 1.0}
    assert internal == 0
    assert not [r for r in caplog.records if r.exc_info]
    [said] = lines(caplog, "the journal could not record")
    assert said.levelno == logging.ERROR and "wallet-a" in said.getMessage() and "disk is full" in said.getMessage()
    assert wallet.reversed


def answered(sw) -> dict:
    return {(s.labels["kind"], s.labels["mclass"], s.labels["code"]): s.value
            for family in sw.metrics.registry.collect() if family.name == "payswitch_requests"
            for s in family.samples if s.name.endswith("_total") and s.value}


# -- 3. held reversals in payswitch_reversal_queue ------------------------------------


def test_reversals_held_in_memory_count_in_the_reversal_queue_gauge(monkeypatch):
    """An approval the journal cannot record is held in memory for its reversal: the
    gauge an operator alerts on counts it while the journal cannot."""
    gate = asyncio.Event()
    bank_a = ts.FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw):
        pending = asyncio.ensure_future(ts.call(sw, ts.request(stan="000301")))
        await asyncio.wait_for(bank_a.entered.wait(), ts.WAIT)
        for name in ("update", "update_if", "store", "reversal_backlog", "pending_reversals"):
            monkeypatch.setattr(sw.journal, name, refusing(sw))
        gate.set()
        resp = await asyncio.wait_for(pending, ts.WAIT)
        await asyncio.sleep(RETRY)
        return resp, ts.sample(sw, "payswitch_reversal_queue")

    resp, gauge = run(scenario, acquirers=ts.fakes(**{"bank-a": bank_a}))
    assert resp[39] == "96"
    assert gauge == 1


# -- 4. configuration errors ----------------------------------------------------------

BASE = """
response_timeout = 30.0

[journal]
url = "sqlite://:memory:"

[[listeners]]
host = "127.0.0.1"
port = 18583

[[merchants]]
id = "SHOP00000000001"
terminals = ["TERM0001"]

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
timeout = 10.0

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]
"""


def refused_config(text: str) -> str:
    with pytest.raises(ts.config_mod.ConfigError) as e:
        ts.config_mod.loads(text, "sw.toml")
    return str(e.value)


def with_key(section_marker: str, line: str) -> str:
    """BASE with ``line`` added after the first line holding ``section_marker``."""
    head, marker, tail = BASE.partition(section_marker)
    return f"{head}{marker}\n{line}{tail}"


def test_a_config_file_that_is_not_utf8_names_the_line_and_column(tmp_path):
    path = tmp_path / "sw.toml"
    path.write_bytes(b'response_timeout = 30.0\n# caf\xe9 du coin\n')
    with pytest.raises(ts.config_mod.ConfigError) as e:
        ts.config_mod.load(path)
    assert str(e.value) == (f"{path}: not UTF-8 text: byte 0xe9 at line 2, column 6 "
                            "(a TOML file is UTF-8: save it as UTF-8)")


@pytest.mark.parametrize("marker, line, path, bounds", [
    ("response_timeout = 30.0", "reversal_retry = 1e-9", "reversal_retry", "at least 0.01 and at most 3600.0"),
    ("response_timeout = 30.0", "reversal_retry = 1e12\nreversal_backoff_max = 1e12", "reversal_retry",
     "at least 0.01 and at most 3600.0"),
    ("response_timeout = 30.0", "card_retention = 1e12", "card_retention", "at least 0.0 and at most 2678400.0"),
    ("response_timeout = 30.0", "drain_timeout = 1e9", "drain_timeout", "at least 0.0 and at most 3600.0"),
    ("response_timeout = 30.0", "max_in_flight_per_terminal = 100000000", "max_in_flight_per_terminal",
     "at least 1 and at most 65535"),
    ("port = 18583", "max_in_flight = 1000000000", "listeners[0].max_in_flight", "at least 1 and at most 65535"),
    ("port = 18583", "idle_timeout = 1e12", "listeners[0].idle_timeout", "above 0.0 and at most 604800.0"),
    ("timeout = 10.0", "breaker_threshold = 0", "acquirers[0].breaker_threshold", "at least 1 and at most 1000"),
    ("timeout = 10.0", "breaker_threshold = 1000000000", "acquirers[0].breaker_threshold",
     "at least 1 and at most 1000"),
    ("timeout = 10.0", "echo_interval = 1e12", "acquirers[0].echo_interval", "above 0.0 and at most 86400.0"),
    ("timeout = 10.0", "breaker_cooldown = 1e9", "acquirers[0].breaker_cooldown", "above 0.0 and at most 3600.0"),
    ("timeout = 10.0", "connections = 1000000", "acquirers[0].connections", "at least 1 and at most 256"),
    ("timeout = 10.0", "cancel_margin = -1.0", "acquirers[0].cancel_margin", "at least 0.0 and at most 600.0"),
    ('acquirers = ["bank-a"]', "max_amount = 10000000000000", "routes[0].max_amount",
     "at least 0 and at most 999999999999"),
])
def test_every_number_has_a_lower_and_an_upper_bound(marker, line, path, bounds):
    msg = refused_config(with_key(marker, line))
    assert msg.startswith("sw.toml: must be " + bounds + ", got ") and msg.endswith(f" - at `$.{path}`"), msg


def test_vas_hsm_and_relay_numbers_have_bounds_too():
    hsm = BASE + '\n[security.module]\nkind = "hsm"\nendpoints = ["127.0.0.1:1500"]\nkey_table = "t.json"\ntimeout = 1e6\n'
    assert refused_config(hsm) == "sw.toml: must be above 0.0 and at most 60.0, got 1000000.0 - at `$.security.module.timeout`"
    relay = BASE + "\n[events]\nretry_max = 1e12\n"
    assert refused_config(relay).endswith("got 1000000000000.0 - at `$.events.retry_max`")
    vas = BASE + ('\n[[vas]]\nname = "loyalty"\nmerchants = ["SHOP00000000001"]\nurl = "http://127.0.0.1:9401"\n'
                  'secret_env = "X"\nconnections = 100000\n')
    assert refused_config(vas) == "sw.toml: must be at least 1 and at most 256, got 100000 - at `$.vas[0].connections`"


@pytest.mark.parametrize("text, path, why", [
    (BASE.replace('host = "127.0.0.1"', 'host = ""'), "listeners[0].host", "empty host: name an address"),
    (BASE.replace('host = "127.0.0.1"', 'host = "[::1]"'), "listeners[0].host",
     "write the IPv6 address without brackets: ::1 (not [::1])"),
    (BASE + '\n[http]\nhost = "[::1]"\n', "http.host", "write the IPv6 address without brackets: ::1 (not [::1])"),
    (BASE.replace('host = "127.0.0.1"', 'host = "10.0.0.256"'), "listeners[0].host", "invalid IP address: "),
    (BASE.replace("127.0.0.1:9101", "10.0.0.300:9101"), "acquirers[0].endpoints[0]", "invalid IP address: "),
    (BASE.replace("127.0.0.1:9101", "[::1]:9101"), "acquirers[0].endpoints[0]",
     "write the IPv6 address without brackets: ::1:9101 (not [::1]:9101)"),
    (BASE + '\n[security.module]\nkind = "hsm"\nendpoints = ["1500"]\nkey_table = "t.json"\n',
     "security.module.endpoints[0]", "expected 'host:port', got '1500'"),
])
def test_hosts_and_addresses_are_checked(text, path, why):
    msg = refused_config(text)
    assert msg.startswith("sw.toml: " + why) and msg.endswith(f" - at `$.{path}`"), msg


def test_ipv6_without_brackets_is_taken():
    cfg = ts.config_mod.loads(BASE.replace('host = "127.0.0.1"', 'host = "::1"').replace("127.0.0.1:9101", "::1:9101"),
                              "sw.toml")
    assert cfg.listeners[0].host == "::1" and cfg.acquirers[0].endpoints == ["::1:9101"]


@pytest.mark.parametrize("merchants, path, why", [
    ("[]", "routes[0].merchants", "an empty list matches no merchant"),
    ('["SHOP00000000009"]', "routes[0].merchants[0]", "unknown merchant 'SHOP00000000009'"),
    ('["SHOP00000000001", "SHOP00000000001"]', "routes[0].merchants[1]", "merchant 'SHOP00000000001' is named twice"),
    ('["SHOP000000000010000"]', "routes[0].merchants[0]", "expected a merchant ID (field 42: 1 to 15 characters"),
    ('[""]', "routes[0].merchants[0]", "expected a merchant ID"),
])
def test_a_routes_merchants_are_well_formed(merchants, path, why):
    msg = refused_config(with_key('acquirers = ["bank-a"]', f"merchants = {merchants}"))
    assert msg.startswith("sw.toml: " + why) and msg.endswith(f" - at `$.{path}`"), msg


def test_missing_key_files_of_the_security_module_name_their_key(tmp_path):
    from switch import preflight

    (tmp_path / "keys.json").write_text("{}")
    software = BASE + (f'\n[security.module]\nkind = "software"\nkey_store = "{tmp_path / "keys.json"}"\n'
                       f'master_key_file = "{tmp_path / "master.key"}"\n')
    hsm = BASE + f'\n[security.module]\nkind = "hsm"\nendpoints = ["127.0.0.1:1500"]\nkey_table = "{tmp_path / "t.json"}"\n'
    for text, key, what in ((software, "master_key_file", "master key file"), (hsm, "key_table", "HSM key table")):
        cfg = ts.config_mod.loads(text, "sw.toml")
        with pytest.raises(ts.config_mod.ConfigError) as e:
            preflight.check_files(cfg)
        assert str(e.value) == (f"sw.toml: cannot read {what} {tmp_path / ('master.key' if key == 'master_key_file' else 't.json')}: "
                                f"No such file or directory - at `$.security.module.{key}`")


# -- 5. a reload that names a missing key file ----------------------------------------

SIMULATED_WALLET = BASE + """
[[acquirers]]
name = "wallet-a"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9201"]
timeout = 10.0
secret_file = "{secret}"

[[routes]]
name = "wallet-a"
kind = "wallet"
prefixes = ["10"]
acquirers = ["wallet-a"]

[[simulators]]
kind = "wallet"
name = "wallet-a"
port = 9201
"""


def test_a_reload_naming_a_missing_simulator_key_file_is_refused(tmp_path):
    """At a start the sandbox simulator writes its key file before the acquirer is built;
    at a reload it has long been started: a file still missing is missing."""
    from switch import config_reload, preflight

    secret = tmp_path / "wallet-a.secret"
    cfg = ts.config_mod.loads(SIMULATED_WALLET.format(secret=secret), "sw.toml")
    preflight.check_files(cfg)  # a start: the simulator writes it
    with pytest.raises(ts.config_mod.ConfigError) as e:
        config_reload.check_files(cfg)
    assert str(e.value) == (f"sw.toml: cannot read secret {secret}: No such file or directory"
                            " - at `$.acquirers[1].secret_file`")


# -- 6. the supervisor's /readyz, /status and /status.json (serve --workers) ----------


class _Proc:
    def __init__(self, pid, code=None):
        self.pid, self.returncode = pid, code

    def poll(self):
        return self.returncode


def _fleet(states_: list[str]):
    """A supervisor's view of its workers without processes: each in the state named."""
    from types import SimpleNamespace

    from switch.io.workers import Worker

    cfg = ts.config_mod.loads(BASE.replace("port = 18583", "port = 18583") + "\n[http]\nport = 19580\n", "sw.toml")
    workers = []
    for i, state in enumerate(states_):
        w = Worker(i)
        if state != "restarting":
            w.proc = _Proc(4000 + i, 1 if state == "exited" else None)
        else:
            w.restarts = 1
        if state == "ready":
            w.ready.set()
        workers.append(w)
    return SimpleNamespace(cfg=cfg, workers=workers, writer=None, reloads={"ok": 0, "rejected": 0},
                           last_reload_ok=True)


def _worker_doc(answered: int, approved: int, queue: int, journal_ok: bool = True) -> dict:
    return {"time": 0.0, "ready": journal_ok, "reasons": [] if journal_ok else ["journal: disk is full"],
            "journal": {"ok": journal_ok, "detail": "" if journal_ok else "disk is full"},
            "kinds": {"card": {"answered": answered, "decisions": answered, "approved": approved,
                               "approval_rate": approved / answered, "p99_seconds": 0.01, "in_flight": 1,
                               "buckets": [[0.01, answered], ["+Inf", answered]]}},
            "acquirers": [{"name": "bank-a", "up": True, "connections": {"127.0.0.1:9101": {"up": 2}},
                           "circuits": {"127.0.0.1:9101": 0}}],
            "reversals": {"queue": queue, "oldest_age_seconds": 3.0 * queue, "refused": 0}}


def _serve_fleet(monkeypatch, fleet, answers: dict[tuple[int, str], tuple[int, dict]], path: bytes):
    import json

    from switch.io import fleet_http
    from switch.io.workers import worker_http_port

    async def http_get(host, port, target, timeout=fleet_http.SCRAPE_TIMEOUT):
        index = next(w.index for w in fleet.workers if worker_http_port(fleet.cfg, w.index) == port)
        found = answers.get((index, target))
        return None if found is None else (found[0], json.dumps(found[1]).encode())

    monkeypatch.setattr(fleet_http, "http_get", http_get)
    return asyncio.run(fleet_http.FleetHttp(fleet)._route(b"GET", path))


def test_the_supervisors_readyz_gives_each_workers_state(monkeypatch):
    import json

    fleet = _fleet(["ready", "starting", "restarting"])
    code, _, body = _serve_fleet(monkeypatch, fleet, {(0, "/readyz"): (200, {"ready": True})}, b"/readyz")
    doc = json.loads(body)
    assert code == 503 and doc["ready"] is False
    assert [(w["worker"], w["state"], w["ready"]) for w in doc["workers"]] == [
        (0, "ready", True), (1, "starting", False), (2, "restarting", False)]
    code, _, body = _serve_fleet(monkeypatch, fleet, {}, b"/healthz")
    assert [w["state"] for w in json.loads(body)["workers"]] == ["ready", "starting", "restarting"]


def test_the_supervisor_serves_the_status_page_for_the_whole_switch(monkeypatch):
    import json

    from switch.io import status

    fleet = _fleet(["ready", "ready", "exited"])
    answers = {(0, "/status.json"): (200, _worker_doc(10, 9, 2)), (1, "/status.json"): (200, _worker_doc(30, 21, 0))}
    code, ctype, body = _serve_fleet(monkeypatch, fleet, answers, b"/status")
    assert (code, body) == (200, status.PAGE) and ctype.startswith("text/html")
    code, ctype, body = _serve_fleet(monkeypatch, fleet, answers, b"/status.json")
    doc = json.loads(body)
    assert code == 200 and ctype == "application/json"
    card = doc["kinds"]["card"]
    assert (card["answered"], card["approved"], card["in_flight"]) == (40, 30, 2)
    assert card["approval_rate"] == 0.75 and card["buckets"] == [[0.01, 40], ["+Inf", 40]]
    assert doc["reversals"] == {"queue": 2, "oldest_age_seconds": 6.0, "refused": 0}
    assert doc["acquirers"] == [{"name": "bank-a", "up": True, "connections": {"127.0.0.1:9101": {"up": 4}},
                                 "circuits": {"127.0.0.1:9101": 0}}]
    assert doc["ready"] is False and "worker 2: exited" in doc["reasons"]
    assert [(w["worker"], w["state"]) for w in doc["workers"]] == [(0, "ready"), (1, "ready"), (2, "exited")]


# -- 7. value-added services' errors said once ----------------------------------------


def _plugin_reading_its_secret(s):
    """A third-party service type that reads its secret as the bundled one does."""
    from switch.io.vas import read_secret

    return read_secret("sw.toml", "service secret", None, "SRE_NO_SUCH_SECRET_ENV", "vas[0].secret_env")


def test_a_service_plugins_configuration_error_is_said_once(monkeypatch):
    from importlib.metadata import EntryPoint

    from switch.io import vas as vas_io

    monkeypatch.delenv("SRE_NO_SUCH_SECRET_ENV", raising=False)
    monkeypatch.setattr(vas_io, "vas_types", lambda: {
        "p": EntryPoint("p", "tests.test_sre_ops:_plugin_reading_its_secret", vas_io.GROUP)})
    cfg = ts.config_mod.loads(BASE + '\n[[vas]]\nname = "loyalty"\ntype = "p"\nmerchants = ["SHOP00000000001"]\n',
                              "sw.toml")
    with pytest.raises(ts.config_mod.ConfigError) as e:
        vas_io.Services(cfg)
    assert str(e.value) == ("sw.toml: environment variable SRE_NO_SUCH_SECRET_ENV is not set"
                            " - at `$.vas[0].secret_env`")


# -- 8. the configurations shipped under ops/ pass check-config -----------------------

SHIPPED = sorted((ts.config_mod.Path(__file__).resolve().parent.parent / "ops").rglob("*.toml"))


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_every_configuration_shipped_under_ops_passes_check_config(shipped, tmp_path, monkeypatch, capsys):
    """As where it is deployed: its absolute directories exist (here under tmp_path, as the
    image or the package creates them) and the environment variables it names are set (as
    docker-compose.yml or the unit sets them).  Nothing else is changed."""
    import re

    from switch import cli

    text = shipped.read_text()
    for name in re.findall(r'^\s*\w+_env\s*=\s*"([^"]+)"', text, flags=re.M):
        monkeypatch.setenv(name, "5e" * 32)
    for path in set(re.findall(r'"(?:sqlite://)?(/[^"]+)"', text)):
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        text = text.replace(f'"{path}"', f'"{tmp_path}{path}"').replace(f'"sqlite://{path}"', f'"sqlite://{tmp_path}{path}"')
    deployed = tmp_path / shipped.name
    deployed.write_text(text)
    code = cli.main(["check-config", str(deployed)])
    assert code == 0, capsys.readouterr().err
    assert SHIPPED, "no configuration found under ops/"


def test_a_running_supervisor_serves_readyz_states_and_the_status_page(tmp_path):
    """serve --workers 2 for real: the supervisor's own port answers /readyz with each
    worker's state, and /status.json for the whole switch, a purchase counted once."""
    import json

    from tests import e2e
    from tests.test_e2e_workers import fleet

    sw = fleet(tmp_path, slow_ms=0)
    try:
        client = e2e.Client(sw.ports["term"])
        assert client.transact(e2e.purchase(1000, e2e.MASTERCARD))["39"] == "00"
        client.close()
        code, body = sw.http_get("/readyz")
        assert code == 200 and [w["state"] for w in json.loads(body)["workers"]] == ["ready", "ready"]
        code, body = sw.http_get("/status")
        assert code == 200 and body.startswith(b"<!doctype html>")
        code, body = sw.http_get("/status.json")
        doc = json.loads(body)
        assert code == 200 and doc["ready"] is True and doc["reasons"] == []
        assert sum(k["answered"] for k in doc["kinds"].values()) == 1
        assert [w["state"] for w in doc["workers"]] == ["ready", "ready"]
    finally:
        sw.stop()
