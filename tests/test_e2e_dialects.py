"""End to end (issue 12): terminals as vendors build them.

Two listeners on one switch, terminal-87 and iso87-ascii (spec section 7,
v1.1), each answering in its own dialect; field 55 checked as BER-TLV on
arrival (section 3, v1.1: malformed → 30, nothing forwarded); a 30 that
echoes MTI, 11 and 41 when they can still be read (section 1); a terminal's
0400 counted as a card reversal.
"""
from __future__ import annotations

import struct

import iso8583
import pytest
from iso8583.specs import default_ascii as PYISO_ASCII

from adapters.card.card_names import icc_digest, ledger_key
from tests import e2e, samples
from tests.e2e import TERMINAL, Client, purchase, reversal_of, wait_for

pytestmark = pytest.mark.e2e

# Field 55 of the purchases built by tests/e2e.py (pyiso8583 takes binary fields as hex text).
ICC = purchase(100)["55"]
# The example of pyemv's documentation (tlv module): a template (E0) and an empty 9F02.
PYEMV_EXAMPLE = "9C0101E0055F2A0202089F0200"


class AsciiClient(Client):
    """A third-party terminal built on pyiso8583's ``default_ascii`` spec, unchanged."""

    def send(self, doc: dict):
        raw, _ = iso8583.encode(dict(doc), PYISO_ASCII)
        self.sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))

    def recv(self) -> dict:
        doc, _ = iso8583.decode(self.recv_body(), PYISO_ASCII)
        return doc


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dialects")
    ascii_port = e2e.free_port()
    second = f'\n[[listeners]]\nhost = "127.0.0.1"\nport = {ascii_port}\ndialect = "iso87-ascii"\n'
    text, ports = e2e.card_config(tmp, acquirer_timeout=2.0, extra=second)
    ports["ascii"] = ascii_port
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


@pytest.fixture
def t87(switch):
    c = Client(switch.ports["term"])
    yield c
    c.close()


@pytest.fixture
def ascii87(switch):
    c = AsciiClient(switch.ports["ascii"])
    yield c
    c.close()


def authorizations(switch, rrn: str) -> list[dict]:
    """What bank-a saw of the transaction the switch answered with RRN ``rrn``.

    (The switch gives the acquirer its own STAN; the RRN is the same on both sides.)
    """
    return [e for e in switch.ledger("bank-a") if e.get("event") == "authorization" and e.get("rrn") == rrn]


def icc_digest_of_hex(switch, text: str) -> str:
    """How bank-a's ledger names the field 55 ``text`` (hex): keyed, under the ledger's own key."""
    return icc_digest(bytes.fromhex(text), ledger_key(str(switch.tmp / "bank-a.ledger")))


def is_hex_text(raw: bytes) -> bool:
    return all(c in b"0123456789ABCDEFabcdef" for c in raw)


# ---------------------------------------------------------------------------
# two listeners, two dialects


def test_the_same_purchase_on_both_listeners_is_approved_and_answered_in_each_dialect(switch, t87, ascii87):
    binary, text = purchase(1200), purchase(1200)

    rrns = []
    t87.send(binary)
    body = t87.recv_body()
    assert body[:4] == b"0210" and not is_hex_text(body[4:12])  # 8-byte binary bitmap
    answer = e2e.decode(body)
    assert (answer["39"], answer["11"], answer["41"]) == ("00", binary["11"], TERMINAL)
    rrns.append(answer["37"])

    ascii87.send(text)
    body = ascii87.recv_body()
    assert body[:4] == b"0210" and is_hex_text(body[4:20])  # 16 hex characters of bitmap
    answer, _ = iso8583.decode(body, PYISO_ASCII)
    assert (answer["39"], answer["11"], answer["41"]) == ("00", text["11"], TERMINAL)
    assert len(answer["38"]) == 6
    rrns.append(answer["37"])

    # Both reached the acquirer with the same binary field 55: hex text was
    # only the iso87-ascii wire form.
    for rrn in rrns:
        assert wait_for(lambda rrn=rrn: authorizations(switch, rrn))
        assert authorizations(switch, rrn)[0]["icc_hmac"] == icc_digest_of_hex(switch, ICC)


def test_a_pyiso8583_default_ascii_terminal_works_unchanged(switch, ascii87):
    echo = {"t": "0800", "7": e2e.now()["7"], "11": e2e.stan(), "41": TERMINAL, "70": "301"}
    answer = ascii87.transact(echo)
    assert (answer["t"], answer["39"], answer["70"]) == ("0810", "00", "301")

    sale = purchase(2500)
    answer = ascii87.transact(sale)
    assert (answer["t"], answer["39"]) == ("0210", "00")
    assert "2" not in answer and "35" not in answer and "52" not in answer

    declined = ascii87.transact(purchase(2551))
    assert declined["39"] == "51"

    undo = ascii87.transact(reversal_of(sale))
    assert (undo["t"], undo["39"]) == ("0410", "00")
    assert wait_for(lambda: any(e.get("event") == "reversal" for e in switch.ledger("bank-a")))

    again = ascii87.transact(sale)  # a retransmission: the original answer, in this dialect
    assert (again["39"], again["37"], again["38"]) == (answer["39"], answer["37"], answer["38"])


# ---------------------------------------------------------------------------
# field 55


VALID = bytes.fromhex(ICC)
MALFORMED = {
    # The vendor bug of issue 12: field 55 as ASCII hex text (52 bytes instead of 26).
    "hex-text": VALID.hex().upper().encode().hex(),
    "truncated": VALID[:-3].hex(),
    "bad-length": (VALID[:2] + b"\x30" + VALID[3:]).hex(),  # 48 bytes declared, 19 there
    "trailing-garbage": (VALID + b"\x00\x00").hex(),
    "indefinite-length": (VALID[:2] + b"\x80" + VALID[3:]).hex(),
}


@pytest.mark.parametrize("variant", sorted(MALFORMED))
def test_a_malformed_field_55_is_answered_30_and_never_forwarded(switch, t87, variant):
    doc = purchase(1300, **{"55": MALFORMED[variant]})
    answer = t87.transact(doc)
    assert (answer["t"], answer["39"], answer["11"], answer["41"]) == ("0210", "30", doc["11"], TERMINAL)
    assert "38" not in answer
    good = t87.transact(purchase(1300))  # the connection lives on, and the acquirer still answers
    assert good["39"] == "00"
    assert wait_for(lambda: authorizations(switch, good["37"]))  # the ledger is up to date
    assert authorizations(switch, answer["37"]) == []


def test_hex_text_in_hex_text_on_the_ascii_listener_is_30(switch, ascii87):
    doc = purchase(1300, **{"55": MALFORMED["hex-text"]})
    answer = ascii87.transact(doc)
    assert (answer["39"], answer["11"]) == ("30", doc["11"])
    good = ascii87.transact(purchase(1300))
    assert wait_for(lambda: authorizations(switch, good["37"]))
    assert authorizations(switch, answer["37"]) == []


@pytest.mark.parametrize("icc", [PYEMV_EXAMPLE, samples.icc_request().hex().upper()], ids=["pyemv-doc", "arqc-147"])
@pytest.mark.parametrize("listener", ["term", "ascii"])
def test_a_valid_field_55_is_approved_and_reaches_the_acquirer_byte_for_byte(switch, icc, listener):
    client = Client(switch.ports["term"]) if listener == "term" else AsciiClient(switch.ports["ascii"])
    try:
        doc = purchase(1400, **{"55": icc})
        answer = client.transact(doc)
    finally:
        client.close()
    assert answer["39"] == "00"
    assert wait_for(lambda: authorizations(switch, answer["37"]))
    assert authorizations(switch, answer["37"])[0]["icc_hmac"] == icc_digest_of_hex(switch, icc)


# ---------------------------------------------------------------------------
# 30 for an undecodable message echoes what it can read


def test_an_undecodable_message_is_answered_30_with_mti_11_and_41(switch, t87, ascii87):
    doc = purchase(1500)
    body = e2e.encode(doc)
    cut = body[:-3]  # field 55 declares 3 bytes more than there are
    t87.send_raw(struct.pack(">H", len(cut)) + cut)
    answer = t87.recv()
    assert (answer["t"], answer["39"], answer["11"], answer["41"]) == ("0210", "30", doc["11"], TERMINAL)
    # Its key readable, it is journaled and answered like any refusal (section 3: the
    # fields read echoed, never field 2).
    assert "2" not in answer and answer.get("4") == doc["4"]

    doc = purchase(1500)
    raw, _ = iso8583.encode(dict(doc), PYISO_ASCII)
    cut = bytes(raw)[:-3]
    ascii87.send_raw(struct.pack(">H", len(cut)) + cut)
    answer = ascii87.recv()
    assert (answer["t"], answer["39"], answer["11"], answer["41"]) == ("0210", "30", doc["11"], TERMINAL)


def test_garbage_is_answered_30_as_0810(t87):
    t87.send_raw(struct.pack(">H", 3) + b"\x01\x02\x03")
    answer = t87.recv()
    assert (answer["t"], answer["39"]) == ("0810", "30") and "11" not in answer


# ---------------------------------------------------------------------------
# metrics


def test_a_terminal_reversal_is_counted_as_a_card_reversal(switch, t87):
    def count(kind):
        _, body = switch.http_get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(f'payswitch_requests_total{{code="00",kind="{kind}",mclass="reversal"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count("card")
    sale = purchase(1600)
    assert t87.transact(sale)["39"] == "00"
    assert t87.transact(reversal_of(sale))["39"] == "00"
    assert count("card") == before + 1
    assert count("unknown") == 0


# ---------------------------------------------------------------------------
# payswitch send --dialect


def test_payswitch_send_speaks_the_listeners_dialect(switch):
    import subprocess
    import sys

    def send(port, *extra):
        return subprocess.run(
            [sys.executable, "-m", "switch.cli", "send", "purchase", "--port", str(port), "--pan", e2e.VISA,
             "--amount", "1700", "--expiry", "2812", "--timeout", "10", *extra],
            capture_output=True, text=True, timeout=30,
        )

    ok = send(switch.ports["ascii"], "--dialect", "iso87-ascii")
    assert ok.returncode == 0, ok.stderr
    assert "response code" in ok.stdout and " 00" in ok.stdout.split("response code", 1)[1].splitlines()[0]
    wrong = send(switch.ports["ascii"], "--dialect", "nope")
    assert wrong.returncode == 2 and "unknown dialect 'nope'" in wrong.stderr
