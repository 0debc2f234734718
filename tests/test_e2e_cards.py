"""End to end over TCP: the real switch and card simulators, a pyiso8583 client.

Spec sections 1-3, 5-7 for bank cards: every message row, every sandbox outcome,
retransmission, 94, reversal idempotence, many requests in flight, many
connections, hostile frames.
"""
import struct
import threading
import time

import pytest

from tests import e2e
from tests.e2e import MERCHANT, VISA, Client, purchase, reversal_of, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cards")
    qr = '[[routes]]\nname = "unionpay-qr"\nkind = "wallet"\nprefixes = ["62"]\nacquirers = ["cup"]\n'
    text, ports = e2e.card_config(tmp, acquirer_timeout=1.5, extra=qr)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def ledger_reversals(switch, acquirer):
    return [e for e in switch.ledger(acquirer) if e.get("event") == "reversal"]


def ledger_auths(switch, acquirer):
    return [e for e in switch.ledger(acquirer) if e.get("event") == "authorization"]


ECHOED = ("3", "4", "7", "11", "12", "13", "41", "42", "49")


def test_purchase_approved_echoes_and_never_returns_card_data(client):
    req = purchase(1250)
    resp = client.transact(req)
    assert resp["t"] == "0210"
    assert resp["39"] == "00"
    assert len(resp["38"]) == 6 and len(resp["37"]) == 12
    for n in ECHOED:
        assert resp[n] == req[n], n
    assert not {"2", "35", "52"} & set(resp)


@pytest.mark.parametrize("cents, code", [(1005, "05"), (1013, "13"), (1051, "51"), (1055, "55"), (1096, "96")])
def test_sandbox_declines(client, cents, code):
    resp = client.transact(purchase(cents))
    assert resp["39"] == code
    assert "38" not in resp


def test_acquirer_never_answers_68_then_reversed_at_acquirer(client, switch):
    before = len(ledger_reversals(switch, "bank-a"))
    req = purchase(1068)
    t0 = time.monotonic()
    resp = client.transact(req)
    assert resp["39"] == "68"
    assert 1.0 < time.monotonic() - t0 < 10
    # the possibly-approved authorization is reversed at the acquirer (store and forward)
    assert wait_for(lambda: len(ledger_reversals(switch, "bank-a")) > before)


@pytest.mark.parametrize("pan", [e2e.MASTERCARD, "2221000000000009", e2e.UNIONPAY])
def test_other_card_routes(client, pan):
    assert client.transact(purchase(700, pan))["39"] == "00"


@pytest.mark.parametrize("pan", ["3530111333300000", "4761739001010118"])
def test_unknown_range_or_bad_luhn_is_14(client, pan):
    assert client.transact(purchase(700, pan))["39"] == "14"


def test_unknown_terminal_or_merchant_is_03(client):
    assert client.transact(purchase(700, terminal="NOTDEMO1"))["39"] == "03"
    assert client.transact(purchase(700, **{"42": "OTHER0000000001"}))["39"] == "03"


def test_missing_mandatory_field_is_30(client):
    req = purchase(700)
    del req["4"]
    resp = client.transact(req)
    assert resp["t"] == "0210" and resp["39"] == "30" and resp["11"] == req["11"]


def test_undecodable_message_gets_30_and_connection_lives(client):
    body = b"0200" + b"\xff" * 8 + b"garbage"
    client.send_raw(struct.pack(">H", len(body)) + body)
    resp = client.recv()
    assert resp["t"] == "0210" and resp["39"] == "30"
    assert client.transact(purchase(700))["39"] == "00"


def test_retransmission_answered_from_journal_without_second_authorization(client, switch):
    req = purchase(4321)
    first = client.transact(req)
    again = client.transact(req)
    assert first == again
    assert first["39"] == "00"
    auths = [e for e in ledger_auths(switch, "bank-a") if int(e.get("amount", 0)) == 4321]
    assert len(auths) == 1


def test_same_key_different_content_is_94(client):
    req = purchase(4400)
    assert client.transact(req)["39"] == "00"
    changed = dict(req, **{"4": "%012d" % 4401})
    assert client.transact(changed)["39"] == "94"


def test_reversal_is_idempotent_and_reaches_the_acquirer(client, switch):
    req = purchase(5200)
    assert client.transact(req)["39"] == "00"
    before = len(ledger_reversals(switch, "bank-a"))
    rev = reversal_of(req)
    resp = client.transact(rev)
    assert resp["t"] == "0410" and resp["39"] == "00" and resp["11"] == rev["11"]
    assert wait_for(lambda: len(ledger_reversals(switch, "bank-a")) > before)
    # the terminal repeats its 0400 (same STAN) and sends a fresh one: both 00
    assert client.transact(rev)["39"] == "00"
    assert client.transact(reversal_of(req))["39"] == "00"


def test_reversal_of_unknown_transaction_is_00(client):
    ghost = purchase(100)
    assert client.transact(reversal_of(ghost))["39"] == "00"


@pytest.mark.parametrize("mti", ["0400", "0220"])
def test_field_90_naming_an_impossible_original_time_is_30_and_reaches_no_acquirer(client, switch, mti):
    """Section 2 for the original's field 7 inside 90: month 13, day 32, hour 25 are a format error."""
    orig = purchase(5300, mti="0100" if mti == "0220" else "0200")
    assert client.transact(orig)["39"] == "00"
    before = len(switch.ledger("bank-a"))
    for bad in ("13" + orig["7"][2:], orig["7"][:2] + "32" + orig["7"][4:], orig["7"][:4] + "25" + orig["7"][6:]):
        field90 = orig["t"] + orig["11"] + bad + "0" * 22
        req = reversal_of(orig, **{"90": field90}) if mti == "0400" else purchase(5000, mti="0220", **{"90": field90})
        resp = client.transact(req)
        assert (resp["t"], resp["39"], resp["11"]) == (mti[:2] + "10" if mti == "0400" else "0230", "30", req["11"])
        assert client.transact(req) == resp  # kept: a retransmission gets the same answer
    assert len(switch.ledger("bank-a")) == before
    # The original still stands: the right 0400 or 0220 reaches the acquirer.
    field90 = orig["t"] + orig["11"] + orig["7"] + "0" * 22
    good = reversal_of(orig) if mti == "0400" else purchase(5000, mti="0220", **{"90": field90})
    assert client.transact(good)["39"] == "00"
    assert wait_for(lambda: len(switch.ledger("bank-a")) > before)


def test_preauth_then_completion(client):
    pre = purchase(8000, mti="0100")
    resp = client.transact(pre)
    assert resp["t"] == "0110" and resp["39"] == "00"
    comp = purchase(7500, mti="0220", **{"90": pre["t"] + pre["11"] + pre["7"] + "0" * 22})
    resp = client.transact(comp)
    assert resp["t"] == "0230" and resp["39"] == "00"


def test_completion_by_reference_without_card_number(client):
    pre = purchase(6000, mti="0100")
    assert client.transact(pre)["39"] == "00"
    comp = purchase(5500, mti="0220", **{"90": pre["t"] + pre["11"] + pre["7"] + "0" * 22})
    for n in ("2", "14", "35", "52", "55"):
        comp.pop(n, None)
    resp = client.transact(comp)
    assert resp["t"] == "0230" and resp["39"] == "00"


def test_completion_without_preauth_is_25(client):
    comp = purchase(7500, mti="0220", **{"90": "0100" + "999999" + "0101000000" + "0" * 22})
    assert client.transact(comp)["39"] == "25"


def test_refund_and_balance_inquiry(client):
    assert client.transact(purchase(300, pcode="200000"))["39"] == "00"
    assert client.transact(purchase(0, pcode="310000"))["39"] == "00"


def test_network_management(client):
    for code in ("001", "301", "002"):
        req = {"t": "0800", "7": e2e.now()["7"], "11": e2e.stan(), "41": "DEMO0001", "70": code}
        resp = client.transact(req)
        assert resp["t"] == "0810" and resp["39"] == "00" and resp["70"] == code and resp["11"] == req["11"]


def test_a_retransmitted_0800_gets_its_first_0810_and_other_content_94(client):
    # Section 6: same 41, 11 and 7, the original answer (same 37 and 38); the
    # same key with other content, 94.  An 0800 is not journaled, but this holds.
    req = {"t": "0800", "7": e2e.now()["7"], "11": e2e.stan(), "41": "DEMO0001", "70": "301"}
    first = client.transact(req)
    assert first["39"] == "00"
    assert client.transact(req) == first
    assert client.transact(dict(req, **{"70": "001"}))["39"] == "94"
    bad = dict(req, **{"11": e2e.stan(), "70": "999"})
    refused = client.transact(bad)
    assert refused["39"] == "12" and client.transact(bad) == refused


def test_network_management_without_field_70_is_30_and_the_connection_lives(client):
    # Section 3: an 0800 carries 70; one without it is a format error, answered
    # like any request missing a field (it once went unanswered).
    req = {"t": "0800", "7": e2e.now()["7"], "11": e2e.stan(), "41": "DEMO0001"}
    resp = client.transact(req)
    assert resp["t"] == "0810" and resp["39"] == "30" and resp["11"] == req["11"]
    assert "70" not in resp
    assert client.transact(purchase(700))["39"] == "00"


def test_settlement_totals_against_the_journal(switch):
    c = Client(switch.ports["term"])
    try:
        t = "DEMO0500"
        assert c.transact(purchase(1000, terminal=t))["39"] == "00"
        assert c.transact(purchase(2000, terminal=t))["39"] == "00"
        assert c.transact(purchase(500, pcode="200000", terminal=t))["39"] == "00"
        assert c.transact(purchase(1005, terminal=t))["39"] == "05"  # declined: counts nowhere
        rev = purchase(3000, terminal=t)
        assert c.transact(rev)["39"] == "00"
        assert c.transact(reversal_of(rev))["39"] == "00"  # reversed: counts nowhere

        def settle(credits_n, debits_n, credits_amt, debits_amt):
            return c.transact({
                "t": "0500", "3": "920000", "7": e2e.now()["7"], "11": e2e.stan(), "41": t, "42": MERCHANT,
                "49": "978",  # section 6.1: the totals of one currency
                "74": "%010d" % credits_n, "76": "%010d" % debits_n,
                "86": "%016d" % credits_amt, "88": "%016d" % debits_amt,
            })

        wrong = settle(1, 3, 500, 6000)
        assert wrong["t"] == "0510" and wrong["39"] == "95"
        assert settle(1, 2, 500, 3000)["39"] == "00"
        assert settle(0, 0, 0, 0)["39"] == "00"  # a new batch starts after an accepted 0500
    finally:
        c.close()


def test_100_requests_in_flight_on_one_connection(client):
    reqs = [purchase(10000 + 100 * i) for i in range(100)]  # last two digits 00: approved
    for r in reqs:
        client.send(r)
    answers = {}
    for _ in reqs:
        resp = client.recv()
        answers[resp["11"]] = resp
    assert set(answers) == {r["11"] for r in reqs}
    for r in reqs:
        assert answers[r["11"]]["4"] == r["4"] and answers[r["11"]]["39"] == "00"


def test_50_connections_at_once(switch):
    results = []

    def one(i):
        c = Client(switch.ports["term"])
        try:
            results.append(c.transact(purchase(20000 + 100 * i, terminal="DEMO%04d" % (100 + i)))["39"])
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["00"] * 50


def test_oversized_frame_closes_only_that_connection(switch, client):
    bad = Client(switch.ports["term"])
    try:
        bad.send_raw(struct.pack(">H", 9000) + b"0200")
        with pytest.raises((ConnectionError, OSError)):
            bad.recv_body()
    finally:
        bad.close()
    garbage = Client(switch.ports["term"])
    try:
        garbage.send_raw(struct.pack(">H", 5) + b"\x00\x01\x02\x03\x04")
        assert garbage.recv()["39"] == "30"
    finally:
        garbage.close()
    assert client.transact(purchase(900))["39"] == "00"


def test_health_and_metrics(switch, client):
    client.transact(purchase(910))
    status, body = switch.http_get("/healthz")
    assert status == 200 and b'"status": "alive"' in body
    status, body = switch.http_get("/readyz")
    assert status == 200 and b'"bank-a": true' in body
    status, body = switch.http_get("/metrics")
    assert status == 200
    assert b'payswitch_requests_total{code="00",kind="card",mclass="financial"}' in body
    assert b"payswitch_request_seconds_bucket" in body


def test_no_full_pan_in_journal_or_log(switch, client):
    client.transact(purchase(920))
    journal = (switch.tmp / "journal.sqlite").read_bytes()
    wal = switch.tmp / "journal.sqlite-wal"
    if wal.exists():
        journal += wal.read_bytes()
    for pan in (VISA, e2e.MASTERCARD, e2e.UNIONPAY):
        assert pan.encode() not in journal
        assert pan not in switch.log_text()
    assert b"476173" in journal  # the BIN is kept


def test_card_scheme_qr_code_goes_to_the_card_network(client, switch):
    """Spec 3/7: a scanned code starting 62 is a card-scheme QR, routed to the card network."""
    qr = "6212345678901234567"
    req = purchase(2500, **{"22": "031", "48": "BC%03d%s" % (len(qr), qr), "49": "156"})
    for n in ("2", "14", "35", "52", "55"):
        req.pop(n, None)
    resp = client.transact(req)
    assert resp["t"] == "0210" and resp["39"] == "00" and len(resp["38"]) == 6
    [auth] = [e for e in ledger_auths(switch, "cup") if e.get("amount") == 2500]
    assert auth["pan"].startswith("621234") and qr not in str(auth)
    # an unknown wallet prefix is still 12
    other = dict(req, **{"11": e2e.stan(), "48": "BC018990000000000000099"})
    assert client.transact(other)["39"] == "12"
