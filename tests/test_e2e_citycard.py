"""End to end over TCP: city cards through the switch to the simulated clearing centre
(spec sections 3, 4, 4.1, 7), with a pyiso8583 client."""
import sqlite3
import time
from contextlib import closing

import pytest

from adapters.citycard import crypto
from tests import e2e
from tests.e2e import purchase

pytestmark = pytest.mark.e2e

MK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
BLACKLISTED = "8800000000000666"


def citycard_extra(timeout: float, sim_args: list[str], acquirer_extra: str = "") -> str:
    """Configuration of a city-card centre (its simulator on a free port) and the 8800 route."""
    port = e2e.free_port()
    args = ", ".join(f'"{a}"' for a in sim_args)
    return f"""
[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:{port}"]
timeout = {timeout}
{acquirer_extra}
[[routes]]
name = "citycard"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["citycard"]

[[simulators]]
kind = "citycard"
name = "citycard"
port = {port}
args = [{args}]
"""


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("citycard")
    text, ports = e2e.card_config(tmp, extra=citycard_extra(2.0, ["--blacklist", BLACKLISTED], "connections = 1\n"))
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def tlv48(**tags):
    return "".join(f"{t}{len(v):03d}{v}" for t, v in tags.items())


def parse48(value):
    out, i = {}, 0
    while i < len(value):
        tag, n = value[i:i + 2], int(value[i + 2:i + 5])
        out[tag] = value[i + 5:i + 5 + n]
        i += 5 + n
    return out


def citycard_request(card, counter, amount, *, serial="0000000001", balance=10000, pcode="000000", mti="0200",
                     tac=None, topup=False, terminal=e2e.TERMINAL):
    dk = crypto.derive_dk(MK, card)
    args = (dk, card, "%05d" % counter, "%012d" % amount, serial, terminal)
    tags = {"CC": "%05d%012d%s%s" % (counter, balance, serial, tac or crypto.tac(*args))}
    if topup:
        tags["M1"] = crypto.mac1(*args)
    doc = purchase(amount, card, pcode=pcode, mti=mti, terminal=terminal, **{"22": "071", "48": tlv48(**tags)})
    for n in ("14", "55"):
        doc.pop(n)
    doc["49"] = "156"  # the centre's currency: the sandbox's, the demo merchants' (spec 7)
    return doc, args


def test_worked_example_of_the_spec():
    dk = crypto.derive_dk(MK, "8800123456789015")
    assert dk.hex().upper() == "0BEEB5AC342E597193B0C71AB7C1C32E"
    assert crypto.tac(dk, "8800123456789015", "00001", "000000002500", "0000000001", "DEMO0001") == "69C169C3"


def test_debit_returns_balance_after(client):
    req, _ = citycard_request("8800123456789015", 1, 2500)
    resp = client.transact(req)
    assert resp["t"] == "0210" and resp["39"] == "00"
    assert parse48(resp["48"])["CB"] == "%012d" % 7500
    assert not {"2", "35", "52"} & set(resp)


def test_replayed_counter_is_94_and_wrong_tac_a0(client):
    card = "8800123456789023"
    assert client.transact(citycard_request(card, 1, 100)[0])["39"] == "00"
    assert client.transact(citycard_request(card, 1, 100)[0])["39"] == "94"
    assert client.transact(citycard_request(card, 2, 100, tac="00000000")[0])["39"] == "A0"


def test_overdraw_is_51(client):
    resp = client.transact(citycard_request("8800123456789031", 1, 10001)[0])
    assert resp["39"] == "51"


def test_blacklisted_card_is_62(client):
    assert client.transact(citycard_request(BLACKLISTED, 1, 100)[0])["39"] == "62"


def test_topup_with_mac1_gets_mac2(client):
    card = "8800123456789049"
    req, args = citycard_request(card, 1, 5000, pcode="210000", topup=True)
    resp = client.transact(req)
    assert resp["39"] == "00"
    tags = parse48(resp["48"])
    assert tags["CB"] == "%012d" % 15000
    assert tags["M2"] == crypto.mac2(*args)
    bad, _ = citycard_request(card, 2, 5000, pcode="210000", topup=True)
    bad["48"] = bad["48"][:-8] + "00000000"  # wrong MAC1
    assert client.transact(bad)["39"] == "A0"


def test_duplicate_offline_upload_is_counted_once(client):
    card = "8800123456789056"
    first, _ = citycard_request(card, 3, 1200, mti="0220")
    booked = client.transact(first)
    assert booked["t"] == "0230" and booked["39"] == "00"
    again, _ = citycard_request(card, 3, 1200, mti="0220")  # new STAN, same card counter
    counted = client.transact(again)
    # Section 3: an approval carries 38, the duplicate's that of the booking it duplicates.
    assert counted["39"] == "00" and counted["38"] == booked["38"]
    debit, _ = citycard_request(card, 4, 100)
    resp = client.transact(debit)
    assert resp["39"] == "00"
    assert parse48(resp["48"])["CB"] == "%012d" % (10000 - 1200 - 100)


def test_reversal_restores_the_balance(client):
    card = "8800123456789064"
    req, _ = citycard_request(card, 1, 4000)
    assert parse48(client.transact(req)["48"])["CB"] == "%012d" % 6000
    assert client.transact(e2e.reversal_of(req))["39"] == "00"
    # Section 6.1: the 0410 comes at once; the centre hears of it in the background.
    deadline = time.monotonic() + 5
    counter = 2
    while True:
        resp = client.transact(citycard_request(card, counter, 100)[0])
        balance = int(parse48(resp["48"])["CB"])
        if balance != 6000 - 100 * (counter - 1) or time.monotonic() > deadline:
            break
        counter += 1
        time.sleep(0.1)
    assert balance == 10000 - 100 * (counter - 1)


def test_reversal_of_an_offline_upload_leaves_it_counted(switch, client):
    # README: a city-card upload is never reversed; the card already paid offline.
    card = "8800123456789072"
    upload, _ = citycard_request(card, 1, 1500, mti="0220")
    assert client.transact(upload)["39"] == "00"
    assert client.transact(e2e.reversal_of(upload))["39"] == "00"
    time.sleep(1.5)  # reversal_retry 0.5 s: a background reversal would have reached the centre
    resp = client.transact(citycard_request(card, 2, 100)[0])
    assert parse48(resp["48"])["CB"] == "%012d" % (10000 - 1500 - 100)
    db = sqlite3.connect(switch.tmp / "journal.sqlite")
    try:
        (state,) = db.execute("select state from txn where stan = ? and mti = '0220'", (upload["11"],)).fetchone()
    finally:
        db.close()
    assert state == "answered"


def test_a_debit_reversed_after_its_upload_counts_once_as_at_the_centre(switch, client):
    # The 0200's 00 never reached the terminal: it uploads the card's record of the
    # debit (the centre's duplicate: 00) and reverses the 0200 (section 6).  The
    # centre keeps a debit the card uploaded; the 0500 counts it once, as it does.
    card, t = "8800123456789114", "DEMO0220"  # a terminal of its own: its 0500 totals are this test's
    debit, _ = citycard_request(card, 1, 2200, terminal=t)
    assert client.transact(debit)["39"] == "00"
    upload, _ = citycard_request(card, 1, 2200, mti="0220", terminal=t)
    assert client.transact(upload)["39"] == "00"
    assert client.transact(e2e.reversal_of(debit))["39"] == "00"

    def state():
        with closing(sqlite3.connect(switch.tmp / "journal.sqlite")) as db:
            row = db.execute("select state from txn where terminal_id = ? and stan = ?", (t, debit["11"])).fetchone()
        return row[0] == "reversed" and row[0]

    assert e2e.wait_for(state) == "reversed"  # the centre answered the reversal
    inquiry = client.transact(citycard_request(card, 2, 0, pcode="310000", terminal=t)[0])
    assert parse48(inquiry["48"])["CB"] == "%012d" % (10000 - 2200)  # the debit stands at the centre
    settled = client.transact({
        "t": "0500", "3": "920000", "7": e2e.now()["7"], "11": e2e.stan(), "41": t, "42": e2e.MERCHANT,
        "49": "156", "74": "%010d" % 0, "76": "%010d" % 1, "86": "%016d" % 0, "88": "%016d" % 2200,
    })  # in the centre's currency, as the city-card debits were
    assert settled["t"] == "0510" and settled["39"] == "00"


def test_reversal_of_an_offline_upload_in_flight_leaves_it_counted(tmp_path):
    text, ports = e2e.card_config(tmp_path, extra=citycard_extra(4.0, ["--latency-ms", "1000"]))
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    terminal, other = e2e.Client(ports["term"]), e2e.Client(ports["term"])
    try:
        card = "8800123456789080"
        upload, _ = citycard_request(card, 1, 1500, mti="0220")
        terminal.send(upload)
        time.sleep(0.3)  # at the centre now
        assert other.transact(e2e.reversal_of(upload))["39"] == "00"
        assert terminal.recv()["39"] == "00"  # the card paid: the upload stands
        time.sleep(2.5)  # a reversal sent at the answer would have been booked by now
        resp = terminal.transact(citycard_request(card, 2, 100)[0])
        assert parse48(resp["48"])["CB"] == "%012d" % (10000 - 1500 - 100)
    finally:
        terminal.close()
        other.close()
        proc.stop()


def test_top_up_beyond_the_most_a_card_holds_is_13_and_credits_nothing(client):
    card = "8800123456789098"
    resp = client.transact(citycard_request(card, 1, 999_999_999_999, pcode="210000", topup=True)[0])
    assert resp["39"] == "13" and "M2" not in parse48(resp.get("48", ""))
    balance = client.transact(citycard_request(card, 2, 0, pcode="310000")[0])
    assert parse48(balance["48"])["CB"] == "%012d" % 10000


def test_reversal_of_a_top_up_the_card_spent_is_left_to_an_operator(switch, client):
    card = "8800123456789106"
    topup, _ = citycard_request(card, 1, 20000, pcode="210000", topup=True)
    assert parse48(client.transact(topup)["48"])["CB"] == "%012d" % 30000
    assert client.transact(citycard_request(card, 2, 29000)[0])["39"] == "00"  # the card got M2 and spent it
    assert client.transact(e2e.reversal_of(topup))["39"] == "00"  # section 6.1: recorded, answered at once

    def state():
        db = sqlite3.connect(switch.tmp / "journal.sqlite")
        try:
            return db.execute("select state, reversal_code from txn where stan = ? and mti = '0200'",
                              (topup["11"],)).fetchone()
        finally:
            db.close()

    e2e.wait_for(lambda: state()[0] != "reversal_pending")
    assert state() == ("reversal_refused", "51")
    balance = client.transact(citycard_request(card, 3, 0, pcode="310000")[0])
    assert parse48(balance["48"])["CB"] == "%012d" % 1000
