"""The clearing-centre simulator: ledger rules (sans-I/O) and the process itself."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.citycard import crypto
from adapters.citycard.centre import DEMO_MK, Centre
from adapters.citycard.protocol import (
    Balance,
    Debit,
    FrameBuffer,
    Ledger,
    Load,
    Offline,
    ProtocolError,
    Response,
    Reverse,
    decode_request,
    decode_response,
    encode,
    request_id,
)

CARD = "8800123456789015"
BLACK = "8800000000000002"
TID = "DEMO0001"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def purse(cls=Debit, card=CARD, counter=1, amount=2500, serial=1, ref=None, tac=None, tid=TID, mk=DEMO_MK):
    counter5, serial10 = f"{counter:05d}", f"{serial:010d}"
    if tac is None:
        tac = crypto.tac(crypto.derive_dk(mk, card), card, counter5, f"{amount:012d}", serial10, tid)
    return cls(
        id=1, card=card, counter=counter5, amount=amount, serial=serial10, terminal_id=tid,
        merchant_id="DEMO00000000001", reported_balance=10_000, tac=tac,
        ref=ref or f"{cls.__name__}-{card}-{counter}",
    )


def load(card=CARD, counter=1, amount=5000, serial=1, ref=None, mac1=None):
    counter5, serial10 = f"{counter:05d}", f"{serial:010d}"
    fields = (card, counter5, f"{amount:012d}", serial10, TID)
    if mac1 is None:
        mac1 = crypto.mac1(crypto.derive_dk(DEMO_MK, card), *fields)
    return Load(
        id=1, card=card, counter=counter5, amount=amount, serial=serial10, terminal_id=TID,
        mac1=mac1, ref=ref or f"load-{card}-{counter}",
    )


@pytest.fixture
def centre():
    return Centre(blacklist=frozenset({BLACK}))


# -- ledger rules -----------------------------------------------------------------


def test_spec_example_debit_approved(centre):
    r = centre.handle(purse())
    assert (r.code, r.balance, r.ref) == ("00", 7500, f"Debit-{CARD}-1")
    assert r.auth and len(r.auth) == 6
    assert centre.debits == 2500 and centre.conserved()


def test_wrong_tac_a0_books_nothing(centre):
    r = centre.handle(purse(tac="69C169C4"))
    assert r.code == "A0"
    assert centre.accounts[CARD].balance == 10_000 and centre.accounts[CARD].last_counter == -1


def test_tac_from_other_mk_refused(centre):
    r = centre.handle(purse(mk=bytes(16)))
    assert r.code == "A0"


def test_replayed_counter_94(centre):
    assert centre.handle(purse(counter=5)).code == "00"
    assert centre.handle(purse(counter=5, ref="again")).code == "94"
    assert centre.handle(purse(counter=4, ref="older")).code == "94"
    assert centre.handle(purse(counter=6)).code == "00"
    assert centre.accounts[CARD].balance == 10_000 - 2 * 2500


def test_insufficient_funds_51(centre):
    r = centre.handle(purse(amount=10_001))
    assert (r.code, r.balance) == ("51", 10_000)
    # A refused counter is not spent.
    assert centre.handle(purse(amount=10_000, ref="exact")).code == "00"
    assert centre.accounts[CARD].balance == 0


def test_blacklisted_62(centre):
    assert centre.handle(purse(card=BLACK)).code == "62"
    assert centre.handle(load(card=BLACK)).code == "62"
    assert centre.handle(Balance(id=3, card=BLACK)).code == "62"


def test_card_outside_range_14(centre):
    assert centre.handle(purse(card="9900123456789015")).code == "14"
    assert centre.handle(purse(cls=Offline, card="9900123456789015")).code == "14"
    assert Centre(prefixes=()).handle(purse(card="9900123456789015")).code == "00"


def test_same_ref_same_content_answers_again_without_booking(centre):
    first = centre.handle(purse())
    again = centre.handle(msgspec.structs.replace(purse(), id=99))
    assert again.id == 99 and again.code == "00" and again.auth == first.auth
    assert centre.accounts[CARD].balance == 7500


def test_same_ref_other_content_94(centre):
    centre.handle(purse())
    assert centre.handle(purse(counter=2, ref=f"Debit-{CARD}-1")).code == "94"
    assert centre.accounts[CARD].balance == 7500


def test_load_returns_mac2_and_credits(centre):
    r = centre.handle(load(amount=5000))
    dk = crypto.derive_dk(DEMO_MK, CARD)
    assert (r.code, r.balance) == ("00", 15_000)
    assert r.mac2 == crypto.mac2(dk, CARD, "00001", "000000005000", "0000000001", TID)
    assert centre.loads == 5000 and centre.conserved()


def test_load_wrong_mac1_a0_and_replay_94(centre):
    assert centre.handle(load(mac1="00000000")).code == "A0"
    assert centre.handle(load(counter=3)).code == "00"
    assert centre.handle(load(counter=3, ref="x")).code == "94"
    assert centre.handle(purse(counter=2)).code == "94"  # counters are shared by debits and loads


def test_offline_upload_counted_once(centre):
    first = centre.handle(purse(cls=Offline, counter=7, ref="up-1"))
    second = centre.handle(purse(cls=Offline, counter=7, ref="up-2"))  # re-upload, new ref
    assert (first.code, second.code) == ("00", "00")
    assert centre.accounts[CARD].balance == 7500 and centre.debits == 2500


def test_offline_after_online_debit_of_same_counter_counted_once(centre):
    centre.handle(purse(counter=7))
    assert centre.handle(purse(cls=Offline, counter=7, ref="up")).code == "00"
    assert centre.accounts[CARD].balance == 7500


def test_a_counted_upload_answers_00_with_the_authorization_of_its_booking(centre):
    # Spec 3: an approval carries field 38; a duplicate record is the booking it duplicates.
    debit = centre.handle(purse(counter=6))
    first = centre.handle(purse(cls=Offline, counter=7, ref="up-1"))
    again = centre.handle(purse(cls=Offline, counter=7, ref="up-2"))
    after_debit = centre.handle(purse(cls=Offline, counter=6, ref="up-3"))
    assert (again.code, again.auth) == ("00", first.auth) and len(first.auth) == 6
    assert (after_debit.code, after_debit.auth) == ("00", debit.auth)
    centre.handle(purse(counter=8))
    assert centre.handle(Reverse(id=1, ref=purse(counter=8).ref)).code == "00"
    rebooked = centre.handle(purse(cls=Offline, counter=8, ref="up-4"))  # booked again, a new authorization
    assert rebooked.code == "00" and rebooked.auth not in (None, debit.auth)


def test_offline_same_counter_other_content_94(centre):
    centre.handle(purse(cls=Offline, counter=7, ref="a"))
    assert centre.handle(purse(cls=Offline, counter=7, amount=100, ref="b")).code == "94"


def test_offline_ignores_counter_order_and_funds_but_checks_tac(centre):
    centre.handle(purse(counter=9))
    assert centre.handle(purse(cls=Offline, counter=8, amount=9000)).code == "00"  # uploaded late
    assert centre.accounts[CARD].balance == 10_000 - 2500 - 9000  # below zero: the card already paid
    assert centre.handle(purse(cls=Offline, counter=10, tac="00000000")).code == "A0"
    assert centre.handle(purse(counter=9, ref="r")).code == "94"
    assert centre.conserved()


def test_offline_advances_last_counter(centre):
    centre.handle(purse(cls=Offline, counter=20))
    assert centre.handle(purse(counter=15)).code == "94"


def test_reverse_debit_restores_once(centre):
    centre.handle(purse())
    for _ in range(3):
        r = centre.handle(Reverse(id=4, ref=f"Debit-{CARD}-1"))
        assert (r.code, r.balance) == ("00", 10_000)
    assert centre.debits == 0 and centre.conserved()
    # The counter stays spent.
    assert centre.handle(purse(ref="retry")).code == "94"


def test_reverse_load_debits_back(centre):
    centre.handle(load(amount=5000))
    assert centre.handle(Reverse(id=4, ref=f"load-{CARD}-1")).balance == 10_000
    assert centre.loads == 0 and centre.conserved()


def test_a_top_up_beyond_the_most_a_card_holds_is_13_and_books_nothing(centre):
    # CB and CC carry 12 digits: a balance beyond them could be told to no terminal.
    most = centre.max_balance
    assert most == 999_999_999_999
    r = centre.handle(load(counter=1, amount=most - 10_000))
    assert (r.code, r.balance) == ("00", most)
    r = centre.handle(load(counter=2, amount=1))
    assert (r.code, r.balance, r.mac2, r.auth) == ("13", most, None, None)
    assert centre.loads == most - 10_000 and centre.conserved()
    assert centre.handle(purse(counter=2, amount=100)).code == "00"  # the refusal spent no counter
    small = Centre(max_balance=15_000)
    assert small.handle(load(counter=1, amount=5001)).code == "13"
    assert small.handle(load(counter=2, amount=5000)).code == "00"


def test_a_top_up_the_card_has_spent_since_is_not_reversed(centre):
    # The card got MAC2 and credited itself, spent the money, then the terminal sent an 0400.
    centre.handle(load(counter=1, amount=20_000))
    centre.handle(purse(counter=2, amount=29_000))
    for _ in range(2):
        r = centre.handle(Reverse(id=4, ref=f"load-{CARD}-1"))
        assert (r.code, r.balance, r.ref) == ("51", 1_000, f"load-{CARD}-1")
    assert centre.accounts[CARD].balance == 1_000 and centre.loads == 20_000 and centre.conserved()
    # One it has not spent (never credited: no MAC2) is reversed, down to zero.
    centre.handle(load(counter=3, amount=1_000))
    assert centre.handle(Reverse(id=5, ref=f"load-{CARD}-3")).code == "00"
    centre.handle(load(counter=4, amount=1_000))
    centre.handle(purse(counter=5, amount=1_000))
    assert centre.handle(Reverse(id=6, ref=f"load-{CARD}-4")).balance == 0


def test_a_debit_the_card_also_uploaded_is_not_undone_by_its_reversal(centre):
    # The terminal got no answer to its online debit (the switch reverses it) and
    # uploaded the card's record of it; the upload came first.
    assert centre.handle(purse(counter=3, ref="online")).code == "00"
    assert centre.handle(purse(cls=Offline, counter=3, ref="upload")).code == "00"
    r = centre.handle(Reverse(id=4, ref="online"))
    assert (r.code, r.balance) == ("00", 7500)
    assert centre.debits == 2500 and centre.conserved()
    # A debit reversed before its upload: the upload books it again.
    centre.handle(purse(counter=4, ref="online-2"))
    centre.handle(Reverse(id=5, ref="online-2"))
    assert centre.handle(purse(cls=Offline, counter=4, ref="upload-2")).balance == 5000


def test_reverse_offline_lets_a_reupload_book_again(centre):
    centre.handle(purse(cls=Offline, counter=7, ref="a"))
    centre.handle(Reverse(id=4, ref="a"))
    assert centre.accounts[CARD].balance == 10_000
    assert centre.handle(purse(cls=Offline, counter=7, ref="b")).code == "00"
    assert centre.accounts[CARD].balance == 7500


def test_reverse_declined_or_unknown_is_00_and_books_nothing(centre):
    centre.handle(purse(amount=20_000, ref="big"))
    assert centre.handle(Reverse(id=4, ref="big")).code == "00"
    assert centre.handle(Reverse(id=5, ref="never-seen")).code == "00"
    assert centre.accounts[CARD].balance == 10_000 and centre.conserved()


def test_original_after_its_reversal_is_refused(centre):
    centre.handle(Reverse(id=4, ref="late"))
    assert centre.handle(purse(ref="late")).code == "94"
    assert centre.handle(Balance(id=3, card=CARD)).balance == 10_000


def test_balance_inquiry(centre):
    assert centre.handle(Balance(id=3, card=CARD)).balance == 10_000
    assert CARD not in centre.accounts  # an inquiry opens nothing
    centre.handle(purse())
    r = centre.handle(Balance(id=3, card=CARD))
    assert (r.id, r.code, r.balance) == (3, "00", 7500)


def test_ledger_pages_and_totals(centre):
    cards = [f"88000000000000{i:02d}" for i in range(10, 15)]
    for card in cards:
        centre.handle(purse(card=card, amount=100))
    first = centre.handle(Ledger(id=1, limit=3)).ledger
    assert list(first.balances) == cards[:3] and first.more
    rest = centre.handle(Ledger(id=2, after=cards[2], limit=3)).ledger
    assert list(rest.balances) == cards[3:] and not rest.more
    assert first.issued == 50_000 and first.debits == 500 and first.balance_total == 49_500


ops = st.one_of(
    st.tuples(st.just("debit"), st.integers(0, 3), st.integers(1, 12), st.integers(1, 6000), st.booleans()),
    st.tuples(st.just("offline"), st.integers(0, 3), st.integers(1, 12), st.integers(1, 6000), st.booleans()),
    st.tuples(st.just("load"), st.integers(0, 3), st.integers(1, 12), st.integers(1, 6000), st.booleans()),
    st.tuples(st.just("reverse"), st.integers(0, 3), st.integers(1, 12), st.integers(1, 6000), st.booleans()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=30))
def test_money_is_conserved(steps):
    centre = Centre(blacklist=frozenset({"8800000000000003"}))
    refs: list[str] = []
    for op, c, counter, amount, good in steps:
        card = f"880000000000000{c}"
        ref = f"{op}-{len(refs)}"
        if op == "reverse":
            centre.handle(Reverse(id=1, ref=refs[counter % len(refs)] if refs else "none"))
        elif op == "load":
            centre.handle(load(card=card, counter=counter, amount=amount, ref=ref, mac1=None if good else "12345678"))
        else:
            cls = Debit if op == "debit" else Offline
            centre.handle(purse(cls=cls, card=card, counter=counter, amount=amount, ref=ref,
                                tac=None if good else "12345678"))
        refs.append(ref)
        assert centre.conserved()
    page = centre.handle(Ledger(id=1)).ledger
    assert page.balance_total + page.debits - page.loads == page.issued


# -- protocol -------------------------------------------------------------------------


def test_frames_whole_bytewise_and_with_trailing_bytes():
    messages = [purse(), Balance(id=2, card=CARD), Reverse(id=3, ref="x")]
    stream = b"".join(encode(m) for m in messages)
    whole = FrameBuffer().feed(stream)
    buf = FrameBuffer()
    bytewise = [f for i in range(len(stream)) for f in buf.feed(stream[i : i + 1])]
    assert whole == bytewise and [decode_request(f) for f in whole] == messages
    buf = FrameBuffer()
    assert buf.feed(stream + b"\x00\x10{") == whole and buf.pending == 3


def test_empty_frame_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(b"\x00\x00")


def test_request_decoding_is_strict():
    good = msgspec.json.decode(encode(purse())[2:])
    for change in ({"counter": "1"}, {"amount": "2500"}, {"amount": 0}, {"tac": "XYZ"}, {"extra": 1},
                   {"terminal_id": "DEMO1"}, {"op": "refund"}):
        with pytest.raises(msgspec.ValidationError):
            decode_request(msgspec.json.encode({**good, **change}))
    assert request_id(msgspec.json.encode({**good, "op": "refund"})) == 1
    assert request_id(b"[1]") is None and request_id(b"{") is None
    with pytest.raises(ProtocolError):
        decode_response(b'{"id": 1}')
    assert decode_response(b'{"id":1,"code":"00"}') == Response(id=1, code="00")


def test_the_centre_logs_a_card_number_masked_as_the_switch_masks_a_pan(centre, caplog):
    """First 6 and last 4 (switch.core.messages.mask_pan), the one rule for every card number shown."""
    caplog.set_level(logging.DEBUG, logger="payswitch.citycard.centre")
    centre.handle(purse(ref="r-1"))
    centre.handle(purse(cls=Offline, card=BLACK, ref="r-2"))
    assert "debit card 880012******9015 counter 00001" in caplog.text
    assert "offline advice from blacklisted card 880000******0002 booked" in caplog.text
    assert CARD not in caplog.text and BLACK not in caplog.text


# -- the process ----------------------------------------------------------------------


def start_sim(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.citycard.sim", "--port", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(line.rsplit(":", 1)[1])


def exchange(sock: socket.socket, data: bytes, count: int) -> list[Response]:
    sock.sendall(data)
    frames, buf = [], FrameBuffer()
    deadline = time.monotonic() + 5
    while len(frames) < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        frames += buf.feed(chunk)
    return [decode_response(f) for f in frames]


def test_sim_process_answers_refuses_and_exits_cleanly():
    proc, port = start_sim("--blacklist", BLACK, "--latency-ms", "20")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            bad = msgspec.json.encode({"id": 9, "op": "debit", "card": CARD})
            batch = (
                encode(Balance(id=7, card=CARD))
                + encode(msgspec.structs.replace(purse(card=BLACK), id=8))
                + len(bad).to_bytes(2, "big")
                + bad
            )
            answers = {r.id: r.code for r in exchange(sock, batch, 3)}
            assert answers == {7: "00", 8: "62", 9: "30"}
            # Not JSON with an id: the connection is closed, the server lives on.
            sock.sendall(b"\x00\x03abc")
            assert sock.recv(100) == b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert exchange(sock, encode(Balance(id=1, card=CARD)), 1)[0].code == "00"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_sim_takes_the_most_a_card_holds():
    from adapters.citycard.sim import build_parser

    assert build_parser().parse_args([]).max_balance == 999_999_999_999
    assert build_parser().parse_args(["--max-balance", "50000"]).max_balance == 50_000


def test_sim_rejects_bad_mk():
    out = subprocess.run(
        [sys.executable, "-m", "adapters.citycard.sim", "--mk", "00"], cwd=ROOT, capture_output=True, text=True,
        timeout=10,
    )
    assert out.returncode == 2 and "MK must be 16 bytes" in out.stderr
