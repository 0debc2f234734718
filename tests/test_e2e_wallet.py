"""End to end over TCP: barcode wallets of both styles through the switch
(spec sections 3, 4, 6, 7), with a pyiso8583 client and the wallets' ledgers."""
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests import e2e
from tests.e2e import Client

pytestmark = pytest.mark.e2e

CONFIRM = 1.0  # the customer's "about 6 s", shortened
TIMEOUT = 5.0  # wallet acquirer deadline; cancel margin 1.5 s
LATE = 4.5  # a pay ending in 06 reaches the wallet this late: after its 3.5 s pay call and the cancel
STYLES = {"tradepay": "28", "micropay": "12"}  # a prefix routed to each style


def wallet_extra(tmp, ports, *, simulators=True, late=LATE):
    out = ""
    for style, acq_type in (("tradepay", "wallet-tradepay"), ("micropay", "wallet-micropay")):
        keys = tmp / f"keys-{style}"
        creds = (
            f'merchant_key_file = "{keys}/merchant_private.pem"\nwallet_public_key_file = "{keys}/wallet_public.pem"'
            if style == "tradepay"
            else f'secret_file = "{keys}/micropay_secret"'
        )
        prefixes = '["25-30"]' if style == "tradepay" else '["10-15"]'
        out += f"""
[[acquirers]]
name = "wallet-{style}"
type = "{acq_type}"
endpoints = ["http://127.0.0.1:{ports[style]}"]
timeout = {TIMEOUT}
poll_interval = 0.3
cancel_margin = 1.5
{creds}

[[routes]]
name = "wallet-{style}"
kind = "wallet"
prefixes = {prefixes}
acquirers = ["wallet-{style}"]
"""
        if simulators:
            out += f"""
[[simulators]]
kind = "wallet"
name = "wallet-{style}"
port = {ports[style]}
args = ["--style", "{style}", "--confirm-delay", "{CONFIRM}", "--late-delay", "{late}", "--key-dir", "{keys}"]
"""
    return out


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wallet")
    wports = {"tradepay": e2e.free_port(), "micropay": e2e.free_port()}
    text, ports = e2e.card_config(tmp, extra=wallet_extra(tmp, wports))
    ports.update(wports)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def code(style, suffix):
    """An 18-digit payment code of the style's prefix ending in the sandbox suffix."""
    return STYLES[style] + "%014d" % (int(time.time() * 1000) % 10**14) + suffix


def wallet_payment(pay_code, amount=1000, **extra):
    doc = {
        "t": "0200", "3": "000000", "4": "%012d" % amount, "11": e2e.stan(), "22": "031", "25": "00",
        "41": e2e.TERMINAL, "42": e2e.MERCHANT, "49": "156", "48": "BC%03d%s" % (len(pay_code), pay_code),
    }
    doc.update(e2e.now())
    doc.update(extra)
    return doc


def ledger(switch, style):
    with socket.create_connection(("127.0.0.1", switch.ports[style]), timeout=5) as s:
        s.sendall(b"GET /sandbox/ledger HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])["orders"]


def order_of(switch, style, req):
    no = req["41"] + req["7"] + req["11"]
    return [o for o in ledger(switch, style) if o["out_trade_no"] == no]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "suffix, rc, min_s, max_s",
    [
        ("99", "00", 0, CONFIRM),  # approved at once
        ("01", "00", CONFIRM, TIMEOUT),  # confirms on the phone after a while
        ("02", "05", CONFIRM, TIMEOUT),  # declines on the phone
        ("04", "51", 0, CONFIRM),  # insufficient balance
        ("05", "00", 0, TIMEOUT),  # first answer unknown, a query finds it paid
        ("03", "68", TIMEOUT - 2.5, TIMEOUT + 1),  # never confirms: cancelled, 68
    ],
)
def test_sandbox_outcomes(client, switch, style, suffix, rc, min_s, max_s):
    req = wallet_payment(code(style, suffix))
    t0 = time.monotonic()
    resp = client.transact(req)
    took = time.monotonic() - t0
    assert resp["t"] == "0210" and resp["39"] == rc
    assert min_s <= took <= max_s, took
    assert not {"2", "35", "52"} & set(resp)
    [order] = order_of(switch, style, req)
    if rc == "00":
        assert "WT" in resp["48"] and order["trade_no"] in resp["48"]
        assert order["state"] == "paid" and order["charges"] == 1
    elif rc == "68":
        assert order["state"] == "closed" and order["charges"] == 0
    else:
        assert order["charges"] == 0


@pytest.mark.parametrize("style", STYLES)
def test_reversal_refunds_a_wallet_payment(client, switch, style):
    req = wallet_payment(code(style, "77"))
    assert client.transact(req)["39"] == "00"
    rev = e2e.reversal_of(req)
    assert client.transact(rev)["39"] == "00"
    # Section 6.1: the 0410 comes at once, the refund follows in the background.
    deadline = time.monotonic() + 5
    while (order := order_of(switch, style, req)[0])["state"] != "refunded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert order["state"] == "refunded" and order["charges"] == 1 and order["refunds"] == 1
    assert client.transact(rev)["39"] == "00"  # repeated 0400: still one refund
    [order] = order_of(switch, style, req)
    assert order["refunds"] == 1


@pytest.mark.parametrize("style", STYLES)
def test_retransmission_during_a_held_payment_gets_the_one_result(switch, style):
    req = wallet_payment(code(style, "01"))
    answers = []

    def send():
        c = Client(switch.ports["term"])
        try:
            answers.append(c.transact(req))
        finally:
            c.close()

    first = threading.Thread(target=send)
    first.start()
    time.sleep(0.3)  # the first is held while the customer confirms
    second = threading.Thread(target=send)
    second.start()
    first.join(15)
    second.join(15)
    assert len(answers) == 2 and answers[0] == answers[1] and answers[0]["39"] == "00"
    [order] = order_of(switch, style, req)
    assert order["charges"] == 1 and order["pay_calls"] == 1


@pytest.mark.parametrize("style", STYLES)
def test_a_pay_landing_after_the_cancel_said_not_found_is_refunded(client, switch, style):
    # The pay call times out while the pay is still on its way; the cancel then hears
    # "no such order".  Not final: the reversal queue cancels again until the pay has
    # landed, and refunds it (the window, reversal_not_found_window, is 120 s here).
    req = wallet_payment(code(style, "06"))
    t0 = time.monotonic()
    assert client.transact(req)["39"] == "91"
    assert time.monotonic() - t0 < LATE  # answered before the pay lands
    assert e2e.wait_for(lambda: (order_of(switch, style, req) or [{}])[0].get("state") == "refunded", timeout=20)
    [order] = order_of(switch, style, req)
    assert order["charges"] == 1 and order["refunds"] == 1
    assert e2e.wait_for(lambda: journal_state(switch, req) == "reversed")


def test_a_cancel_still_not_found_after_the_window_ends_unmatched(tmp_path):
    # The pay never lands within reversal_not_found_window (1 s here): the payment then
    # counts as never charged, journaled as a card reversal answered 25 for as long.
    wports = {"tradepay": e2e.free_port(), "micropay": e2e.free_port()}
    text, ports = e2e.card_config(tmp_path, extra=wallet_extra(tmp_path, wports, late=60.0))
    text = text.replace("reversal_retry = 0.5\n", "reversal_retry = 0.5\nreversal_not_found_window = 1.0\n", 1)
    assert "reversal_not_found_window = 1.0" in text
    ports.update(wports)
    sw = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        c = Client(ports["term"])
        try:
            reqs = {style: wallet_payment(code(style, "06")) for style in STYLES}
            for req in reqs.values():
                assert c.transact(req)["39"] == "91"
        finally:
            c.close()
        for style, req in reqs.items():
            assert e2e.wait_for(lambda: journal_state(sw, req) == "unmatched"), style
            assert order_of(sw, style, req) == []  # the pay has not landed: nothing charged yet
    finally:
        sw.stop()


def journal_state(switch, req) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{switch.tmp / 'journal.sqlite'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT state FROM txn WHERE terminal_id = ? AND stan = ? AND transmission_time = ?",
                         (req["41"], req["11"], req["7"])).fetchone()
    return row[0] if row else ""


def test_unknown_wallet_prefix_is_12_and_foreign_currency_12(client):
    assert client.transact(wallet_payment("990000000000000099"))["39"] == "12"
    assert client.transact(wallet_payment(code("tradepay", "99"), **{"49": "978"}))["39"] == "12"


def test_restart_while_an_order_waits_sweeper_closes_it(tmp_path):
    """kill -9 while the customer hasn't confirmed: after restart the order is closed."""
    wports = {"tradepay": e2e.free_port(), "micropay": e2e.free_port()}
    sims = []
    for style in wports:
        p = subprocess.Popen(
            [sys.executable, "-m", "switch.cli", "sim", "wallet", "--style", style, "--port", str(wports[style]),
             "--confirm-delay", str(CONFIRM), "--key-dir", str(tmp_path / f"keys-{style}")],
            stdout=subprocess.PIPE, text=True, cwd=e2e.ROOT,
        )
        assert "listening on" in p.stdout.readline()
        sims.append(p)
    text, ports = e2e.card_config(tmp_path, extra=wallet_extra(tmp_path, wports, simulators=False))
    ports.update(wports)
    sw = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        req = wallet_payment(code("tradepay", "03"))  # never confirms
        c = Client(ports["term"])
        c.send(req)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not order_of(sw, "tradepay", req):
            time.sleep(0.05)
        [order] = order_of(sw, "tradepay", req)
        assert order["state"] == "waiting"
        sw.kill()
        c.close()
        sw2 = e2e.SwitchProcess(tmp_path, text, ports)
        sw2.log = open(tmp_path / "switch2.log", "w")
        sw2.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                [order] = order_of(sw2, "tradepay", req)
                if order["state"] == "closed":
                    break
                time.sleep(0.1)
            assert order["state"] == "closed" and order["charges"] == 0
            # the terminal's retransmission after the crash is never a second payment
            c2 = Client(ports["term"])
            try:
                assert c2.transact(req)["39"] != "00"
            finally:
                c2.close()
            [order] = order_of(sw2, "tradepay", req)
            assert order["pay_calls"] == 1
        finally:
            sw2.stop()
    finally:
        for p in sims:
            p.terminate()
            p.wait(10)


@pytest.mark.parametrize("style", STYLES)
def test_reversal_while_the_customer_confirms_answers_68_without_the_trade(switch, style):
    """Section 6.1: an 0400 while the customer confirms gets its 0410 at once; the
    original is answered 68 when the wallet's answer comes, the payment is refunded,
    and the 68 carries no trade number (WT goes with an approval only)."""
    req = wallet_payment(code(style, "01"))
    held = Client(switch.ports["term"])
    other = Client(switch.ports["term"])
    try:
        held.send(req)
        time.sleep(0.3)  # the customer is confirming
        t0 = time.monotonic()
        assert other.transact(e2e.reversal_of(req))["39"] == "00"
        assert time.monotonic() - t0 < 3
        resp = held.recv()
    finally:
        held.close()
        other.close()
    assert resp["39"] == "68" and "38" not in resp
    assert "WT" not in resp.get("48", "")
    e2e.wait_for(lambda: order_of(switch, style, req)[0]["state"] == "refunded")
    [order] = order_of(switch, style, req)
    assert order["charges"] == 1 and order["refunds"] == 1
