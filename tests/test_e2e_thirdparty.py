"""End to end, as a shop's developer integrates: the sandbox of spec section 7 and a client built
from the documents alone.

The switch runs the embedded default (``payswitch serve --demo``, every
simulator beside it), moved to free ports.  The client is pyiso8583 (its
``default`` and ``default_ascii`` specs) plus the cryptography that
docs/terminal-interface.md describes, written here from the text with the
``cryptography`` package: the city-card TAC and top-up MACs (4.1), session
keys under the TMK, the retail MAC and AES-CMAC, ISO 9564 PIN blocks formats
0 and 4, TDES DUKPT (section 8 and 8.1).  Nothing of the switch's own client
code is used: where this file has to know something, the documents say it.
"""
from __future__ import annotations

import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import iso8583
import pytest
from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from iso8583.specs import default as T87
from iso8583.specs import default_ascii as ASCII

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

from tests import e2e

pytestmark = pytest.mark.e2e

# -- public values of the documents (spec 4.1 and 7; README "Quick start") ------------------------
DEMO, DEMO_MERCHANT = "DEMO0001", "DEMO00000000001"
SEC_MERCHANT = "DEMOSEC00000001"
VISA, MASTERCARD = "4761739001010119", "5413330089010434"
TMK_TDES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TMK_AES = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CITY_MK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
PIN = "1234"

SANDBOX_PORTS = ("8583", "8584", "9583", "9101", "9102", "9103", "9301", "9201", "9202", "9401")

# The embedded default with its ports moved (nothing else changed): a test can neither take the
# sandbox's fixed ports nor assume they are free.
LAUNCHER = """
import re, sys
from switch import config
text = config.DEFAULT_TOML
for pair in sys.argv[1:]:
    old, new = pair.split("=")
    text = re.sub(r"(?<![0-9])" + old + r"(?![0-9])", new, text)
config.DEFAULT_TOML = text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
from switch.cli import main
sys.exit(main(["serve", "--demo"]))
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thirdparty")
    ports = {p: str(e2e.free_port()) for p in SANDBOX_PORTS}
    log = open(tmp / "switch.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *(f"{k}={v}" for k, v in ports.items())],
                            cwd=tmp, env=dict(os.environ, PYTHONPATH=str(e2e.ROOT), PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=log, text=True)
    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("payswitch: ready"):
            break
    else:
        line = ""
    if not line.startswith("payswitch: ready"):
        proc.kill()
        raise RuntimeError("sandbox did not start:\n" + "".join(seen) + (tmp / "switch.log").read_text())
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    yield {"t87": int(ports["8583"]), "ascii": int(ports["8584"])}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


# -- cryptography from the documents ------------------------------------------------------------

def _ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    """TDES-ECB (single DES for an 8-byte key: the same key three times)."""
    k = key * 3 if len(key) == 8 else key + key[:8] if len(key) == 16 else key
    c = Cipher(TripleDES(k), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def retail_mac(key: bytes, data: bytes, padding: int) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 1 (section 8) or 2 (section 4.1)."""
    if padding == 2:
        data += b"\x80"
    data += b"\x00" * (-len(data) % 8)
    h = bytes(8)
    for i in range(0, len(data), 8):
        h = _ecb(key[:8], _xor(h, data[i:i + 8]))
    return _ecb(key[:8], _ecb(key[8:], h, decrypt=True))


def aes_cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def mac(key: bytes, data: bytes, aes: bool) -> bytes:
    """Section 8: the retail MAC (padding method 1) for TDES keys, AES-CMAC truncated to 8 bytes for AES."""
    return aes_cmac(key, data)[:8] if aes else retail_mac(key, data, 1)


def check_value(key: bytes, aes: bool) -> str:
    """Section 8: the first 3 bytes of the key encrypting zeros (AES: CMAC of zeros), 6 hex digits."""
    return (aes_cmac(key, bytes(16)) if aes else _ecb(key, bytes(8)))[:3].hex().upper()


def city_mac(card: str, counter: str, amount: str, serial: str, terminal: str, text: bytes = b"") -> str:
    """Section 4.1: the TAC (MAC1 with ``LOAD``, MAC2 with ``OK``) under the card's DK."""
    x = bytes.fromhex(card[-16:].rjust(16, "0"))
    dk = _ecb(CITY_MK, x) + _ecb(CITY_MK, _xor(x, b"\xff" * 8))
    return retail_mac(dk, (card + counter + amount + serial + terminal).encode() + text, 2)[:4].hex().upper()


def pin_block_0(pin: str, pan: str) -> bytes:
    """ISO 9564 format 0, clear: the PIN field XOR the 12 rightmost PAN digits without the check digit."""
    return _xor(bytes.fromhex(("0%d%s" % (len(pin), pin)).ljust(16, "F")), bytes.fromhex("0000" + pan[-13:-1]))


def pin_block_4(key: bytes, pin: str, pan: str) -> bytes:
    """ISO 9564 format 4 under an AES key: E(K, E(K, PIN field) XOR PAN field)."""
    pin_field = bytes.fromhex(("4%X%s" % (len(pin), pin)).ljust(16, "A")) + os.urandom(8)
    pan_field = bytes.fromhex(("%X" % (len(pan) - 12) + pan).ljust(32, "0"))
    aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor
    first = aes().update(pin_field)
    return aes().update(_xor(first, pan_field))


# ANSI X9.24-1:2009 TDES DUKPT: the initial key, the transaction key of a KSN, its variants.
_C0 = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")


def _half(key: bytes, reg: bytes) -> bytes:
    return _xor(_ecb(key[:8], _xor(reg, key[8:])), key[8:])


def dukpt_key(bdk: bytes, ksn: str) -> bytes:
    raw = bytes.fromhex(ksn)
    top = raw[:7] + bytes([raw[7] & 0xE0])
    key = _ecb(bdk, top)[:8] + _ecb(_xor(bdk, _C0), top)[:8]
    counter = int.from_bytes(raw[7:10], "big") & 0x1FFFFF
    reg = int.from_bytes(raw[2:10], "big") & ~0x1FFFFF
    bit = 0x100000
    while bit:
        if counter & bit:
            reg |= bit
            r = reg.to_bytes(8, "big")
            key = _half(_xor(key, _C0), r) + _half(key, r)
        bit >>= 1
    return key


# -- the terminal -----------------------------------------------------------------------------

_stan = [random.randrange(100000, 800000)]


def stan() -> str:
    _stan[0] += 1
    return "%06d" % _stan[0]


def times() -> dict:
    t = datetime.now(timezone.utc)
    return {"7": t.strftime("%m%d%H%M%S"), "12": t.strftime("%H%M%S"), "13": t.strftime("%m%d")}


def tlv(text: str) -> dict:
    out, i = {}, 0
    while i < len(text):
        n = int(text[i + 2:i + 5])
        out[text[i:i + 2]] = text[i + 5:i + 5 + n]
        i += 5 + n
    return out


def tags(**values: str) -> str:
    return "".join("%s%03d%s" % (k, len(v), v) for k, v in values.items())


def financial(amount: int, pan: str | None = VISA, *, pcode="000000", terminal=DEMO, merchant=DEMO_MERCHANT,
              currency="978", entry="051", mti="0200", **extra) -> dict:
    doc = {"t": mti, "3": pcode, "4": "%012d" % amount, "11": stan(), "22": entry, "41": terminal,
           "42": merchant, "49": currency, **times(), **extra}
    if pan:
        doc["2"] = pan
    return doc


def reversal(orig: dict) -> dict:
    return {"t": "0400", "3": orig["3"], "4": orig["4"], "11": stan(), "41": orig["41"], "42": orig["42"],
            "90": orig["t"] + orig["11"] + orig["7"] + "0" * 22, **times()}


def echo(terminal: str = DEMO, code: str = "301") -> dict:
    return {"t": "0800", "7": times()["7"], "11": stan(), "41": terminal, "70": code}


class Terminal:
    """One connection: 2-byte big-endian length, then the message in the listener's dialect."""

    def __init__(self, port: int, spec=T87):
        self.spec = spec
        self.mac_len = 16 if spec is ASCII else 8  # iso87-ascii carries binary fields as hex text
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=70)

    def close(self):
        self.sock.close()

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the switch")
            buf += chunk
        return buf

    def exchange(self, raw: bytes) -> bytes:
        self.sock.sendall(struct.pack(">H", len(raw)) + raw)
        (n,) = struct.unpack(">H", self._read(2))
        return self._read(n)

    def encode(self, doc: dict) -> bytes:
        return bytes(iso8583.encode(dict(doc), self.spec)[0])

    def transact(self, doc: dict) -> dict:
        return iso8583.decode(self.exchange(self.encode(doc)), self.spec)[0]

    def macd(self, doc: dict, key: bytes, *, aes=False, wrong=False):
        """``doc`` with its MAC (field 64, or 128 with a secondary bitmap) over the bytes from the
        MTI to the MAC field: (the answer, whether the answer's MAC verifies under ``key`` (section 8: the same key),
        None when the answer has no MAC)."""
        doc = dict(doc)
        doc["128" if any(int(k) > 64 for k in doc if k.isdigit()) else "64"] = "00" * 8
        raw = self.encode(doc)[:-self.mac_len]
        code = mac(key, raw, aes)
        if wrong:
            code = bytes([code[0] ^ 1]) + code[1:]
        body = self.exchange(raw + (code.hex().upper().encode() if self.mac_len == 16 else code))
        answer = iso8583.decode(body, self.spec)[0]
        if "64" not in answer and "128" not in answer:
            return answer, None
        expected = mac(key, body[:-self.mac_len], aes)
        return answer, body[-self.mac_len:] == (expected.hex().upper().encode() if self.mac_len == 16 else expected)


@pytest.fixture(params=["t87", "ascii"])
def terminal(request, sandbox):
    t = Terminal(sandbox[request.param], T87 if request.param == "t87" else ASCII)
    yield t
    t.close()


@pytest.fixture
def t87(sandbox):
    t = Terminal(sandbox["t87"])
    yield t
    t.close()


def assert_echoed(request: dict, answer: dict) -> None:
    """Section 3: MTI + 10, 3 4 7 11 12 13 41 42 49 echoed, 37 and 39, never 2, 35 or 52."""
    assert answer["t"] == "%04d" % (int(request["t"]) // 10 * 10 + 10)
    for f in ("3", "4", "7", "11", "12", "13", "41", "42", "49"):
        assert answer.get(f) == request.get(f), f
    assert len(answer["37"]) == 12 and len(answer["39"]) == 2
    assert not {"2", "35", "52"} & set(answer)


# -- section 7: cards, retransmission, reversal, echo on both listeners ---------------------------

def test_card_purchase_approved_and_declined_by_the_last_two_digits_of_the_amount(terminal):
    request = financial(1250)
    approved = terminal.transact(request)
    assert approved["39"] == "00" and len(approved["38"]) == 6
    assert_echoed(request, approved)
    for amount, code in ((1051, "51"), (1005, "05"), (1013, "13"), (1055, "55"), (1096, "96")):
        request = financial(amount, MASTERCARD)
        answer = terminal.transact(request)
        assert answer["39"] == code and "38" not in answer, answer
        assert_echoed(request, answer)


def test_a_retransmission_gets_the_same_answer_and_changed_content_94(terminal):
    request = financial(2000)
    first = terminal.exchange(terminal.encode(request))
    assert terminal.exchange(terminal.encode(request)) == first
    assert iso8583.decode(first, terminal.spec)[0]["39"] == "00"
    repeat = dict(request, t="0201")  # section 6.1: the repeat is the same request
    again = terminal.transact(repeat)
    assert again["t"] == "0210" and again["37"] == iso8583.decode(first, terminal.spec)[0]["37"]
    assert terminal.transact(dict(request, **{"4": "%012d" % 2001}))["39"] == "94"


def test_a_reversal_answers_00_and_is_idempotent_and_names_a_late_original(terminal):
    original = financial(3000)
    assert terminal.transact(original)["39"] == "00"
    rev = reversal(original)
    answer = terminal.transact(rev)
    assert answer["t"] == "0410" and answer["39"] == "00"
    assert terminal.transact(dict(rev, t="0401"))["39"] == "00"
    assert terminal.transact(reversal(original))["39"] == "00"  # already reversed: 00 (section 6)
    unseen = financial(3100, terminal="DEMO0002")
    assert terminal.transact(reversal(unseen))["39"] == "00"  # never seen: 00
    assert terminal.transact(unseen)["39"] == "94"  # the late original (section 6.1)


def test_echo_sign_on_and_an_unknown_terminal(terminal):
    for code in ("301", "001", "002"):
        request = echo(code=code)
        answer = terminal.transact(request)
        assert (answer["t"], answer["39"], answer["70"], answer["11"]) == ("0810", "00", code, request["11"])
    assert terminal.transact(echo("XYZ00001"))["39"] == "03"
    assert terminal.transact(financial(1250, terminal="DEMO1000"))["39"] == "03"


def test_missing_mandatory_field_is_30_and_a_bad_card_number_14(t87):
    request = financial(1250)
    del request["22"]
    assert t87.transact(request)["39"] == "30"
    assert t87.transact(financial(1250, "4761739001010118"))["39"] == "14"
    assert t87.transact(financial(1250, "9761739001010118"))["39"] == "14"


# -- section 7: wallets and the acquirer that never answers -----------------------------------------

def wallet(code: str, amount: int = 1000, currency: str = "156", **extra) -> dict:
    return financial(amount, None, currency=currency, entry="031", **{"48": tags(BC=code)}, **extra)


def test_wallet_payment_codes_answer_by_their_last_two_digits(terminal):
    answer = terminal.transact(wallet("281234567890123499"))
    assert answer["39"] == "00" and tlv(answer["48"])["WT"]
    answer = terminal.transact(wallet("131234567890123499"))
    assert answer["39"] == "00" and tlv(answer["48"])["WT"]
    assert terminal.transact(wallet("101234567890123404"))["39"] == "51"
    assert terminal.transact(wallet("991234567890123499"))["39"] == "12"  # no wallet route
    # docs/terminal-interface.md section 7 (project addition): a card-scheme QR code goes to cup.
    assert terminal.transact(wallet("6212345678901234567"))["39"] == "00"
    assert terminal.transact(wallet("6212345678901234567", 1051))["39"] == "51"


def test_a_wallet_takes_purchases_in_its_currency_only(t87):
    """docs/terminal-interface.md section 7 (project addition): the sandbox wallets take 156."""
    assert t87.transact(wallet("281234567890123499", currency="978"))["39"] == "12"
    assert t87.transact(wallet("281234567890123499", pcode="200000"))["39"] == "12"


def test_the_customer_who_takes_seconds_and_the_acquirer_that_never_answers(sandbox):
    results = {}

    def run(name, doc):
        t = Terminal(sandbox["t87"])
        started = time.monotonic()
        try:
            results[name] = (t.transact(doc), time.monotonic() - started)
        finally:
            t.close()

    slow = wallet("281234567890123401")
    jobs = [threading.Thread(target=run, args=("wallet", slow)),
            threading.Thread(target=run, args=("card", financial(1068)))]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
    answer, took = results["wallet"]
    assert answer["39"] == "00" and tlv(answer["48"])["WT"] and 4 < took < 20
    answer, took = results["card"]
    assert answer["39"] == "68" and took < 30
    t = Terminal(sandbox["t87"])
    try:
        assert t.transact(slow) == results["wallet"][0]  # answered from the journal: no second payment
    finally:
        t.close()


# -- section 4.1: city cards ------------------------------------------------------------------------

def test_the_worked_example_of_section_4_1():
    assert city_mac("8800123456789015", "00001", "000000002500", "0000000001", DEMO) == "69C169C3"


def test_city_card_debit_replay_wrong_tac_overdraw_and_top_up(terminal):
    card = "88001234%08d" % random.randrange(10**8)
    serial = "0000000001"

    def cc(counter: int, amount: int, tac: str | None = None) -> str:
        n, a = "%05d" % counter, "%012d" % amount
        return n + "%012d" % 10000 + serial + (tac or city_mac(card, n, a, serial, DEMO))

    debit = financial(2500, card, currency="156", entry="071", **{"48": tags(CC=cc(1, 2500))})
    answer = terminal.transact(debit)
    assert answer["39"] == "00" and tlv(answer["48"])["CB"] == "%012d" % 7500
    assert_echoed(debit, answer)
    again = financial(2500, card, currency="156", entry="071", **{"48": tags(CC=cc(1, 2500))})
    assert terminal.transact(again)["39"] == "94"
    wrong = financial(100, card, currency="156", entry="071", **{"48": tags(CC=cc(2, 100, "00000000"))})
    assert terminal.transact(wrong)["39"] == "A0"
    over = financial(9000, card, currency="156", entry="071", **{"48": tags(CC=cc(3, 9000))})
    assert terminal.transact(over)["39"] == "51"
    m1 = city_mac(card, "00004", "%012d" % 2000, serial, DEMO, b"LOAD")
    topup = financial(2000, card, pcode="210000", currency="156", entry="071", **{"48": tags(CC=cc(4, 2000), M1=m1)})
    answer = terminal.transact(topup)
    assert answer["39"] == "00"
    assert tlv(answer["48"])["CB"] == "%012d" % 9500
    assert tlv(answer["48"])["M2"] == city_mac(card, "00004", "%012d" % 2000, serial, DEMO, b"OK")


# -- section 8: the DEMOSEC terminals with the public demo keys --------------------------------------

def session_keys(terminal: Terminal, tid: str, aes: bool) -> tuple[bytes, bytes]:
    """0800/101: TAK and TPK under the TMK (TDES-ECB; AES key wrap, RFC 3394), checked against CA/CP."""
    answer = terminal.transact(echo(tid, "101"))
    assert answer["39"] == "00" and "64" not in answer
    fields = tlv(answer["48"])
    if aes:
        tak, tpk = (keywrap.aes_key_unwrap(TMK_AES, bytes.fromhex(fields[t])) for t in ("TA", "TP"))
    else:
        tak, tpk = (_ecb(TMK_TDES, bytes.fromhex(fields[t]), decrypt=True) for t in ("TA", "TP"))
    assert (check_value(tak, aes), check_value(tpk, aes)) == (fields["CA"], fields["CP"])
    return tak, tpk


def secured(amount: int, tid: str, pan: str = VISA, **extra) -> dict:
    return financial(amount, pan, terminal=tid, merchant=SEC_MERCHANT, **extra)


def test_tdes_terminal_key_exchange_macd_pin_purchase_bad_mac_and_reversal(terminal):
    tid = "SEC00011" if terminal.mac_len == 8 else "SEC00012"
    tak, tpk = session_keys(terminal, tid, aes=False)
    request = secured(1250, tid, **{"52": _ecb(tpk, pin_block_0(PIN, VISA)).hex().upper()})
    answer, verified = terminal.macd(request, tak)
    assert answer["39"] == "00" and verified is True
    assert_echoed(request, answer)
    again, verified = terminal.macd(request, tak)  # a retransmission: the same answer, MACed again
    assert again["37"] == answer["37"] and verified is True
    wrong_pin = secured(1250, tid, **{"52": _ecb(tpk, pin_block_0("4321", VISA)).hex().upper()})
    answer, verified = terminal.macd(wrong_pin, tak)
    assert answer["39"] == "55" and verified is True
    answer, verified = terminal.macd(secured(1250, tid), tak, wrong=True)
    assert answer["39"] == "A0" and verified is None  # section 8: A0, unMACed
    answer = terminal.transact(secured(1250, tid))
    assert answer["39"] == "A0" and "64" not in answer
    answer, verified = terminal.macd(reversal(request), tak)  # field 90: a secondary bitmap, MAC in 128
    assert answer["t"] == "0410" and answer["39"] == "00" and verified is True
    answer, verified = terminal.macd(echo(tid), tak)
    assert answer["39"] == "00" and verified is True


def test_aes_terminal_format_4_pin_block_in_field_48_pb(terminal):
    tid = "SEC00111" if terminal.mac_len == 8 else "SEC00112"
    tak, tpk = session_keys(terminal, tid, aes=True)
    for pin, code in ((PIN, "00"), ("9999", "55")):
        request = secured(1250, tid, **{"48": tags(PB=pin_block_4(tpk, pin, VISA).hex().upper())})
        answer, verified = terminal.macd(request, tak, aes=True)
        assert answer["39"] == code and verified is True
    answer, verified = terminal.macd(secured(1250, tid), tak, aes=True, wrong=True)
    assert answer["39"] == "A0" and verified is None


def test_tdes_dukpt_terminal(terminal):
    tid = "SEC00211" if terminal.mac_len == 8 else "SEC00212"
    device = random.getrandbits(59) << 21  # KSN: key set and device, counter bits clear

    def purchase(counter: int, pin: str | None, amount: int = 990):
        ksn = "%020X" % (device | counter)
        key = dukpt_key(BDK, ksn)
        extra = {"48": tags(KS=ksn)}
        if pin:
            extra["52"] = _ecb(_xor(key, PIN_VARIANT), pin_block_0(pin, MASTERCARD)).hex().upper()
        request = secured(amount, tid, MASTERCARD, **extra)
        # Section 8: the answer is MACed under the same key as the request.
        return terminal.macd(request, _xor(key, MAC_REQUEST_VARIANT))

    answer, verified = purchase(1, PIN)
    assert answer["39"] == "00" and verified is True
    answer, verified = purchase(2, "4321")
    assert answer["39"] == "55" and verified is True
    answer, verified = purchase(2, None)  # a counter not above the highest seen: A0 (section 8.1)
    assert answer["39"] == "A0" and verified is None
    answer, verified = purchase(3, None)
    assert answer["39"] == "00" and verified is True


def test_the_x9_24_dukpt_test_vector():
    """ANSI X9.24-1:2009 annex A: the transaction key of the first KSN of its example."""
    assert dukpt_key(BDK, "FFFF9876543210E00001").hex().upper() == "042666B49184CFA368DE9628D0397BC9"


def test_the_readmes_pyiso8583_example_runs_again_with_another_amount(sandbox):
    """README "Quick start": the example as printed, then with the amount of its 51 line; each run
    is a new request (a new STAN and field 7), never a retransmission with other content (94)."""
    readme = (e2e.ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme.split("## Quick start: the sandbox")[1], re.S).group(1)
    code = code.replace("8583))", "%d))" % sandbox["t87"]).replace("print(", "answers.append(")
    for amount, expected in (("000000001250", "00"), ("000000001051", "51")):
        answers: list[dict] = []
        exec(code.replace("000000001250", amount), {"answers": answers})
        assert answers[0]["39"] == expected and answers[0]["4"] == amount


def test_sign_on_gives_keys_once_and_new_keys_are_pending_until_used(t87):
    """Section 8 and 8.1: a sign-on without keys gets keys; 0800/101 keys wait for their first use."""
    answer = t87.transact(echo("SEC00013", "001"))
    fields = tlv(answer["48"])
    old = _ecb(TMK_TDES, bytes.fromhex(fields["TA"]), decrypt=True)
    assert check_value(old, False) == fields["CA"]
    answer, verified = t87.macd(secured(1250, "SEC00013"), old)
    assert answer["39"] == "00" and verified is True
    assert "48" not in t87.transact(echo("SEC00013", "001"))  # it has keys now
    new, _ = session_keys(t87, "SEC00013", aes=False)
    answer, verified = t87.macd(secured(1250, "SEC00013"), old)
    assert answer["39"] == "00" and verified is True  # pending: the current keys still work
    answer, verified = t87.macd(echo("SEC00013"), old, wrong=True)
    assert answer["39"] == "A0" and verified is None
    answer, verified = t87.macd(secured(1250, "SEC00013"), new)
    assert answer["39"] == "00" and verified is True
    answer, verified = t87.macd(secured(1250, "SEC00013"), old)
    assert answer["39"] == "A0" and verified is None  # the new keys are current, the old ones refused
