"""Issue 8 artefact scan: a full session through a running switch (cards with
track 2, PIN block and EMV data, declines, reversals, refunds, wallets of both
styles, city cards, malformed and refused requests, admin calls with and
without the token), then every log line, the journal files (database, -wal,
-shm), the admin responses and the metrics are searched for card data: any
Luhn-valid run of 13-19 digits, track 2 (PAN=YYMM...), the PIN block in binary
or hex, and every card number and payment code the session sent.

The journal is searched twice: its files byte for byte for what the session
sent, and every value of every row (a stored response decoded field by field)
for Luhn-valid runs: in the raw pages, adjacent columns and fields run into
each other and make digit runs no value holds."""
from __future__ import annotations

import re
import socket
import sqlite3
import struct
import time

import pytest

from native.iso8583 import dialect
from switch.core.routing import luhn_ok
from tests import e2e
from tests.e2e import Client, purchase
from tests.test_e2e_citycard import citycard_request
from tests.test_e2e_wallet import code, wallet_extra, wallet_payment

pytestmark = pytest.mark.e2e

PIN_BLOCK = bytes.fromhex("0123456789ABCDEF")  # what e2e.purchase sends in field 52
# Not the digits of a decimal fraction (metrics: 0.01982101900057387, 1.79598761809e+09).
DIGITS = re.compile(rb"(?<![0-9.])[0-9]{13,19}(?![0-9])")
TRACK2 = re.compile(rb"[0-9]{12,19}[=D][0-9]{4}")
# Columns that hold keyed digests in hex, in the form the journal's guard accepts
# (switch.journal.check_pan_forms); anything else in them is scanned like all.
HEX_DIGESTS = {"pan_hash": re.compile(r"v[0-9]{1,3}:[0-9a-f]{64}"), "content_digest": re.compile(r"[0-9a-f]{32}")}


def citycard_extra(port: int) -> str:
    return f"""
[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:{port}"]
timeout = 2.0
connections = 1

[[routes]]
name = "citycard"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["citycard"]

[[simulators]]
kind = "citycard"
name = "citycard"
port = {port}
"""


def findings(name: str, data: bytes, secrets: set[bytes]) -> list[str]:
    out = []
    for m in DIGITS.finditer(data):
        if luhn_ok(m.group().decode()):
            out.append(f"{name}: Luhn-valid {len(m.group())}-digit run at {m.start()}")
    for m in TRACK2.finditer(data):
        out.append(f"{name}: track 2 shape at {m.start()}")
    for s in secrets:
        if s in data:
            out.append(f"{name}: a value the session sent ({len(s)} bytes) at {data.index(s)}")
    return out


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])  # an operator chasing a problem turns DEBUG on
def test_nothing_of_a_full_session_leaks_card_data(tmp_path, level):
    wports = {"tradepay": e2e.free_port(), "micropay": e2e.free_port()}
    cport = e2e.free_port()
    text, ports = e2e.card_config(tmp_path, extra=wallet_extra(tmp_path, wports) + citycard_extra(cport))
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    sw.log_level = level
    sw.start()
    sent: set[str] = set()
    try:
        c = Client(ports["term"])
        # cards: approved with track 2, PIN and EMV data; declined; bad Luhn; unrouted; refund; reversal
        for pan in (e2e.VISA, e2e.MASTERCARD, e2e.UNIONPAY):
            sent.add(pan)
            track2 = f"{pan}=2812101{'0' * 9}"
            sent.add(track2)
            r = c.transact(purchase(1200, pan, **{"35": track2}))
            assert r["39"] == "00", r
            assert c.transact(purchase(1051, pan))["39"] == "51"
        orig = purchase(4400, e2e.VISA)
        assert c.transact(orig)["39"] == "00"
        assert c.transact(e2e.reversal_of(orig))["39"] == "00"
        assert c.transact(purchase(700, e2e.VISA, pcode="200000"))["39"] == "00"
        for pan in ("4761739001010118", "6011111111111117", "4111111111111111"):
            sent.add(pan)
            c.transact(purchase(1000, pan))
        # fields 2 and 35 disagreeing, an unknown terminal, a bad merchant
        c.transact(purchase(1000, e2e.VISA, **{"35": "5413330089010434=28121010000000000"}))
        c.transact(purchase(1000, e2e.VISA, terminal="NOPE0001"))
        # malformed: a format error carrying a PAN, then an oversized frame on its own connection
        body = e2e.encode(purchase(1000, e2e.VISA))
        bad = body.replace(b"16" + e2e.VISA.encode(), b"1X" + e2e.VISA.encode())
        c.send_raw(struct.pack(">H", len(bad)) + bad)
        c.recv()
        s = socket.create_connection(("127.0.0.1", ports["term"]))
        s.sendall(b"\xff\xff" + e2e.VISA.encode() * 3)
        s.settimeout(5)
        assert s.recv(10) == b""
        s.close()
        # wallets: approved and declined, both styles; a malformed field 48
        for style, suffix in (("tradepay", "99"), ("tradepay", "04"), ("micropay", "99"), ("micropay", "04")):
            pay_code = code(style, suffix)
            sent.add(pay_code)
            c.transact(wallet_payment(pay_code))
        broken = wallet_payment(code("micropay", "99"))
        broken["48"] = "BC0X9" + broken["48"][5:]
        sent.add(broken["48"][5:])
        assert c.transact(broken)["39"] == "30"
        # city cards: debit, top-up, a replay
        card = "8800123456789015"
        sent.add(card)
        req, _ = citycard_request(card, 1, 2500)
        assert c.transact(req)["39"] == "00"
        req, _ = citycard_request(card, 2, 2000, pcode="210000", topup=True)
        c.transact(req)
        req, _ = citycard_request(card, 1, 2500)
        c.transact(req)
        c.close()

        # the admin side: every page, and a reload with and without the token
        responses = b""
        for path in ("/metrics", "/healthz", "/readyz", "/status", "/status.json"):
            status, page = sw.http_get(path)
            assert status in (200, 503)
            responses += page
        for headers in ("", f"Authorization: Bearer {e2e.ADMIN_TOKEN}\r\n"):
            with socket.create_connection(("127.0.0.1", ports["http"]), timeout=5) as h:
                h.sendall(f"POST /admin/reload HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\n"
                          "Connection: close\r\n\r\n".encode())
                while chunk := h.recv(65536):
                    responses += chunk
        time.sleep(0.5)
    finally:
        sw.stop()

    secrets = {s.encode() for s in sent} | {PIN_BLOCK, PIN_BLOCK.hex().encode(), PIN_BLOCK.hex().upper().encode()}
    artefacts = {"switch.log (switch and simulators)": (tmp_path / "switch.log").read_bytes(),
                 "admin and metrics responses": responses}
    assert len(artefacts["switch.log (switch and simulators)"]) > 1000
    # At DEBUG the switch says more, card by card (masked): those lines are scanned too.
    assert (b" DEBUG " in artefacts["switch.log (switch and simulators)"]) == (level == "DEBUG")
    found = [f for name, data in artefacts.items() for f in findings(name, data, secrets)]
    raw = {}
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"journal.sqlite{suffix}"
        if p.exists():
            raw[p.name] = p.read_bytes()
    assert "journal.sqlite" in raw
    for name, data in raw.items():
        found += [f for f in findings(name, data, secrets) if "value the session sent" in f or "track 2" in f]
    rows = 0
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    term = dialect("terminal-87")
    for table in [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]:
        cursor = conn.execute(f"SELECT * FROM {table}")
        columns = [d[0] for d in cursor.description]
        for row in cursor:
            rows += 1
            for column, value in zip(columns, row):
                if column in HEX_DIGESTS and isinstance(value, str) and HEX_DIGESTS[column].fullmatch(value):
                    continue  # a keyed digest's hex can hold a Luhn-valid run by chance (about 1 hash in 100)
                if isinstance(value, bytes):
                    try:
                        msg = term.decode(value)
                    except ValueError:
                        found += findings(f"journal {table} blob", value, secrets)
                        continue
                    for n in msg:
                        v = msg[n]
                        found += findings(f"journal {table} response field {n}", v if isinstance(v, bytes) else v.encode(), secrets)
                elif value is not None:
                    found += findings(f"journal {table}", str(value).encode(), secrets)
    conn.close()
    assert rows > 20
    assert found == []
