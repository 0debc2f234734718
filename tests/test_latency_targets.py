"""One set of latency targets (issue 9): the PayswitchLatencyP99 alert, its promtool
tests, the runbook, the README and the locust scenario state the same card and
wallet p99 targets, and no place states another request-latency target.

Each place is read as it ships (the rule's PromQL, the prose, the locust
constants by ``ast``, never by importing locust, which patches the process):
changing a target in one place and not in the others fails here.
"""
from __future__ import annotations

import ast
import re

from switch import config
from tests.e2e import ROOT

OPS = ROOT / "ops"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

# How the prose (and the alert's summary) states the targets, in seconds.
STATED = re.compile(r"card and city-card p99 under (\d+(?:\.\d+)?) s, wallet p99 under (\d+(?:\.\d+)?) s")
# Any percentile with a duration close after it, on one line.
PERCENTILE = re.compile(r"\bp9\d\b[^|\n.;()]{0,60}?\b(\d+(?:\.\d+)?) ?(ms|s)\b")


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def alert_block(rules: str, name: str) -> str:
    parts = re.split(r"^\s*- alert: (\w+)\s*$", rules, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))[name]


def rule_targets(rules: str) -> tuple[float, float]:
    """(card, wallet) p99 thresholds in seconds, from the alert's PromQL."""
    expr = flat(alert_block(rules, "PayswitchLatencyP99").split("labels:")[0])
    assert set(re.findall(r"histogram_quantile\(([\d.]+)", expr)) == {"0.99"}, expr
    card = re.search(r'\{kind=~"card\|citycard"\}\[5m\]\)\)\) > (\d+(?:\.\d+)?)', expr)
    wallet = re.search(r'\{kind="wallet"\}\[5m\]\)\)\) > (\d+(?:\.\d+)?)', expr)
    assert card and wallet, f"PayswitchLatencyP99 no longer compares card|citycard and wallet p99: {expr}"
    return float(card.group(1)), float(wallet.group(1))


def locust_targets(source: str) -> tuple[float, float]:
    """(card, wallet) targets in seconds from the locustfile's constants, after checking
    that every latency class is held to one of them and the check takes the p99."""
    tree = ast.parse(source)
    consts, classes = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "TARGET_MS":
                classes = {k.attr: v.id for k, v in zip(node.value.keys, node.value.values)}
            elif re.fullmatch(r"\w*P\d\d\w*", name):
                consts[name] = ast.literal_eval(node.value)
    assert set(consts) == {"CARD_P99_MS", "WALLET_P99_MS"}, f"latency constants of the locustfile: {sorted(consts)}"
    assert classes == {"CARD": "CARD_P99_MS", "CITYCARD": "CARD_P99_MS", "NETWORK": "CARD_P99_MS",
                       "WALLET": "WALLET_P99_MS", "WALLET_WAIT": "WALLET_P99_MS"}, classes
    assert set(re.findall(r"get_response_time_percentile\(([\d.]+)\)", source)) == {"0.99"}
    return consts["CARD_P99_MS"] / 1000, consts["WALLET_P99_MS"] / 1000


def prose_targets(text: str) -> set[tuple[float, float]]:
    return {(float(c), float(w)) for c, w in STATED.findall(flat(text))}


MEASURED = "## Benchmarks"  # README: what was measured on a machine, not what is promised


def targets_part(text: str) -> str:
    """``text`` without a README section of measured figures (up to the next ``## `` heading)."""
    start = text.find("\n" + MEASURED + "\n")
    if start < 0:
        return text
    end = text.find("\n## ", start + 1)
    return text[:start] + (text[end:] if end >= 0 else "")


def test_measured_figures_are_not_taken_for_targets_but_targets_elsewhere_are():
    text = "intro p99 under 1 s\n## Benchmarks\n| run | p99 13 ms |\n## Next\nalert at p99 250 ms\n"
    kept = targets_part(text)
    assert "13 ms" not in kept and "250 ms" in kept and "intro" in kept


def read_places() -> dict[str, str]:
    return {
        "ops/prometheus-rules.yml": (OPS / "prometheus-rules.yml").read_text(),
        "ops/prometheus-rules.test.yml": (OPS / "prometheus-rules.test.yml").read_text(),
        "ops/runbook.md": (OPS / "runbook.md").read_text(),
        "README.md": (ROOT / "README.md").read_text(),
        "loadtest/locustfile.py": LOCUSTFILE.read_text(),
        **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))},
    }


# Places that must state the targets in prose, and how many times at least.
MUST_STATE = {"ops/prometheus-rules.yml": 1, "ops/prometheus-rules.test.yml": 2, "ops/runbook.md": 2, "README.md": 2}


def disagreements(places: dict[str, str]) -> list[str]:
    """Every place whose targets differ from the alert rule's (empty when they all agree)."""
    card, wallet = rule_targets(places["ops/prometheus-rules.yml"])
    allowed = {card, wallet}
    wrong = []
    locust = locust_targets(places["loadtest/locustfile.py"])
    if locust != (card, wallet):
        wrong.append(f"loadtest/locustfile.py: card {locust[0]} s, wallet {locust[1]} s")
    for where, text in places.items():
        stated = prose_targets(text)
        if stated - {(card, wallet)}:
            wrong.append(f"{where}: states {sorted(stated)}")
        n = len(STATED.findall(flat(text)))
        if n < MUST_STATE.get(where, 0):
            wrong.append(f"{where}: states the targets {n} times, expected at least {MUST_STATE[where]}")
        for line in targets_part(text).splitlines():
            if "journal" in line:  # the journal's commit time has a disk target of its own
                continue
            for value, unit in PERCENTILE.findall(line):
                seconds = float(value) / (1000 if unit == "ms" else 1)
                if seconds not in allowed:
                    wrong.append(f"{where}: another latency target: {line.strip()}")
    return wrong


def test_every_place_states_the_alert_rules_targets():
    assert disagreements(read_places()) == []


def test_the_targets_are_card_1_s_and_wallet_50_s():
    assert rule_targets(read_places()["ops/prometheus-rules.yml"]) == (1.0, 50.0)


def test_a_target_changed_in_one_place_only_is_found():
    for where, old, new in (
        ("README.md", "wallet p99 under 50 s", "wallet p99 under 40 s"),
        ("ops/runbook.md", "card and city-card p99 under 1 s", "card and city-card p99 under 2 s"),
        ("loadtest/locustfile.py", "CARD_P99_MS = 1000", "CARD_P99_MS = 250"),
        ("ops/prometheus-rules.yml", '[5m]))) > 50', '[5m]))) > 45'),
    ):
        places = read_places()
        assert old in places[where], (where, old)
        places[where] = places[where].replace(old, new)
        assert disagreements(places), f"a change in {where} went unnoticed"
    places = read_places()
    places["docs/adapters.md"] += "\nA card answer's p95 stays under 250 ms.\n"
    assert any("another latency target" in w for w in disagreements(places))
    places = read_places()
    places["loadtest/locustfile.py"] += "\nSLO_P95_MS = 250\n"
    try:
        disagreements(places)
    except AssertionError as e:
        assert "SLO_P95_MS" in str(e)
    else:
        raise AssertionError("a second locust latency constant went unnoticed")


def test_the_wallet_target_fits_the_terminals_budget():
    """A wallet p99 target at or over the response deadline could never be missed."""
    _, wallet = rule_targets(read_places()["ops/prometheus-rules.yml"])
    assert wallet < config.default().response_timeout == 60.0
