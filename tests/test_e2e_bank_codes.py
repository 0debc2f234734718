"""End to end: a bank host's ISO 8583 codes reach the terminal as section-5 codes.

The card simulator runs with --bank-codes (amounts ending in 54, 10, ...
answer that code); the client is pyiso8583's, as a third-party terminal's
would be.  A partial approval (10) is declined to the terminal and reversed
at the acquirer: the simulator's ledger shows the money back.
"""
import re
import sqlite3

import pytest

from tests import e2e
from tests.e2e import purchase, wait_for

pytestmark = pytest.mark.e2e

SECTION_5 = {"00", "03", "05", "12", "13", "14", "25", "30", "51", "55", "58", "62", "68", "91", "94", "95", "96", "A0"}


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bank-codes")
    text, ports = e2e.card_config(tmp, acquirer_timeout=1.5)
    args = f'args = ["--ledger", "{tmp / "bank-a.ledger"}"'
    assert args in text
    proc = e2e.SwitchProcess(tmp, text.replace(args, args + ', "--bank-codes"'), ports).start()
    yield proc
    proc.stop()


def journaled(switch, stan: str) -> dict:
    conn = sqlite3.connect(switch.tmp / "journal.sqlite", timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT state, response_code, acquirer_ref, auth_code FROM txn WHERE stan = ? AND terminal_id = ?",
                           (stan, e2e.TERMINAL)).fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


def authorization(switch, amount: int) -> dict:
    [event] = [e for e in switch.ledger("bank-a") if e.get("event") == "authorization" and e["amount"] == amount]
    return event


@pytest.mark.parametrize("cents, code", [
    (1054, "05"), (1057, "05"), (1061, "05"), (1065, "05"), (1041, "62"), (1043, "62"), (1004, "62"),
    (1015, "14"), (1075, "55"), (1001, "05"), (1019, "96"),
])
def test_a_decline_outside_section_5_reaches_the_terminal_as_its_nearest_code(client, switch, cents, code):
    req = purchase(cents)
    resp = client.transact(req)
    assert resp["39"] == code and "38" not in resp
    host = "%02d" % (cents % 100)
    assert authorization(switch, cents)["response_code"] == host
    row = journaled(switch, req["11"])
    assert (row["state"], row["response_code"]) == ("answered", code)
    assert row["acquirer_ref"].endswith("|" + host)  # the acquirer's own code, for reconciliation


@pytest.mark.parametrize("cents", [1008, 1011])
def test_an_approval_with_another_code_is_00(client, switch, cents):
    resp = client.transact(purchase(cents))
    assert resp["39"] == "00" and len(resp["38"]) == 6
    assert authorization(switch, cents)["delta"] == cents


def test_a_partial_approval_is_declined_and_reversed_at_the_acquirer(client, switch):
    req = purchase(2010)
    resp = client.transact(req)
    assert resp["39"] == "51" and "38" not in resp and resp["4"] == req["4"]
    auth = authorization(switch, 2010)
    assert (auth["response_code"], auth["approved"], auth["delta"]) == ("10", 1005, 1005)
    [rev] = wait_for(lambda: [e for e in switch.ledger("bank-a")
                              if e["event"] == "reversal" and e["original_stan"] == auth["stan"]])
    # The strict host refuses (64) a reversal of the 2010 requested: it reverses what it approved;
    # and (12) one without the authorization code it gave, which the terminal never saw.
    assert (rev["amount"], rev["response_code"], rev["auth_code"]) == (1005, "00", auth["auth_code"])
    assert rev["original_found"] and rev["delta"] == -1005 and not rev["repeat"]
    assert sum(e.get("delta") or 0 for e in switch.ledger("bank-a") if e.get("card") == auth["card"]
               and e.get("stan") in (auth["stan"], rev["stan"])) == 0
    assert wait_for(lambda: journaled(switch, req["11"])["state"] == "reversed")
    assert journaled(switch, req["11"])["response_code"] == "51"
    assert journaled(switch, req["11"])["auth_code"] == auth["auth_code"]  # kept for the reversal
    # A retransmission is answered from the journal: the same 51, no second authorization.
    assert client.transact(req)["39"] == "51"
    assert len([e for e in switch.ledger("bank-a") if e.get("event") == "authorization" and e["amount"] == 2010]) == 1
    log = switch.log_text()
    assert "answered 10 (approved for a partial amount): 1005 of 2010 approved; the terminal gets 51 " \
           "and the acquirer a reversal" in log
    assert e2e.VISA not in log


def test_terminals_only_ever_see_section_5_and_the_counters_say_both(client, switch):
    for cents in (3054, 3010, 3000):
        assert client.transact(purchase(cents))["39"] in SECTION_5
    status, body = switch.http_get("/metrics")
    assert status == 200
    codes = set(re.findall(rb'payswitch_requests_total\{code="(\w+)"', body))
    assert codes and {c.decode() for c in codes} <= SECTION_5
    hostlink = set(re.findall(rb'payswitch_hostlink_requests_total\{acquirer="bank-a",mti="0200",response_code="(\w+)"',
                              body))
    assert {c.decode() for c in hostlink} <= SECTION_5
    assert re.search(rb'payswitch_hostlink_host_codes_total\{acquirer="bank-a",answered="05",mti="0200",'
                     rb'response_code="54"\} [1-9]', body)
    assert re.search(rb'payswitch_hostlink_host_codes_total\{acquirer="bank-a",answered="51",mti="0200",'
                     rb'response_code="10"\} [1-9]', body)
