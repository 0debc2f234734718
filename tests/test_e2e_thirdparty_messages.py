"""End to end with pyiso8583 and plain sockets: every message of spec section 3, the repeats and
edge cases of 6.1, and the transport of section 1, on the terminal-87 and iso87-ascii listeners.

The sandbox and the client are those of test_e2e_thirdparty (the embedded default on free ports;
pyiso8583's ``default`` and ``default_ascii`` specs unchanged).  Every answer is checked as a
third-party client sees it: it decodes, and encoding the decoded fields again gives the very
bytes received (lengths and bitmaps as the spec builds them, a secondary bitmap only when a field
above 64 is present).
"""
from __future__ import annotations

import random
import socket
import struct

import iso8583
import pytest

from tests.test_e2e_thirdparty import (  # noqa: F401 (fixtures)
    ASCII, DEMO, DEMO_MERCHANT, MASTERCARD, Terminal, assert_echoed, city_mac, echo, financial, reversal, sandbox,
    stan, T87, tags, terminal, times, tlv, wallet,
)

pytestmark = pytest.mark.e2e


def strict(t: Terminal, raw: bytes) -> dict:
    """The answer as pyiso8583 decodes it, checked to be exactly what it would have encoded."""
    doc = iso8583.decode(raw, t.spec)[0]
    assert bytes(iso8583.encode(dict(doc), t.spec)[0]) == raw
    assert ("1" in doc) == any(int(k) > 64 for k in doc if k.isdigit() and k != "1")
    return doc


def ask(t: Terminal, doc: dict) -> dict:
    return strict(t, t.exchange(t.encode(doc)))


def completion(pre: dict, amount: int, **extra) -> dict:
    """Section 3: an 0220 naming its pre-authorization in field 90, the final amount in 4."""
    return {"t": "0220", "3": "000000", "4": "%012d" % amount, "11": stan(), "22": "051", "41": pre["41"],
            "42": pre["42"], "49": pre["49"], "90": "0100" + pre["11"] + pre["7"] + "0" * 22, **times(), **extra}


def settlement(tid: str) -> dict:
    return {"t": "0500", "3": "920000", "7": times()["7"], "11": stan(), "41": tid, "42": DEMO_MERCHANT,
            "74": "0" * 10, "76": "0" * 10, "86": "0" * 16, "88": "0" * 16}


def city_upload(card: str) -> dict:
    n, a, serial = "00001", "%012d" % 1500, "0000000001"
    cc = n + "%012d" % 10000 + serial + city_mac(card, n, a, serial, DEMO)
    return financial(1500, card, currency="156", entry="071", mti="0220", **{"48": tags(CC=cc)})


def test_every_message_of_section_3_and_its_repeat(terminal):
    """Each request, then its repeat (MTI ending in 1): the same 39, 38 and 37, the original's response MTI."""
    pre = financial(5000, mti="0100")
    card = "88001234%08d" % random.randrange(10**8)
    requests = [pre, financial(1250), financial(900, pcode="200000"), financial(0, pcode="310000"),
                completion(pre, 4000), city_upload(card)]
    for request in requests:
        answer = ask(terminal, request)
        assert answer["39"] == "00" and len(answer["38"]) == 6, (request["t"], request["3"], answer)
        assert_echoed(request, answer)
        repeat = ask(terminal, dict(request, t=request["t"][:3] + "1"))
        assert repeat["t"] == answer["t"]
        assert [repeat[f] for f in ("37", "38", "39")] == [answer[f] for f in ("37", "38", "39")]
    assert tlv(answer["48"])["CB"] == "%012d" % 8500  # the upload was debited once
    rev = reversal(requests[1])
    answer = ask(terminal, rev)
    assert answer["t"] == "0410" and answer["39"] == "00"
    assert_echoed(rev, answer)
    repeat = ask(terminal, dict(rev, t="0401"))
    assert (repeat["t"], repeat["37"], repeat["39"]) == ("0410", answer["37"], "00")
    answer = ask(terminal, settlement("DEMO0%03d" % random.randrange(600, 1000)))
    assert answer["t"] == "0510" and answer["39"] == "00"
    for code in ("001", "301", "002"):
        request = echo(code=code)
        answer = ask(terminal, request)
        assert (answer["t"], answer["39"], answer["70"], answer["11"]) == ("0810", "00", code, request["11"])


def test_a_repeat_of_an_unseen_original_is_that_original_and_a_repeat_in_flight_joins_it(terminal):
    """Section 6.1: a repeat whose original the switch never saw is handled as that original, one
    with other content gets 94; a repeat of a request still in flight is answered as it is."""
    for mti in ("0101", "0201"):
        request = financial(1250, mti=mti)
        answer = ask(terminal, request)
        assert (answer["t"], answer["39"]) == (mti[:2] + "10", "00") and len(answer["38"]) == 6
        assert ask(terminal, dict(request, **{"4": "%012d" % 1251}))["39"] == "94"
    pre = financial(5000, mti="0100")
    assert ask(terminal, pre)["39"] == "00"
    advice = completion(pre, 3000, t="0221")
    answer = ask(terminal, advice)
    assert (answer["t"], answer["39"]) == ("0230", "00")
    assert ask(terminal, dict(advice, t="0220"))["37"] == answer["37"]
    slow = wallet("281234567890123401")  # the customer confirms after about 6 s
    for doc in (slow, dict(slow, t="0201")):
        raw = terminal.encode(doc)
        terminal.sock.sendall(struct.pack(">H", len(raw)) + raw)
    answers = []
    for _ in range(2):
        (n,) = struct.unpack(">H", terminal._read(2))
        answers.append(strict(terminal, terminal._read(n)))
    assert [(a["t"], a["39"]) for a in answers] == [("0210", "00")] * 2
    assert answers[0]["37"] == answers[1]["37"] and answers[0]["38"] == answers[1]["38"]


def test_a_retransmission_of_each_message_gets_the_same_bytes(terminal):
    pre = financial(2000, mti="0100")
    purchase = financial(2100)
    for request in (pre, purchase, completion(pre, 1500), reversal(purchase),
                    settlement("DEMO0%03d" % random.randrange(600, 1000)), echo()):
        raw = terminal.encode(request)
        first = terminal.exchange(raw)
        assert terminal.exchange(raw) == first, request["t"]
        strict(terminal, first)


def test_completions_25_then_94_then_13(terminal):
    """Section 6.1: 13 over the pre-authorized amount, 25 for an unknown one or another card,
    94 for a second completion; where several apply the first of 25, 94, 13 wins."""
    done, open_ = financial(5000, mti="0100"), financial(5000, mti="0100")
    reversed_ = financial(5000, mti="0100")
    for pre in (done, open_, reversed_):
        assert ask(terminal, pre)["39"] == "00"
    assert ask(terminal, reversal(reversed_))["39"] == "00"
    assert ask(terminal, completion(done, 5000))["39"] == "00"
    unknown = dict(open_, **{"11": "%06d" % ((int(open_["11"]) + 500000) % 10**6)})
    cases = [
        (completion(open_, 5001), "13"),
        (completion(unknown, 4000), "25"),
        (completion(reversed_, 4000), "25"),
        (completion(open_, 6000, **{"2": MASTERCARD}), "25"),  # another card: 25 before 13
        (completion(done, 4000), "94"),
        (completion(done, 6000), "94"),  # 94 before 13
        (completion(done, 6000, **{"2": MASTERCARD}), "25"),  # 25 before 94
    ]
    for request, code in cases:
        answer = ask(terminal, request)
        assert answer["t"] == "0230" and answer["39"] == code and "38" not in answer, (request, answer)


def test_a_late_original_is_94_whatever_its_mti_and_the_mti_in_field_90(terminal):
    for mti, named in (("0200", "0100"), ("0201", "0200"), ("0100", "0200")):
        late = financial(3100, mti=mti, terminal="DEMO0%03d" % random.randrange(600, 1000))
        rev = reversal(late)
        rev["90"] = named + rev["90"][4:]
        assert ask(terminal, rev)["39"] == "00"
        answer = ask(terminal, late)
        assert answer["39"] == "94" and answer["t"] == mti[:2] + "10" and "38" not in answer


def test_refunds_of_the_demo_merchant_stop_at_100000(terminal):
    assert ask(terminal, financial(100000, pcode="200000"))["39"] == "00"
    answer = ask(terminal, financial(100001, pcode="200000"))
    assert answer["39"] == "58" and "38" not in answer


def test_pipelined_requests_are_answered_each_by_stan_out_of_order(terminal):
    """Section 1: many requests in flight on one connection; the slow wallet's answer comes last."""
    docs = [wallet("281234567890123401"), financial(1250), echo(), financial(1051, MASTERCARD)]
    terminal.sock.sendall(b"".join(struct.pack(">H", len(r)) + r for r in map(terminal.encode, docs)))
    answers = []
    for _ in docs:
        (n,) = struct.unpack(">H", terminal._read(2))
        answers.append(strict(terminal, terminal._read(n)))
    assert answers[-1]["11"] == docs[0]["11"]
    by_stan = {a["11"]: a for a in answers}
    assert [by_stan[d["11"]]["39"] for d in docs] == ["00", "00", "00", "51"]
    assert [by_stan[d["11"]]["t"] for d in docs] == ["0210", "0210", "0810", "0210"]


@pytest.mark.parametrize("slow", [False, True])
def test_a_terminal_that_half_closes_after_sending_gets_its_answers(sandbox, slow):
    for port, spec in ((sandbox["t87"], T87), (sandbox["ascii"], ASCII)):
        t = Terminal(port, spec)
        docs = [financial(1250), echo()] + ([wallet("281234567890123401")] if slow else [])
        t.sock.sendall(b"".join(struct.pack(">H", len(r)) + r for r in map(t.encode, docs))
                       + b"\x00\x40MTI")  # and a frame the EOF cuts short
        t.sock.shutdown(socket.SHUT_WR)
        answers = {}
        for _ in docs:
            (n,) = struct.unpack(">H", t._read(2))
            answer = strict(t, t._read(n))
            answers[answer["11"]] = answer["39"]
        assert answers == {d["11"]: "00" for d in docs}
        assert t.sock.recv(1) == b""  # then the switch closes
        t.close()
