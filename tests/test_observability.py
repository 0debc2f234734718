"""Metrics, readiness and the status JSON, without processes or wall-clock waits:
a real SQLite journal, stub acquirers, the HTTP router called directly."""
from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switch.core.link_metrics import LinkMetrics
from switch.io import status
from switch.io.http import AdminHttp
from switch.journal import open_journal
from switch.metrics import Metrics

KEY = b"observability-test-key"
TOKEN = b"admin-token-0123456789abcdef"
AUTH = [(b"Authorization", b"Bearer " + TOKEN)]


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


# -- metrics -----------------------------------------------------------------------


def test_process_python_and_build_info_on_the_switch_registry():
    m = Metrics()
    names = {n for n, _ in samples(m)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"} <= names
    assert any(n.startswith("python_gc_") for n in names)
    build = [ls for (n, ls), v in samples(m).items() if n == "payswitch_build_info" and v == 1]
    assert len(build) == 1 and {"version", "python", "implementation"} == {k for k, _ in build[0]}
    # two switches in one test process: separate registries, no duplicate collectors
    assert {n for n, _ in samples(Metrics())} == names


def test_link_listener_maps_host_link_counters_by_acquirer():
    m = Metrics(process=False)
    listen = m.link_listener("bank-a")
    listen("requests", {"mti": "0200", "response_code": "00"}, 1)
    listen("requests", {"mti": "0200", "response_code": "00"}, 2)
    listen("timeouts", {"mti": "0200"}, 1)
    listen("reconnects", {"endpoint": "10.0.0.1:5000"}, 1)
    m.link_listener("bank-b")("sign_on_failures", {"endpoint": "10.0.0.2:5000"}, 4)
    assert value(m, "payswitch_hostlink_requests_total", acquirer="bank-a", mti="0200", response_code="00") == 3
    assert value(m, "payswitch_hostlink_timeouts_total", acquirer="bank-a", mti="0200") == 1
    assert value(m, "payswitch_hostlink_reconnects_total", acquirer="bank-a", endpoint="10.0.0.1:5000") == 1
    assert value(m, "payswitch_hostlink_sign_on_failures_total", acquirer="bank-b", endpoint="10.0.0.2:5000") == 4


def test_city_card_and_wallet_link_counters_are_made_on_first_use():
    m = Metrics(process=False)
    m.link_listener("centre", "citycard")("uploads", {"result": "confirmed"}, 2)
    wallet = m.link_listener("tradepay", "wallet")
    wallet("calls", {"call": "pay", "outcome": "ok"}, 1)
    wallet("calls", {"call": "query"}, 1)  # a missing label is left empty
    assert value(m, "payswitch_citycard_uploads_total", acquirer="centre", result="confirmed") == 2
    assert value(m, "payswitch_wallet_calls_total", acquirer="tradepay", call="pay", outcome="ok") == 1
    assert value(m, "payswitch_wallet_calls_total", acquirer="tradepay", call="query", outcome="") == 1


def test_attach_links_carries_over_what_the_adapter_already_counted():
    class Card:
        def __init__(self):
            self.metrics = LinkMetrics()

        def connection_states(self):
            return {"10.0.0.1:5000": {"ready": 2}}

    card = Card()
    card.metrics.inc("requests", mti="0800", response_code="00")  # the sign-on, before the HTTP server
    m = Metrics(process=False)
    m.attach_links({"bank-a": card, "wallet": SimpleNamespace()})
    m.attach_links({"bank-a": card})  # idempotent: not counted twice
    card.metrics.inc("requests", mti="0200", response_code="05")
    card.metrics.inc("reconnects", endpoint="10.0.0.1:5000")
    assert value(m, "payswitch_hostlink_requests_total", acquirer="bank-a", mti="0800", response_code="00") == 1
    assert value(m, "payswitch_hostlink_requests_total", acquirer="bank-a", mti="0200", response_code="05") == 1
    assert value(m, "payswitch_hostlink_reconnects_total", acquirer="bank-a", endpoint="10.0.0.1:5000") == 1
    # trouble counters exist at 0 before any trouble (rates over them are 0, not "no data")
    assert value(m, "payswitch_hostlink_timeouts_total", acquirer="bank-a", mti="0200") == 0
    assert value(m, "payswitch_hostlink_sign_on_failures_total", acquirer="bank-a", endpoint="10.0.0.1:5000") == 0


def test_link_counters_keyed_by_the_caller_reach_the_export_and_follow_a_new_listener():
    card = SimpleNamespace(metrics=LinkMetrics())
    m = Metrics(process=False)
    m.attach_links({"bank-a": card})
    key = ("requests", (("mti", "0200"), ("response_code", "00")))
    card.metrics.add(key)
    card.metrics.inc("requests", response_code="00", mti="0200")  # the same counter
    assert card.metrics.get("requests", mti="0200", response_code="00") == 2
    assert value(m, "payswitch_hostlink_requests_total", acquirer="bank-a", mti="0200", response_code="00") == 2
    seen = []
    card.metrics.listener = lambda name, labels, n: seen.append((name, labels, n))  # a plain function
    card.metrics.add(key, 3)
    assert seen == [("requests", {"mti": "0200", "response_code": "00"}, 3)]
    assert value(m, "payswitch_hostlink_requests_total", acquirer="bank-a", mti="0200", response_code="00") == 2


def test_attach_links_exports_each_link_under_its_own_family():
    centre = SimpleNamespace(metrics=LinkMetrics(link="citycard"))
    wallet = SimpleNamespace(metrics=LinkMetrics(link="wallet"))
    centre.metrics.inc("timeouts", op="debit")
    m = Metrics(process=False)
    m.attach_links({"centre": centre, "tradepay": wallet})
    wallet.metrics.inc("calls", call="pay", outcome="unverifiable")
    assert value(m, "payswitch_citycard_timeouts_total", acquirer="centre", op="debit") == 1
    assert value(m, "payswitch_wallet_calls_total", acquirer="tradepay", call="pay", outcome="unverifiable") == 1
    # Not card host-link series: those would tell an operator of a host link that does not exist.
    assert m.registry.get_sample_value("payswitch_hostlink_timeouts_total", {"acquirer": "centre", "mti": "0200"}) is None


def test_city_card_and_wallet_series_exist_at_0_before_any_traffic():
    """The alert rules take rate() of these: a series that appears with its first
    trouble would make the first rate no data, and the alert would never fire."""
    from adapters.citycard.adapter import CityCardAcquirer
    from adapters.wallet.micropay import MicroPayAcquirer
    from switch.metrics import OTHER_LINK_COUNTERS

    wallet = MicroPayAcquirer("wallet-b", "http://127.0.0.1:9", app_id="a", mch_id="m", secret=b"00" * 16)
    centre = CityCardAcquirer("centre", endpoints=(("127.0.0.1", 9301), ("127.0.0.2", 9301)))
    m = Metrics(process=False)
    m.attach_links({"wallet-b": wallet, "centre": centre})
    got = samples(m)
    for op in ("debit", "offline", "load", "balance", "reverse"):
        for name in ("timeouts", "lost_in_flight", "unavailable"):
            assert got[(f"payswitch_citycard_{name}_total", (("acquirer", "centre"), ("op", op)))] == 0
    for endpoint in ("127.0.0.1:9301", "127.0.0.2:9301"):
        assert got[("payswitch_citycard_protocol_errors_total", (("acquirer", "centre"), ("endpoint", endpoint)))] == 0
    for result in ("confirmed", "refused", "unconfirmed"):
        assert got[("payswitch_citycard_uploads_total", (("acquirer", "centre"), ("result", result)))] == 0
    assert got[("payswitch_citycard_late_answers_total", (("acquirer", "centre"),))] == 0
    for call in ("pay", "query", "cancel"):
        for outcome in ("answered", "unverifiable", "no_answer", "unsent"):
            key = ("payswitch_wallet_calls_total", (("acquirer", "wallet-b"), ("call", call), ("outcome", outcome)))
            assert got[key] == 0
    for disposition in ("paid", "open", "declined", "closed", "refunded", "reversed", "not-found", "unsent"):
        assert got[("payswitch_wallet_orders_total", (("acquirer", "wallet-b"), ("disposition", disposition)))] == 0
    assert got[("payswitch_wallet_held", (("acquirer", "wallet-b"),))] == 0
    assert ("payswitch_wallet_held", (("acquirer", "centre"),)) not in got
    # the families are declared with the labels the adapters count by
    families = {f.name: f for f in m.registry.collect()}
    for link, counters in OTHER_LINK_COUNTERS.items():
        for name, (labels, _doc) in counters.items():
            for s in families[f"payswitch_{link}_{name}"].samples:
                assert set(s.labels) - {"acquirer"} == set(labels), (name, s.labels)


def test_reversal_results_exist_at_0_before_any_reversal():
    """PayswitchReversalRefused takes increase() of result="refused": a series that
    appeared at 1 with the first refusal has no increase, and the alert stayed silent."""
    from switch.core import acquirer

    m = Metrics(process=False)
    got = samples(m)
    for result in (acquirer.REVERSED, acquirer.NOT_FOUND, acquirer.RETRY, acquirer.REFUSED):
        assert got[("payswitch_reversals_total", (("result", result), ("trigger", "queue")))] == 0
    m.reversal("queue", str(acquirer.Refused("12", "invalid transaction")))
    assert value(m, "payswitch_reversals_total", trigger="queue", result="refused") == 1


def test_reversal_backlog_age_is_uncapped_and_keeps_growing():
    m = Metrics(process=False)
    assert value(m, "payswitch_reversal_oldest_age_seconds") == 0
    created = time.time() - 7 * 86400  # a week-old reversal
    m.reversal_backlog(12000, created)
    assert value(m, "payswitch_reversal_queue") == 12000
    assert value(m, "payswitch_reversal_oldest_timestamp_seconds") == created
    assert value(m, "payswitch_reversal_oldest_age_seconds") >= 7 * 86400
    m.reversal_backlog(0, None)
    assert value(m, "payswitch_reversal_oldest_age_seconds") == 0
    assert value(m, "payswitch_reversal_oldest_timestamp_seconds") == 0


def test_circuit_state_and_in_flight():
    m = Metrics(process=False)
    m.circuit("bank-a", "10.0.0.1:5000", "open")
    m.circuit("bank-a", "10.0.0.2:5000", "half-open")
    assert value(m, "payswitch_acquirer_circuit_state", acquirer="bank-a", endpoint="10.0.0.1:5000") == 2
    assert value(m, "payswitch_acquirer_circuit_state", acquirer="bank-a", endpoint="10.0.0.2:5000") == 1
    with pytest.raises(ValueError, match="circuit state 'ajar'"):
        m.circuit("bank-a", "x", "ajar")
    child = m.in_flight("card")
    assert child is m.in_flight("card")
    child.inc()
    child.inc()
    child.dec()
    assert value(m, "payswitch_requests_in_flight", kind="card") == 1
    assert value(m, "payswitch_requests_in_flight", kind="wallet") == 0


def test_journal_batches_feed_commit_latency_and_batch_size(tmp_path):
    m = Metrics(process=False)
    journal = open_journal(f"sqlite://{tmp_path / 'j.sqlite'}", hmac_key=KEY)
    try:
        m.watch_journal(journal)
        for _ in range(3):
            assert journal.ping().result(10) is True
        assert value(m, "payswitch_journal_batch_size_count") == 3
        assert value(m, "payswitch_journal_batch_size_sum") == 3
        assert value(m, "payswitch_journal_commit_seconds_count") == 3
        assert value(m, "payswitch_journal_failed_commits_total") == 0

        def broken(size, seconds, ok):
            raise RuntimeError("metrics bug")

        journal.on_batch = broken  # a failing hook never fails the journal
        assert journal.ping().result(10) is True
    finally:
        journal.close()


# -- readiness ----------------------------------------------------------------------


class Acq:
    def __init__(self, up: bool):
        self.up = up

    def healthy(self) -> bool:
        return self.up


def fake_switch(tmp_path, acquirers: dict, routes: list[tuple[str, list[str]]]):
    return SimpleNamespace(
        journal=open_journal(f"sqlite://{tmp_path / 'j.sqlite'}", hmac_key=KEY),
        acquirers=acquirers,
        cfg=SimpleNamespace(routes=[SimpleNamespace(kind=k, acquirers=a) for k, a in routes]),
        metrics=Metrics(process=False),
        started=time.time(),
        draining=False,
    )


def get(http: AdminHttp, path: str, method: bytes = b"GET", headers=()) -> tuple[int, dict | bytes]:
    code, ctype, body = asyncio.run(http._route(method, path.encode(), headers))
    return code, (json.loads(body) if ctype == "application/json" else body)


ROUTES = [("card", ["bank-a", "bank-b"]), ("card", ["cup"]), ("wallet", ["tradepay"])]


def test_ready_when_journal_writable_and_every_routed_kind_has_an_acquirer(tmp_path):
    sw = fake_switch(tmp_path, {"bank-a": Acq(False), "bank-b": Acq(True), "cup": Acq(False),
                                "tradepay": Acq(True), "spare": Acq(False)}, ROUTES)
    try:
        code, body = get(AdminHttp(sw, None), "/readyz")
        assert code == 200, body
        assert body["ready"] and body["reasons"] == []
        assert body["kinds"]["card"] == {"acquirers": {"bank-a": False, "bank-b": True, "cup": False}, "ok": True}
        assert value(sw.metrics, "payswitch_acquirer_up", acquirer="bank-a") == 0
        assert value(sw.metrics, "payswitch_journal_writable") == 1
    finally:
        sw.journal.close()


def test_not_ready_names_the_kind_without_a_healthy_acquirer(tmp_path):
    sw = fake_switch(tmp_path, {"bank-a": Acq(True), "bank-b": Acq(True), "cup": Acq(True),
                                "tradepay": Acq(False)}, ROUTES)
    try:
        http = AdminHttp(sw, None)
        code, body = get(http, "/readyz")
        assert code == 503
        assert body["reasons"] == ["wallet: no healthy acquirer among tradepay"]
        assert get(http, "/healthz")[0] == 200  # alive all the same: do not restart it
    finally:
        sw.journal.close()


def test_not_ready_when_the_journal_cannot_be_written(tmp_path):
    sw = fake_switch(tmp_path, {"bank-a": Acq(True), "bank-b": Acq(True), "cup": Acq(True),
                                "tradepay": Acq(True)}, ROUTES)
    sw.journal.close()
    http = AdminHttp(sw, None)
    code, body = get(http, "/readyz")
    assert code == 503
    assert body["journal"]["ok"] is False
    assert body["reasons"] == ["journal: JournalClosed: journal is closed"]
    code, text = get(http, "/metrics")
    assert code == 200 and b"payswitch_journal_writable 0.0" in text
    code, doc = get(http, "/status.json")
    assert code == 200 and doc["ready"] is False and doc["journal"]["ok"] is False


def test_not_ready_while_draining(tmp_path):
    """SIGTERM closed the listeners: a load balancer must stop sending terminals here
    while the requests in flight finish, though journal and acquirers are fine."""
    sw = fake_switch(tmp_path, {"bank-a": Acq(True), "bank-b": Acq(True), "cup": Acq(True),
                                "tradepay": Acq(True)}, ROUTES)
    try:
        sw.draining = True
        http = AdminHttp(sw, None)
        code, body = get(http, "/readyz")
        assert code == 503
        assert body["reasons"] == ["draining: stopping, new terminal connections are refused"]
        assert get(http, "/healthz")[0] == 200  # alive: let it finish, do not kill it
    finally:
        sw.journal.close()


def test_routes_and_methods(tmp_path):
    sw = fake_switch(tmp_path, {}, [])
    try:
        http = AdminHttp(sw, lambda: (True, "reloaded x"), token=TOKEN)
        assert get(http, "/readyz")[0] == 200  # nothing routed, nothing missing
        assert get(http, "/healthz", b"POST")[0] == 405
        assert get(http, "/admin/reload", b"GET", AUTH)[0] == 405
        assert get(http, "/admin/reload", b"POST", AUTH) == (200, {"reloaded": True, "message": "reloaded x"})
        assert get(http, "/nope")[0] == 404
        code, page = get(http, "/status")
        assert code == 200 and page.startswith(b"<!doctype html>") and b"status.json" in page
    finally:
        sw.journal.close()


# -- the status JSON ------------------------------------------------------------------


def test_quantile_interpolates_like_prometheus():
    # 100 observations: 90 up to 0.1 s, 10 in (1, 2.5]
    buckets = [(0.1, 90), (1.0, 90), (2.5, 100), (float("inf"), 100)]
    assert status.quantile(0.5, buckets) == pytest.approx(0.1 * 50 / 90)
    assert status.quantile(0.99, buckets) == pytest.approx(1.0 + 1.5 * 9 / 10)
    assert status.quantile(0.99, [(0.1, 0), (float("inf"), 0)]) is None
    # beyond the last finite bucket: its bound, as histogram_quantile answers
    assert status.quantile(0.99, [(0.1, 10), (float("inf"), 20)]) == 0.1


def test_status_snapshot_counts_approvals_among_decisions_only():
    m = Metrics(process=False)
    for code, n in (("00", 8), ("05", 2)):
        for _ in range(n):
            m.answered("card", "financial", code, 0.02)
    m.answered("card", "reversal", "00", 0.01)  # answered, but not a decision
    m.answered("card", "network", "00", 0.01)
    doc = status.snapshot(m, {"ready": True, "reasons": [], "journal": {"ok": True}, "kinds": {"card": {}},
                              "acquirers": {"bank-a": True}})
    card = doc["kinds"]["card"]
    assert (card["answered"], card["decisions"], card["approved"]) == (12, 10, 8)
    assert card["approval_rate"] == 0.8
    assert 0.01 < card["p99_seconds"] <= 0.025
    assert set(doc["kinds"]) == {"card"}  # wallet and city card: no routes, no answers
    assert doc["acquirers"] == [{"name": "bank-a", "up": True, "connections": {}, "circuits": {}}]


def test_answers_and_acquirer_times_fall_in_the_buckets_prometheus_would_put_them_in():
    """Each observation counts in the first bucket whose bound is >= it (bisect_left, "le"),
    a bound itself included, past the last bound in +Inf; the sum takes every one."""
    import random
    from bisect import bisect_left

    metrics = Metrics()
    rng = random.Random(8583)
    bounds = metrics.latency.bounds
    seen = [0.0, *bounds, bounds[-1] * 2, *(rng.uniform(0, bounds[-1] * 1.5) for _ in range(500)), 7]
    want = [0] * (len(bounds) + 1)
    for seconds in seen:
        metrics.answered("card", "02", "00", seconds)
        metrics.acquirer_answered("bank-a", "answered", seconds)
        want[bisect_left(bounds, seconds)] += 1
    count = metrics.requests.labels("card", "02", "00")
    assert count.value == len(seen)
    for child in (metrics.latency.labels("card"), metrics.acquirer_latency.labels("bank-a", "answered")):
        assert child.counts == want and child.sum == pytest.approx(sum(seen))
