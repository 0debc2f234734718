"""The locust shop day (loadtest/): its requests follow the sandbox's rules (spec 7),
and a short headless run against the embedded default sends every request type of
the mix with no answer other than the one promised and within the latency targets."""
from __future__ import annotations

import ast
import csv
import random
import re
import subprocess
import sys

import pytest

from adapters.citycard import crypto
from adapters.citycard.centre import DEMO_MK
from loadtest import shopday
from native.iso8583 import parse_tlv48
from switch import config as config_mod
from tests import e2e

LOCUSTFILE = e2e.ROOT / "loadtest" / "locustfile.py"
PORTS = ("8583", "8584", "9583", "9101", "9102", "9103", "9301", "9201", "9202", "9401")


# -- the mix, without a switch ------------------------------------------------------


def shopper(index=0, seed=1):
    return shopday.Shopper(index, random.Random(seed))


def test_tills_beyond_the_999th_share_terminals_not_city_cards():
    a, b = shopper(0), shopper(999)
    assert a.terminal == b.terminal == "DEMO0001"
    assert shopper(998).terminal == "DEMO0999"
    assert a.city_card != b.city_card and a.city_card.startswith("8800") and len(a.city_card) == 16


def test_card_amounts_and_codes_follow_the_acquirer_sandbox():
    s = shopper()
    for _ in range(2000):
        step = s.purchase()
        assert step.request[4][-2:] not in shopday.DECLINE_ENDINGS and step.expected == "00"
        step = s.declined_purchase()
        assert step.request[4][-2:] == step.expected and step.name == f"purchase {step.expected}"
        step = s.refund()
        assert step.request[3] == "200000" and int(step.request[4]) <= shopday.REFUND_MAX
        assert step.request[4][-2:] not in shopday.DECLINE_ENDINGS
        step = s.refund_over_limit()
        assert int(step.request[4]) > shopday.REFUND_MAX and step.expected == "58"


def test_a_reversal_names_the_same_tills_latest_approved_purchase():
    s = shopper()
    assert s.reversal() is None
    sale = s.purchase()
    s.answered(sale, {39: "00"})
    declined = s.declined_purchase()
    s.answered(declined, {39: declined.expected})  # a decline is nothing to reverse
    rev = s.reversal()
    assert rev.request["mti"] == "0400" and rev.request[41] == sale.request[41] and rev.expected == "00"
    assert rev.request[90] == "0200" + sale.request[11] + sale.request[7] + "0" * 22
    assert rev.request[4] == sale.request[4]
    assert s.reversal() is None  # reversed once


def test_wallet_codes_route_to_a_sandbox_wallet_and_end_in_their_outcome():
    s = shopper()
    seen = set()
    for _ in range(500):
        for step in (s.wallet(), s.wallet_on_phone()):
            code = parse_tlv48(step.request[48])["BC"]
            assert len(code) == 18 and code.isdigit()
            assert 25 <= int(code[:2]) <= 30 or 10 <= int(code[:2]) <= 15
            outcome = {"01": "00", "02": "05", "04": "51"}.get(code[-2:], "00")
            assert outcome == step.expected and code[-2:] not in ("03", "05")
            assert step.request[49] == "156" and step.request[22].startswith("03")
            assert (step.kind == shopday.WALLET_WAIT) == (code[-2:] in ("01", "02"))
            seen.add(step.name)
    assert seen == set(shopday.NAMES[shopday.WALLET] + shopday.NAMES[shopday.WALLET_WAIT])


def test_city_card_requests_carry_a_valid_tac_and_follow_the_balance():
    s = shopper(index=7)
    dk = crypto.derive_dk(DEMO_MK, s.city_card)
    balance = 10_000
    for n in range(1, 40):
        step = [s.city_debit, s.city_topup, s.city_overdraw][n % 3]()
        tags = parse_tlv48(step.request[48])
        counter, reported, serial, tac = tags["CC"][:5], tags["CC"][5:17], tags["CC"][17:27], tags["CC"][27:]
        assert counter == "%05d" % n and int(reported) == balance
        fields = (s.city_card, counter, step.request[4], serial, step.request[41])
        assert tac == crypto.tac(dk, *fields)
        if step.name == "citycard top-up 00":
            assert step.request[3] == "210000" and tags["M1"] == crypto.mac1(dk, *fields)
            balance += int(step.request[4])
        elif step.name == "citycard debit 00":
            balance -= int(step.request[4])
        else:
            assert step.expected == "51" and int(step.request[4]) > balance
        assert step.balance_after in (None, balance)
        assert s.city_balance == balance


def test_a_step_checks_the_code_and_the_city_card_balance():
    s = shopper()
    step = s.city_debit()
    cb = "%012d" % step.balance_after
    assert step.check({39: "00", 48: "CB012" + cb}) is None
    assert "balance" in step.check({39: "00", 48: "CB012" + "%012d" % 1})
    assert "answered 96, the sandbox promises 00" in step.check({39: "96"})
    s.answered(step, {39: "96", 48: "CB012000000000123"})  # the centre's ledger wins
    assert s.city_balance == 123


def test_after_a_lost_city_card_request_a_top_up_finds_the_balance_again():
    s = shopper()
    lost = s.city_debit()
    s.lost(lost)
    for step in (s.city_debit(), s.city_overdraw(), s.city_topup()):
        assert step.name == "citycard top-up 00" and step.balance_after is None
        assert step.check({39: "00", 48: "CB012%012d" % 4242}) is None
    s.answered(step, {39: "00", 48: "CB012%012d" % 4242})
    assert s.city_known and s.city_balance == 4242
    assert s.city_debit().balance_after < 4242


def test_the_run_fails_on_a_wrong_answer_or_a_class_over_its_target():
    """slo_misses in a process of its own: importing locust patches the process with gevent."""
    code = """
import sys
sys.path.insert(0, sys.argv[1])
from locust.stats import RequestStats
import locustfile

def stats(*samples):
    s = RequestStats()
    for kind, name, ms, failed in samples:
        s.log_request(kind, name, ms, 100)  # the total too
        if failed:
            s.log_error(kind, name, "answered 96")
    return s

fast = [("card", "purchase 00", 40, False)] * 200 + [("network", "echo 00", 2, False)] * 10
waits = [("wallet-wait", "wallet on phone 00", 6200, False)] * 50
print(repr(locustfile.slo_misses(stats(*fast, *waits))))
print(repr(locustfile.slo_misses(stats(*fast, ("card", "purchase 00", 2500, False), ("card", "purchase 00", 2500, False), ("card", "purchase 00", 2500, False)))))
print(repr(locustfile.slo_misses(stats(*fast, ("citycard", "citycard debit 00", 30, True)))))
print(repr(locustfile.slo_misses(stats(("wallet", "wallet pay 00", 51000, False)))))
print(repr(locustfile.slo_misses(stats())))
"""
    run = subprocess.run([sys.executable, "-c", code, str(LOCUSTFILE.parent)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    met, slow_cards, wrong_code, slow_wallet, empty = (eval(line) for line in run.stdout.splitlines()[-5:])
    assert met == []  # 6 s wallet waits do not count against the card target
    assert slow_cards == ["card p99 2500 ms over its target 1000 ms"]
    assert wrong_code == ["1 request(s) not answered as the sandbox promises"]
    assert slow_wallet == ["wallet p99 51000 ms over its target 50000 ms"]
    assert empty == ["no request was answered"]


def test_the_readme_table_gives_the_locust_task_weights():
    tree = ast.parse(LOCUSTFILE.read_text())
    [till] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TillUser"]
    weights = [d.args[0].value for f in till.body if isinstance(f, ast.FunctionDef) for d in f.decorator_list
               if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "task"]
    readme = (e2e.ROOT / "README.md").read_text().split("## Load test")[1].split("\n## ")[0]
    rows = [int(m) for m in re.findall(r"^\| (\d+) \|", readme, flags=re.M)]
    assert rows == weights and len(weights) == 11
    assert f"out of {sum(weights)}" in readme


# -- a short run against the sandbox --------------------------------------------------


def sandbox_on_free_ports(tmp) -> tuple[str, dict]:
    """The embedded default as shipped, moved to free ports with its journal in ``tmp``."""
    ports = {p: str(e2e.free_port()) for p in PORTS}
    text = config_mod.DEFAULT_TOML
    for old, new in ports.items():
        text = re.sub(rf"(?<![0-9]){old}(?![0-9])", new, text)
    text = text.replace('url = "sqlite://payswitch-journal.sqlite"', f'url = "sqlite://{tmp / "journal.sqlite"}"')
    text = text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
    return text, {"term": int(ports["8583"]), "http": int(ports["9583"])}


@pytest.mark.e2e
def test_a_headless_shop_day_sends_the_whole_mix_without_a_failure(tmp_path):
    text, ports = sandbox_on_free_ports(tmp_path)
    switch = e2e.SwitchProcess(tmp_path, text, ports).start(timeout=60)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "30", "-r", "30",
             "-t", "14s", "--stop-timeout", "15", "--host", f"tcp://127.0.0.1:{ports['term']}",
             "--csv", str(tmp_path / "run"), "--only-summary", "--loglevel", "WARNING"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    finally:
        switch.stop()
    out = run.stdout + run.stderr
    rows = list(csv.DictReader((tmp_path / "run_stats.csv").open()))
    ran = {(r["Type"], r["Name"]): (int(r["Request Count"]), int(r["Failure Count"])) for r in rows if r["Name"] != "Aggregated"}
    failures = (tmp_path / "run_failures.csv").read_text().splitlines()[1:]
    assert not failures, "\n".join(failures)
    mix = {(kind, name) for kind, names in shopday.NAMES.items() for name in names}
    assert set(ran) == mix, out
    assert all(count > 0 and failed == 0 for count, failed in ran.values()), ran
    assert run.returncode == 0, out
    assert "SLO missed" not in out
    assert "Traceback" not in (tmp_path / "switch.log").read_text()
