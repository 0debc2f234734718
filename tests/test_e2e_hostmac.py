"""End to end: host-link MACs between the switch and the sandbox acquirers, software module and HSM.

bank-a MACs with tdes-retail and its simulator checks every MAC; bank-b
(aes-cmac) answers every transaction with a wrong MAC (``--bad-mac-rate 1``):
the acquirer approved, but the switch must not take that for an approval, so
the terminal is declined and the approval reversed at the acquirer.
"""
from __future__ import annotations

import re

import pytest

from tests import e2e
from tests.test_e2e_security import module_switch


def maced(text: str, tmp) -> str:
    for name, acq_id, algorithm, extra in (("bank-a", "10000000001", "tdes-retail", ""),
                                           ("bank-b", "10000000002", "aes-cmac", ', "--bad-mac-rate", "1.0"')):
        line = f'acquirer_id = "{acq_id}"\n'
        text = text.replace(line, f'{line}mac = "{algorithm}"\nmac_key = "zak-{name}"\n', 1)
        ledger = tmp / f"{name}.ledger"
        text = text.replace(f'args = ["--ledger", "{ledger}"]',
                            f'args = ["--ledger", "{ledger}", "--mac", "{algorithm}"{extra}]', 1)
    assert text.count('mac_key = "zak-') == 2 and text.count('"--mac"') == 2
    return text


@pytest.fixture(scope="module", params=["software", "hsm"])
def switch(request, tmp_path_factory):
    yield from module_switch(request.param, tmp_path_factory.mktemp(f"hostmac-{request.param}"),
                             lambda text, tmp, module: maced(text, tmp) + module)


def wait_for(predicate, timeout=10.0):
    return e2e.wait_for(predicate, timeout)


def test_maced_purchase_and_reversal_verified_by_the_acquirer(switch):
    amount = 2101 + 10 * (switch.module == "hsm")
    client = e2e.Client(switch.ports["term"])
    try:
        req = e2e.purchase(amount)
        assert client.transact(req)["39"] == "00"
        assert client.transact(e2e.reversal_of(req))["39"] == "00"
    finally:
        client.close()
    [auth] = [e for e in switch.ledger("bank-a") if e["event"] == "authorization" and e["amount"] == amount]
    assert auth["mac"] == "ok" and auth["response_code"] == "00"
    [rev] = wait_for(lambda: [e for e in switch.ledger("bank-a")
                              if e["event"] == "reversal" and e["original_stan"] == auth["stan"]])
    assert rev["mac"] == "ok" and rev["original_found"] and rev["delta"] == -amount
    assert not [e for e in switch.ledger("bank-a") if e["event"] == "mac_failure"]


def test_an_approval_with_a_wrong_mac_is_declined_and_reversed(switch):
    amount = 2201 + 10 * (switch.module == "hsm")
    client = e2e.Client(switch.ports["term"])
    try:
        answer = client.transact(e2e.purchase(amount, e2e.MASTERCARD))
    finally:
        client.close()
    assert answer["39"] != "00" and "38" not in answer
    [auth] = [e for e in switch.ledger("bank-b") if e["event"] == "authorization" and e["amount"] == amount]
    # The acquirer approved and the switch could not trust the answer: it reverses.
    assert auth["response_code"] == "00" and auth["fault"] == "bad-mac" and auth["mac"] == "ok"
    revs = wait_for(lambda: [e for e in switch.ledger("bank-b")
                             if e["event"] == "reversal" and e["original_stan"] == auth["stan"]])
    assert revs and revs[0]["original_found"] and revs[0]["mac"] == "ok"
    assert sum(e["delta"] for e in switch.ledger("bank-b") if e.get("card") == auth["card"]) == 0
    status, body = switch.http_get("/metrics")
    assert status == 200
    failures = re.search(rb'payswitch_hostlink_mac_failures_total\{acquirer="bank-b",mti="0200"\} (\S+)', body)
    assert failures and float(failures.group(1)) >= 1
    log = switch.log_text()
    assert "has a missing or wrong MAC (wrong MAC)" in log
    assert e2e.MASTERCARD not in log
