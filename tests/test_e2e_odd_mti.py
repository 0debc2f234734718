"""End to end: what a terminal gets for an MTI that is not a request of section 3.

A response MTI (third digit odd: 0110, 0210, 0410, 0810, 0190, 9999 ...) is
not a request: ISO 8583 never answers one, and the switch's MTI + 10 would
be a request MTI (0210 -> 0220, 0190 -> 0200) or none at all.  The switch
sends nothing back and the connection goes on.  A request MTI the switch does
not know (0300, 0120, 1200 ...) is answered 12 with its MTI + 10.  Neither is
journaled nor reaches an acquirer.  The client is pyiso8583's, raw.
"""
import re
import sqlite3
import struct

import pytest

from tests import e2e
from tests.e2e import purchase

pytestmark = pytest.mark.e2e

RESPONSES = ["0110", "0210", "0230", "0410", "0430", "0510", "0810", "0190", "0290", "0130", "9999", "1210"]
UNKNOWN_REQUESTS = [("0300", "0310"), ("0120", "0130"), ("0600", "0610"), ("1200", "1210"), ("0420", "0430"),
                    ("9000", "9010"), ("0180", "0190")]


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("odd-mti")
    text, ports = e2e.card_config(tmp)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def journaled_stans(switch) -> set[str]:
    conn = sqlite3.connect(switch.tmp / "journal.sqlite", timeout=10)
    try:
        return {stan for (stan,) in conn.execute("SELECT stan FROM txn")}
    finally:
        conn.close()


def forwarded(switch) -> int:
    return len([e for e in switch.ledger("bank-a") if e.get("event") != "mac_failure"])


def odd(mti: str) -> dict:
    """A message with the fields of an answer to a purchase, under ``mti``."""
    doc = purchase(1000, mti=mti)
    doc.update({"37": "000000000001", "38": "AB12CD", "39": "00"})
    return doc


@pytest.mark.parametrize("mti", RESPONSES)
def test_a_response_mti_from_a_terminal_is_not_answered_and_the_connection_goes_on(client, switch, mti):
    before = forwarded(switch)
    msg = odd(mti)
    client.send(msg)
    # The next thing on the connection is the answer to the purchase sent after it.
    pay = purchase(1000)
    resp = client.transact(pay)
    assert (resp["t"], resp["11"], resp["39"]) == ("0210", pay["11"], "00")
    assert forwarded(switch) == before + 1  # the purchase, nothing else
    assert msg["11"] not in journaled_stans(switch)


def test_an_undecodable_message_with_a_response_mti_is_not_answered_either(client, switch):
    body = e2e.encode(odd("0210"))
    cut = body[:-3]  # field 49 cut short: undecodable, the MTI still readable
    client.send_raw(struct.pack(">H", len(cut)) + cut)
    pay = purchase(1000)
    resp = client.transact(pay)
    assert (resp["t"], resp["11"]) == ("0210", pay["11"])


@pytest.mark.parametrize("mti, answer", UNKNOWN_REQUESTS)
def test_a_request_mti_not_in_section_3_is_answered_12_with_its_mti_plus_10(client, switch, mti, answer):
    before = forwarded(switch)
    msg = odd(mti)
    del msg["39"], msg["38"], msg["37"]
    resp = client.transact(msg)
    assert (resp["t"], resp["39"], resp["11"], resp["41"]) == (answer, "12", msg["11"], msg["41"])
    assert "38" not in resp and "2" not in resp
    assert forwarded(switch) == before
    assert msg["11"] not in journaled_stans(switch)


def test_the_responses_dropped_are_counted_and_logged_without_card_data(client, switch):
    client.send(odd("0110"))
    assert client.transact(purchase(1000))["39"] == "00"
    status, body = switch.http_get("/metrics")
    assert status == 200
    counted = re.search(rb"^payswitch_unsolicited_responses_total ([0-9.]+)$", body, re.M)
    assert counted and float(counted.group(1)) >= 1
    log = switch.log_text()
    assert "0110 from DEMO0001 is a response, not a request: not answered" in log
    assert e2e.VISA not in log
