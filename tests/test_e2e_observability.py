"""End to end, what an SRE gets: health and readiness, /metrics with process and
link counters, a real Prometheus (Debian binary) scraping the switch with the
alert rules loaded and every dashboard query answered, the status page in
headless Chromium matching /metrics."""
from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import e2e
from tests.debian import need
from tests.e2e import MASTERCARD, UNIONPAY, VISA, Client, purchase

pytestmark = pytest.mark.e2e

OPS = e2e.ROOT / "ops"
def link_extra(tmp: Path) -> str:
    """A city-card centre and a wallet beside the card acquirers, with their simulators
    and no route: their link counters are exported from the start, before any traffic."""
    centre, wallet = e2e.free_port(), e2e.free_port()
    return f"""
[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:{centre}"]
timeout = 2.0
connections = 1

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:{wallet}"]
timeout = 5.0
secret_file = "{tmp / 'keys-micropay' / 'micropay_secret'}"

[[simulators]]
kind = "citycard"
name = "citycard"
port = {centre}

[[simulators]]
kind = "wallet"
name = "wallet-b"
port = {wallet}
args = ["--style", "micropay", "--key-dir", "{tmp / 'keys-micropay'}"]
"""


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obs")
    text, ports = e2e.card_config(tmp, acquirer_timeout=1.5, extra=link_extra(tmp))
    # bank-a answers ISO 8583 codes outside section 5 for amounts ending in 54 and the
    # like (payswitch_hostlink_host_codes_total); drive() sends it only 00 and 05 amounts.
    args = f'args = ["--ledger", "{tmp / "bank-a.ledger"}"'
    assert args in text
    text = text.replace(args, args + ', "--bank-codes"')
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def drive(port: int, n: int) -> dict[str, int]:
    """n purchases over the three card routes, one in five declined; codes seen."""
    seen: dict[str, int] = {}
    c = Client(port)
    try:
        for i in range(n):
            pan = (VISA, MASTERCARD, UNIONPAY)[i % 3]
            amount = 1005 if i % 5 == 4 else 1000 + (i % 3)
            code = c.transact(purchase(amount, pan))["39"]
            seen[code] = seen.get(code, 0) + 1
    finally:
        c.close()
    return seen


def scrape(switch) -> dict[tuple[str, tuple], float]:
    status, body = switch.http_get("/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_health_readiness_and_metrics(switch):
    seen = drive(switch.ports["term"], 30)
    assert seen == {"00": 24, "05": 6}
    status, body = switch.http_get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, body = switch.http_get("/readyz")
    doc = json.loads(body)
    assert status == 200, doc
    assert doc["ready"] and doc["journal"]["ok"] and doc["kinds"]["card"]["ok"]
    assert set(doc["acquirers"]) == {"bank-a", "bank-b", "cup", "citycard", "wallet-b"}

    m = scrape(switch)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert any(n == name for n, _ in m), name
    assert any(n.startswith("python_gc_") for n, _ in m)
    assert total(m, "payswitch_build_info") == 1
    # the host link's own counters, exported: ten purchases per acquirer
    for acquirer in ("bank-a", "bank-b", "cup"):
        assert total(m, "payswitch_hostlink_requests_total", acquirer=acquirer, mti="0200") == 10
        assert total(m, "payswitch_acquirer_up", acquirer=acquirer) == 1
        assert total(m, "payswitch_acquirer_connections", acquirer=acquirer, state="ready") >= 1
    assert total(m, "payswitch_hostlink_requests_total", mti="0200", response_code="05") == 6
    assert total(m, "payswitch_journal_commit_seconds_count") > 0
    assert total(m, "payswitch_journal_batch_size_sum") >= total(m, "payswitch_journal_batch_size_count") > 0
    assert total(m, "payswitch_journal_writable") == 1
    assert total(m, "payswitch_requests_in_flight", kind="card") == 0
    assert total(m, "payswitch_reversal_oldest_age_seconds") == 0
    # How close the worker is to its core: the loop's lag and the CPU of its parts.
    deadline = time.monotonic() + 5
    while total(m, "payswitch_event_loop_lag_seconds_count") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # sampled every half second from the start
        m = scrape(switch)
    assert total(m, "payswitch_event_loop_lag_seconds_count") > 0
    assert total(m, "payswitch_cpu_seconds_total", part="event_loop") > 0
    assert ("payswitch_cpu_seconds_total", (("part", "journal_writer"),)) in m
    # the city-card and wallet links' trouble counters and held payments, there at 0 with no traffic
    assert m[("payswitch_citycard_unavailable_total", (("acquirer", "citycard"), ("op", "debit")))] == 0
    assert m[("payswitch_citycard_uploads_total", (("acquirer", "citycard"), ("result", "unconfirmed")))] == 0
    assert m[("payswitch_wallet_calls_total", (("acquirer", "wallet-b"), ("call", "pay"), ("outcome", "no_answer")))] == 0
    assert m[("payswitch_wallet_orders_total", (("acquirer", "wallet-b"), ("disposition", "open")))] == 0
    assert m[("payswitch_wallet_held", (("acquirer", "wallet-b"),))] == 0


# -- Prometheus and the dashboard ----------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads((OPS / "grafana-dashboard.json").read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def prom_query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(switch, tmp_path_factory):
    binary = need("prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    port = e2e.free_port()
    (tmp / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{OPS / 'prometheus-rules.yml'}"]
scrape_configs:
  - job_name: payswitch
    static_configs: [{{targets: ["127.0.0.1:{switch.ports['http']}"]}}]
"""
    )
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if prom_query(port, 'up{job="payswitch"} == 1'):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("Prometheus did not scrape the switch:\n" + (tmp / "prometheus.log").read_text()[-3000:])
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


WORKERS_ONLY = ("payswitch_worker_up", "payswitch_worker_restarts_total")
# The event relay's panels: its own process and /metrics, scraped as job payswitch-relay
# (tests/test_relay_faults.py reads those series from it); this Prometheus scrapes the switch.
RELAY_ONLY = ('job="payswitch-relay"',)


def test_every_dashboard_query_returns_data(switch, prometheus):
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            drive(switch.ports["term"], 15)
            c = Client(switch.ports["term"])
            try:
                assert c.transact(purchase(1054, VISA))["39"] == "05"  # the host's 54 (expired card)
            finally:
                c.close()

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        queries = dashboard_queries()
        assert len(queries) >= 20
        # $__rate_interval is Grafana's; four scrape intervals here
        # The worker panels' series come from the supervisor of `serve --workers` only
        # (tests/test_e2e_workers.py reads them from its /metrics); this switch is one process.
        pending = {(title, expr.replace("$__rate_interval", "5s")) for title, expr in queries
                   if not any(name in expr for name in WORKERS_ONLY + RELAY_ONLY)}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            pending = {(title, q) for title, q in pending if not prom_query(prometheus, q)}
            if pending:
                time.sleep(0.5)
        assert not pending, f"dashboard queries without data: {sorted(pending)}"
    finally:
        stop.set()
        t.join(30)
    # the alert rules load into a real Prometheus, and none fires on a healthy switch
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) >= 15 and all(rule["health"] == "ok" for rule in rules), rules
    assert prom_query(prometheus, 'ALERTS{alertstate="firing"}') == []


def test_status_p99_is_prometheus_histogram_quantile(switch, prometheus):
    """/status.json's p99 equals histogram_quantile over the same buckets."""
    drive(switch.ports["term"], 6)
    m = scrape(switch)
    want = total(m, "payswitch_requests_total", kind="card")
    deadline = time.monotonic() + 10
    while True:
        got = prom_query(prometheus, 'sum(payswitch_requests_total{kind="card"})')
        if got and float(got[0]["value"][1]) == want:
            break
        assert time.monotonic() < deadline, "Prometheus did not catch up with the switch"
        time.sleep(0.3)
    status, body = switch.http_get("/status.json")
    ours = json.loads(body)["kinds"]["card"]["p99_seconds"]
    theirs = float(prom_query(prometheus, 'histogram_quantile(0.99, payswitch_request_seconds_bucket{kind="card"})')[0]["value"][1])
    assert math.isclose(ours, theirs, rel_tol=1e-9), (ours, theirs)


# -- the status page in headless Chromium ---------------------------------------------


class _Ids(HTMLParser):
    """Text of every element with an id (the page's numbers carry ids)."""

    def __init__(self):
        super().__init__()
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        self._open.append(ident)
        if ident:
            self.text[ident] = ""

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for ident in self._open:
            if ident:
                self.text[ident] += data


def expected_p99(m, kind: str) -> float:
    buckets = sorted(
        (float(dict(ls)["le"]), v)
        for (n, ls), v in m.items()
        if n == "payswitch_request_seconds_bucket" and dict(ls).get("kind") == kind
    )
    total_count = buckets[-1][1]
    rank = 0.99 * total_count
    lo_le, lo_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            return le if c == lo_c else lo_le + (le - lo_le) * (rank - lo_c) / (c - lo_c)
        lo_le, lo_c = le, c
    raise AssertionError("no bucket holds the rank")


def chromium(args: list[str], timeout: float = 45) -> subprocess.CompletedProcess:
    binary = need("chromium")
    base = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", "--window-size=1280,1300"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def test_status_page_in_chromium_matches_metrics(switch, tmp_path):
    drive(switch.ports["term"], 9)
    before = scrape(switch)
    url = f"http://127.0.0.1:{switch.ports['http']}/status?refresh=1"
    # virtual time: the page polls /status.json a few times and draws its charts
    dom = chromium(["--virtual-time-budget=4000", "--dump-dom", url])
    assert dom.returncode == 0, dom.stderr[-2000:]
    after = scrape(switch)
    assert total(before, "payswitch_requests_total") == total(after, "payswitch_requests_total")

    ids = _Ids()
    ids.feed(dom.stdout)
    page = ids.text
    assert page["ready"] == "ready"
    assert "kind-wallet" not in page and "kind-citycard" not in page  # no routes, no traffic
    assert int(page.get("card-answered", "-1")) == total(after, "payswitch_requests_total", kind="card")
    approved = total(after, "payswitch_requests_total", kind="card", code="00")
    decisions = sum(
        v for (n, ls), v in after.items()
        if n == "payswitch_requests_total" and dict(ls)["kind"] == "card" and dict(ls)["mclass"] in ("auth", "financial")
    )
    assert page["card-approval"] == f"{100 * approved / decisions:.1f}%"
    assert page["card-p99"] == f"{1000 * expected_p99(after, 'card'):.1f} ms"
    for acquirer in ("bank-a", "bank-b", "cup"):
        assert page[f"acq-{acquirer}-state"] == "up"
        ready = int(total(after, "payswitch_acquirer_connections", acquirer=acquirer, state="ready"))
        assert re.fullmatch(rf"127\.0\.0\.1:\d+: {ready} ready", page[f"acq-{acquirer}-connections"])
    assert page["rev-queue"] == str(int(total(after, "payswitch_reversal_queue")))
    assert page["journal"] == "writable"
    # it polled /status.json more than once and drew the throughput line from the differences
    assert int(re.search(r'data-polls="(\d+)"', dom.stdout).group(1)) >= 3
    assert dom.stdout.count("<path ") >= 1
    # no external assets: everything the page needs is in it
    status, html = switch.http_get("/status")
    assert status == 200 and not re.search(rb"""(src|href)=["']?(https?:)?//""", html)

    # a screenshot with traffic flowing, so that the charts move
    stop = threading.Event()
    t = threading.Thread(target=lambda: [drive(switch.ports["term"], 5) for _ in iter(stop.is_set, True)], daemon=True)
    t.start()
    shot = tmp_path / "status.png"
    try:
        res = chromium(["--virtual-time-budget=8000", f"--screenshot={shot}", url])
    finally:
        stop.set()
        t.join(30)
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    print(f"status page screenshot: {shot}")
