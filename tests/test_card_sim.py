"""The simulated acquirer: decision rules as pure functions, and (with the codec) over TCP."""
import json
import random

import pytest

from adapters.card.hostlink import fields_view
from adapters.card.sim import (
    Ledger,
    Sandbox,
    build_parser,
    choose_fault,
    parse_original_data,
    sandbox_response_code,
)

ACQ = "12345678901"


@pytest.mark.parametrize("amount,rc", [
    ("000000001000", "00"), ("000000001005", "05"), ("000000001013", "13"),
    ("000000001051", "51"), ("000000000055", "55"), ("000000099996", "96"),
    ("000000001068", None), ("000000001099", "00"), ("000000000001", "00"), (None, "00"),
])
def test_sandbox_response_code(amount, rc):
    assert sandbox_response_code(amount) == rc


def auth(amount="000000001000", mti="0200", stan="000001", f7="1114221320", rrn="331822000001"):
    return fields_view({"mti": mti, 2: "4111111111111111", 3: "000000", 4: amount, 7: f7,
                        11: stan, 12: "221320", 13: "1114", 22: "051", 32: ACQ, 37: rrn,
                        41: "DEMO0001", 42: "DEMO00000000001", 49: "840",
                        52: b"\x00" * 8})


def test_approval_echoes_and_adds_auth_code():
    sb = Sandbox(seed=1)
    out, [event] = sb.handle(auth())
    assert out["mti"] == "0210" and out[39] == "00"
    assert len(out[38]) == 6 and out[38].isalnum()
    for f in (3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49):
        assert out[f] == auth().get(f)
    assert 2 not in out and 52 not in out
    assert event["event"] == "authorization" and event["response_code"] == "00"
    assert event["pan"] == "411111******1111" and event["amount"] == 1000 and event["answered"]


def test_approval_without_rrn_gets_one():
    sb = Sandbox(seed=1)
    msg = {"mti": "0100", 3: "000000", 4: "000000000100", 7: "1114221320", 11: "000009"}
    out, _ = sb.handle(fields_view(msg))
    assert out["mti"] == "0110" and len(out[37]) == 12 and out[39] == "00"


@pytest.mark.parametrize("rc", ["05", "13", "51", "55", "96"])
def test_declines_have_no_auth_code(rc):
    out, [event] = Sandbox().handle(auth(amount="0000000010" + rc))
    assert out[39] == rc and 38 not in out and event["response_code"] == rc


def test_68_is_never_answered_but_recorded():
    out, [event] = Sandbox().handle(auth(amount="000000001068"))
    assert out is None
    assert event["answered"] is False and event["response_code"] is None


def test_network_management():
    out, events = Sandbox().handle(fields_view({"mti": "0800", 7: "1114221320", 11: "000001", 70: "001"}))
    assert out == {"mti": "0810", 7: "1114221320", 11: "000001", 70: "001", 39: "00"}
    assert events == []


def test_completion_answers_00():
    f90 = "0100" "000001" "1114221320" + ACQ + "0" * 11
    msg = fields_view({"mti": "0220", 3: "000000", 4: "000000000900", 7: "1114221400",
                       11: "000002", 32: ACQ, 37: "331822000001", 90: f90})
    out, [event] = Sandbox().handle(msg)
    assert out["mti"] == "0230" and out[39] == "00"
    assert event["original_stan"] == "000001"


def reversal(stan="000001", f7="1114221320", rev_stan="000002", rrn="331822000001"):
    f90 = "0200" + stan + f7 + ACQ + "0" * 11
    return fields_view({"mti": "0400", 3: "000000", 4: "000000001068", 7: "1114221330",
                        11: rev_stan, 32: ACQ, 37: rrn, 41: "DEMO0001", 90: f90})


def test_parse_original_data():
    assert parse_original_data("0200" "000001" "1114221320" + ACQ + "0" * 11) == {
        "mti": "0200", "stan": "000001", "f7": "1114221320", "acquirer_id": ACQ}


def test_reversal_of_unanswered_authorization():
    sb = Sandbox()
    sb.handle(auth(amount="000000001068"))
    out, [event] = sb.handle(reversal())
    assert out["mti"] == "0410" and out[39] == "00"
    assert event["event"] == "reversal" and event["original_stan"] == "000001"
    assert event["original_found"] and event["original_response_code"] is None
    assert not event["repeat"]


def test_reversal_is_idempotent_and_unknown_originals_are_acknowledged():
    sb = Sandbox()
    out1, [e1] = sb.handle(reversal(stan="000500", rrn="000000000000"))
    out2, [e2] = sb.handle(reversal(stan="000500", rev_stan="000003", rrn="000000000000"))
    assert out1[39] == out2[39] == "00"
    assert not e1["original_found"] and not e1["repeat"] and e2["repeat"]


def test_reversal_found_by_rrn_when_stan_unknown():
    sb = Sandbox()
    sb.handle(auth(rrn="331822000077"))
    _, [event] = sb.handle(reversal(stan="999999", rrn="331822000077"))
    assert event["original_found"] and event["original_response_code"] == "00"


def test_choose_fault_rates():
    rng = random.Random(7)
    draws = [choose_fault(rng, 0.1, 0.05, 0.05) for _ in range(20_000)]
    share = {k: draws.count(k) / len(draws) for k in ("drop", "disconnect", "garbage", "answer")}
    assert abs(share["drop"] - 0.1) < 0.01
    assert abs(share["disconnect"] - 0.05) < 0.01
    assert abs(share["garbage"] - 0.05) < 0.01
    assert all(choose_fault(rng, 0, 0, 0) == "answer" for _ in range(100))


def test_ledger_appends_json_lines(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(str(path))
    ledger.write([{"event": "authorization", "stan": "000001"}])
    # flushed at once: readable before close
    assert json.loads(path.read_text().splitlines()[0])["stan"] == "000001"
    ledger.write([{"event": "reversal", "original_stan": "000001"}])
    ledger.close()
    assert len(path.read_text().splitlines()) == 2


def test_parser():
    args = build_parser().parse_args(["--port", "0", "--name", "bank-b", "--latency-ms", "5",
                                      "--drop-rate", "0.1", "--seed", "3", "--ledger", "x.jsonl"])
    assert (args.port, args.name, args.latency_ms, args.drop_rate, args.seed, args.ledger) == (
        0, "bank-b", 5.0, 0.1, 3, "x.jsonl")
    assert build_parser().parse_args([]).host == "127.0.0.1"


def test_simulator_process_over_tcp(tmp_path):
    """The simulator as `python -m adapters.card.sim`: sign-on, approve, decline, no answer,
    reversal; a ledger line per transaction; clean exit on SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from native.framing import Framer
    from native.iso8583 import dialect

    root = Path(__file__).resolve().parent.parent
    ledger = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.card.sim", "--port", "0", "--name", "bank-t",
         "--seed", "5", "--ledger", str(ledger)],
        cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        host = dialect("host-87-bcd")
        framer = Framer("binary2", max_frame=8192)
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            def send(fields):
                sock.sendall(framer.encode(host.encode(fields)))

            def receive():
                while True:
                    frames = framer.feed(sock.recv(65536))
                    if frames:
                        assert len(frames) == 1
                        return host.decode(frames[0])

            send({"mti": "0800", 7: "1124120000", 11: "000001", 70: "001"})
            signon = receive()
            assert signon.mti == "0810" and signon[39] == "00" and signon[70] == "001"

            base = {3: "000000", 7: "1124120001", 12: "120001", 13: "1124", 22: "051",
                    32: ACQ, 41: "DEMO0001", 42: "DEMO00000000001", 49: "840",
                    2: "4761739001010119", 52: b"\x01\x02\x03\x04\x05\x06\x07\x08"}
            send({"mti": "0200", **base, 4: "000000001000", 11: "000002", 37: "000000000002"})
            ok = receive()
            assert ok.mti == "0210" and ok[39] == "00" and len(ok[38]) == 6
            assert ok[11] == "000002" and ok[37] == "000000000002" and 2 not in ok and 52 not in ok

            send({"mti": "0200", **base, 4: "000000001068", 11: "000003", 37: "000000000003"})
            send({"mti": "0100", **base, 4: "000000001051", 11: "000004", 37: "000000000004"})
            declined = receive()  # the 68 is never answered: the next answer is the 0110
            assert declined.mti == "0110" and declined[39] == "51" and declined[11] == "000004"

            f90 = "0200" "000003" "1124120001" + ACQ + "0" * 11
            send({"mti": "0400", 3: "000000", 4: "000000001068", 7: "1124120002", 11: "000005",
                  32: ACQ, 37: "000000000003", 41: "DEMO0001", 42: "DEMO00000000001",
                  49: "840", 90: f90})
            reversed_ = receive()
            assert reversed_.mti == "0410" and reversed_[39] == "00"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        proc.stdout.close()
    events = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert [(e["event"], e["stan"], e["response_code"]) for e in events] == [
        ("authorization", "000002", "00"), ("authorization", "000003", None),
        ("authorization", "000004", "51"), ("reversal", "000005", "00")]
    assert events[3]["original_stan"] == "000003" and events[3]["original_found"]
    assert "4761739001010119" not in ledger.read_text()


def test_a_peer_going_away_inside_an_exception_group_is_not_a_failure():
    import trio

    from adapters.card.sim import _peer_went_away

    closed = (trio.BrokenResourceError, trio.ClosedResourceError)
    assert _peer_went_away(trio.BrokenResourceError(), closed)
    assert _peer_went_away(ExceptionGroup("x", [trio.ClosedResourceError(), trio.BrokenResourceError()]), closed)
    assert not _peer_went_away(ExceptionGroup("x", [trio.BrokenResourceError(), ValueError("bug")]), closed)
    assert not _peer_went_away(ValueError("bug"), closed)
