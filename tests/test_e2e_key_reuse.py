"""End to end: an 0800 and a payment never share a key (41, 11, 7) (spec section 6).

The same key with other content is 94, and another MTI is other content.
0800s are answered from memory and payments from the journal: each side must
look at the other's.  Nothing reaches an acquirer for the 94s.
"""
import sqlite3

import pytest

from tests import e2e
from tests.e2e import TERMINAL, now, purchase, stan

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("key-reuse")
    text, ports = e2e.card_config(tmp, acquirer_timeout=1.5)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def echo(**key) -> dict:
    doc = {"t": "0800", "7": now()["7"], "11": stan(), "41": TERMINAL, "70": "301"}
    doc.update(key)
    return doc


def authorizations(switch) -> int:
    return len([e for e in switch.ledger("bank-a") if e.get("event") == "authorization"])


def journaled(switch, key: dict) -> list[tuple]:
    conn = sqlite3.connect(switch.tmp / "journal.sqlite", timeout=10)
    try:
        return conn.execute("SELECT mti, response_code FROM txn WHERE terminal_id = ? AND stan = ? AND "
                            "transmission_time = ?", (key["41"], key["11"], key["7"])).fetchall()
    finally:
        conn.close()


def test_an_0800_under_the_key_of_a_journaled_0200_is_94(client, switch):
    pay = purchase(1000)
    first = client.transact(pay)
    assert first["39"] == "00"
    resp = client.transact(echo(**{n: pay[n] for n in ("7", "11")}))
    assert (resp["t"], resp["39"], resp["11"]) == ("0810", "94", pay["11"])
    # the purchase is still the key's: its retransmission gets its answer, not a second authorization
    before = authorizations(switch)
    again = client.transact(pay)
    assert (again["39"], again["37"], again["38"]) == ("00", first["37"], first["38"])
    assert authorizations(switch) == before


def test_an_0800_under_the_key_of_an_0200_in_flight_is_94(client, switch):
    pay = purchase(1068)  # the simulated acquirer never answers: in flight until its timeout
    client.send(pay)
    resp = client.transact(echo(**{n: pay[n] for n in ("7", "11")}))
    assert (resp["t"], resp["39"]) == ("0810", "94")
    late = client.recv()
    assert (late["t"], late["11"], late["39"]) == ("0210", pay["11"], "68")


def test_an_0200_under_the_key_of_an_0800_is_94_and_goes_nowhere(client, switch):
    net = echo()
    first = client.transact(net)
    assert (first["t"], first["39"]) == ("0810", "00")
    before = authorizations(switch)
    pay = purchase(1000, **{"7": net["7"], "11": net["11"]})
    resp = client.transact(pay)
    assert (resp["t"], resp["39"], resp["11"]) == ("0210", "94", net["11"]) and "38" not in resp
    assert authorizations(switch) == before
    assert journaled(switch, pay) == []
    # the 0800 is still the key's: its retransmission gets its own 0810
    again = client.transact(net)
    assert (again["39"], again["37"]) == ("00", first["37"])
    # and so do a 0400 and an 0100 under it
    for mti in ("0100", "0400"):
        doc = purchase(1000, mti=mti, **{"7": net["7"], "11": net["11"]})
        if mti == "0400":
            doc["90"] = "0200" + "000001" + net["7"] + "0" * 22
        assert client.transact(doc)["39"] == "94"
    assert authorizations(switch) == before and journaled(switch, pay) == []
