"""What ships in ops/ and the packaging: alert rules (promtool), runbook links,
the dashboard's queries, the Prometheus and Grafana files of docker-compose,
the Dockerfile and the systemd unit."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from switch import config
from switch.metrics import Metrics
from tests.debian import need
from tests.e2e import ROOT

OPS = ROOT / "ops"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool"), *args], cwd=OPS, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules():
    res = promtool("check", "rules", "prometheus-rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr


RULE_TESTS = ("prometheus-rules.test.yml", "prometheus-rules-relay.test.yml")  # the switch's, the relay's


def test_promtool_rule_unit_tests():
    res = promtool("test", "rules", *RULE_TESTS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_compose_prometheus_config():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def alerts() -> dict[str, str]:
    """alert name -> its block of prometheus-rules.yml."""
    text = (OPS / "prometheus-rules.yml").read_text()
    parts = re.split(r"^\s*- alert: (\w+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def runbook_anchors() -> set[str]:
    """GitHub's heading anchors of ops/runbook.md."""
    anchors = set()
    for line in (OPS / "runbook.md").read_text().splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_every_alert_links_to_a_runbook_section_that_exists():
    found = alerts()
    assert len(found) == 30
    anchors = runbook_anchors()
    for name, block in found.items():
        m = re.search(r'runbook_url: "ops/runbook\.md#([\w-]+)"', block)
        assert m, f"{name} has no runbook_url"
        assert m.group(1) in anchors, f"{name}: runbook.md has no section #{m.group(1)}"


def test_every_alert_has_a_unit_test_that_fires_it():
    tests = "".join((OPS / name).read_text() for name in RULE_TESTS)
    for name in alerts():
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tests), f"no test fires {name}"


def test_the_outages_of_the_issue_are_covered():
    found = alerts()
    exprs = {name: block.split("labels:")[0] for name, block in found.items()}
    assert 'up{job="payswitch"} == 0' in exprs["PayswitchDown"]
    assert 'absent(up{job="payswitch"})' in exprs["PayswitchAbsent"]
    assert "payswitch_journal_writable == 0" in exprs["PayswitchJournalNotWritable"]
    # a journal's 96s (kind="journal") page on their own, apart from the switch's other 96s
    assert 'payswitch_requests_total{kind="journal"}' in exprs["PayswitchJournalRefusing"]
    assert 'code="96",kind!="journal"' in exprs["PayswitchMalfunctionAnswers"]
    assert "payswitch_config_last_reload_successful == 0" in exprs["PayswitchConfigReloadRejected"]
    # spec section 8: requests answered A0, by reason (a forger, or a terminal out of step)
    assert "increase(payswitch_terminal_mac_failures_total[10m])" in exprs["PayswitchTerminalMacFailures"]
    assert "payswitch_worker_restarts_total" in exprs["PayswitchWorkerFailing"]
    assert "payswitch_worker_up" in exprs["PayswitchWorkerFailing"]
    assert "payswitch_reversal_oldest_age_seconds" in exprs["PayswitchReversalBacklogStuck"]
    assert 'payswitch_reversals_total{trigger="queue",result="refused"}' in exprs["PayswitchReversalRefused"]
    assert 'kind=~"card|citycard",code="68"' in exprs["PayswitchAcquirerTimeouts"]
    assert 'kind="wallet",code="68"' in exprs["PayswitchWalletUnconfirmed"]
    # the wallets' and the city-card centre's own link counters
    assert 'payswitch_wallet_calls_total{outcome=~"no_answer|unsent"}' in exprs["PayswitchWalletNoAnswer"]
    assert 'payswitch_wallet_calls_total{outcome="unverifiable"}' in exprs["PayswitchWalletUnverifiable"]
    assert "avg_over_time(payswitch_wallet_held[10m])" in exprs["PayswitchWalletHeldTooLong"]
    assert "payswitch_wallet_orders_total" in exprs["PayswitchWalletHeldTooLong"]
    assert "payswitch_citycard_unavailable_total" in exprs["PayswitchCityCardUnreachable"]
    assert "payswitch_citycard_lost_in_flight_total" in exprs["PayswitchCityCardUnreachable"]
    assert 'payswitch_citycard_uploads_total{result="unconfirmed"}' in exprs["PayswitchCityCardUploadsUnconfirmed"]
    assert "payswitch_hostlink_protocol_errors_total" in exprs["PayswitchLinkProtocolErrors"]
    assert "payswitch_citycard_protocol_errors_total" in exprs["PayswitchLinkProtocolErrors"]
    assert "increase(payswitch_events_undeliverable_total" in exprs["PayswitchEventsUndeliverable"]
    assert "payswitch_events_partner_refusing" in exprs["PayswitchEventsPartnerRefusing"]


def test_link_alert_labels_are_those_the_adapters_count_by():
    """A label value in a rule that the adapter never counts would match nothing, silently."""
    from adapters.citycard.adapter import _OPS
    from adapters.wallet.acquirer import _CALL_OUTCOMES

    rules = (OPS / "prometheus-rules.yml").read_text()
    for outcome in re.findall(r'payswitch_wallet_calls_total\{outcome=~?"([^"]+)"\}', rules):
        assert set(outcome.split("|")) <= set(_CALL_OUTCOMES), outcome
    for op in re.findall(r'payswitch_citycard_\w+_total\{op!?=~?"([^"]+)"\}', rules):
        assert set(op.split("|")) <= set(_OPS), op
    for result in re.findall(r'payswitch_citycard_uploads_total\{result="([^"]+)"\}', rules):
        assert result in ("confirmed", "refused", "unconfirmed"), result


# -- metric names in rules and dashboard exist ----------------------------------------


def exported_names() -> set[str]:
    """Every series name the switch's registry can export (label children or not),
    what the supervisor of ``serve --workers`` adds of its own, and the event relay's."""
    from switch.events import RelayMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for family in [*Metrics().registry.collect(), *RelayMetrics().registry.collect()]:
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names | supervisor_names()


def supervisor_names() -> set[str]:
    """The series of the supervisor's own /metrics, its workers not answering."""
    import asyncio
    import types

    from switch.io.fleet_http import FleetHttp

    worker = types.SimpleNamespace(index=0, alive=False, restarts=0, ready=None)
    fleet = types.SimpleNamespace(workers=[worker], writer=None, reloads={"ok": 0, "rejected": 0},
                                  last_reload_ok=True)
    text = asyncio.run(FleetHttp(fleet).metrics()).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\b((?:payswitch|process|python)_[a-z_]+)\b", text))


def test_rules_and_dashboard_name_only_exported_metrics():
    declared = exported_names()
    rules = referenced((OPS / "prometheus-rules.yml").read_text()) - {"payswitch_"}
    dashboard = referenced((OPS / "grafana-dashboard.json").read_text())
    unknown = {n for n in rules | dashboard if n not in declared}
    assert not unknown, f"not exported by the switch: {sorted(unknown)}"


def test_dashboard_is_grafana_json_with_every_section():
    doc = json.loads((OPS / "grafana-dashboard.json").read_text())
    assert doc["uid"] == "payswitch-overview"
    titles = [p["title"] for p in doc["panels"]]
    assert len(titles) == len(set(titles))
    rows = {p["title"] for p in doc["panels"] if p["type"] == "row"}
    assert rows == {"Overview", "Latency", "Response codes", "Acquirer links", "Reversals and journal", "Process",
                    "Event relay"}
    for p in doc["panels"]:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"


# -- packaging ----------------------------------------------------------------------


def test_compose_mounts_files_that_exist():
    text = (ROOT / "docker-compose.yml").read_text()
    for service in ("payswitch", "prometheus", "grafana"):
        assert re.search(rf"^  {service}:$", text, flags=re.M), service
    mounts = re.findall(r"^\s+- \./([^:]+):", text, flags=re.M)
    assert "ops/prometheus-rules.yml" in mounts and "ops/grafana-dashboard.json" in mounts
    for path in mounts:
        assert (ROOT / path).exists(), path
    provisioning = OPS / "grafana" / "provisioning"
    assert "url: http://prometheus:9090" in (provisioning / "datasources" / "prometheus.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in (provisioning / "dashboards" / "payswitch.yml").read_text()
    assert "/var/lib/grafana/dashboards/payswitch.json" in text
    assert '"payswitch:9583"' in (OPS / "prometheus.yml").read_text()


def test_the_relay_is_scraped_as_job_payswitch_relay_wherever_compose_runs_one(monkeypatch):
    """The relay's alerts and their promtool tests name job payswitch-relay.  docker-compose runs no relay
    while its switch configures no NATS and no webhook partner (a relay would have nothing to deliver, and
    its scrape job a target forever down): prometheus.yml says so, and how to add the job."""
    compose = "\n".join(line.split("#")[0] for line in (ROOT / "docker-compose.yml").read_text().splitlines())
    prometheus = (OPS / "prometheus.yml").read_text()
    jobs = re.findall(r"^\s*- job_name: (\S+)$", prometheus, flags=re.M)
    assert 'job="payswitch-relay"' in (OPS / "prometheus-rules-relay.test.yml").read_text()
    if re.search(r"\brelay\b", compose):
        assert "payswitch-relay" in jobs
    else:
        monkeypatch.setenv("PAYSWITCH_JOURNAL_KEY", "5e" * 32)  # docker-compose.yml passes it
        sandbox = config.load(str(OPS / "docker" / "switch.toml")).events
        assert not sandbox.nats_url and not any(p.webhook for p in sandbox.partners), \
            "the container's switch has events to relay: run a relay in docker-compose.yml and scrape it"
        assert "payswitch-relay" not in jobs
        assert "docker-compose.yml runs no relay" in prometheus
        assert re.search(r"^\s*#\s+- job_name: payswitch-relay$", prometheus, flags=re.M)


def test_dockerfile_is_multi_stage_non_root_with_a_compiled_wheel():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) == 2
    assert "pip wheel" in text and "COPY --from=build /wheels" in text
    assert re.search(r"^USER payswitch$", text, flags=re.M)
    assert "import native.iso8583" in text  # the image refuses to build without its compiled modules
    for src in re.findall(r"^COPY (?!--)(\S+)", text, flags=re.M):
        assert (ROOT / src).exists(), src


def test_container_config_is_valid_and_scrapable(monkeypatch):
    monkeypatch.setenv("PAYSWITCH_JOURNAL_KEY", "5e" * 32)  # docker-compose.yml passes it
    cfg = config.load(str(OPS / "docker" / "switch.toml"))
    assert cfg.http.host == "0.0.0.0" and cfg.http.port == 9583


def test_systemd_unit():
    text = (OPS / "payswitch.service").read_text()
    assert re.search(r"^UMask=0077$", text, flags=re.M)
    assert re.search(r"^User=payswitch$", text, flags=re.M)
    assert "ExecStartPre=" in text and "check-config" in text


def test_ci_installs_the_debian_tools():
    text = (ROOT / ".ci" / "run").read_text()
    for tool, package in (("promtool", "prometheus"), ("chromium", "chromium")):
        assert re.search(rf"command -v {tool} .*apt-get install -y[^\n]*\b{package}\b", text), tool


def test_the_drain_is_described_as_it_answers():
    """A drain refuses new payments with 91 (counted twice: refused_draining, and
    requests_total of kind unknown), but answers 0800s (test_e2e_drain pins it)."""
    runbook = (OPS / "runbook.md").read_text()
    stop = next(line for line in runbook.splitlines() if line.startswith("| stop | SIGTERM |"))
    assert "an 0800 (echo, sign-on, key exchange) is answered" in stop
    assert 'payswitch_requests_total{kind="unknown",code="91"}' in stop
    readme = " ".join((OPS.parent / "README.md").read_text().split())
    assert "and an 0800 (echo, sign-on, key exchange) is answered, as always" in readme
    spec = " ".join((OPS.parent / "docs" / "terminal-interface.md").read_text().split())
    assert "and an 0800 is answered as always" in spec
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    codes = next(p for p in dashboard["panels"] if p.get("title") == "Response codes by kind")
    assert "91 refused while draining" in codes["description"]
