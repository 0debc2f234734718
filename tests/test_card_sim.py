"""The simulated acquirer: decision rules as pure functions, and (with the codec) over TCP."""
import json
import random

import pytest

from adapters.card.hostlink import fields_view
from switch.security import pinblock
from switch.security import sandbox as sandbox_keys
from adapters.card.sim import (
    Ledger,
    Sandbox,
    build_parser,
    choose_fault,
    ledger_balances,
    parse_original_data,
    sandbox_response_code,
)

ACQ = "10000000042"  # field 32; no "1234" in it, the sandbox PIN a ledger event must never hold
PAN = "4111111111111111"
ZPK_A = bytes.fromhex(sandbox_keys.ZPKS["bank-a"])
GOOD_PIN = pinblock.encipher(ZPK_A, "tdes", 0, "1234", PAN)  # spec 7: 1234 is right for every card


@pytest.mark.parametrize("amount,rc", [
    ("000000001000", "00"), ("000000001005", "05"), ("000000001013", "13"),
    ("000000001051", "51"), ("000000000055", "55"), ("000000099996", "96"),
    ("000000001068", None), ("000000001099", "00"), ("000000000001", "00"), (None, "00"),
])
def test_sandbox_response_code(amount, rc):
    assert sandbox_response_code(amount) == rc


def auth(amount="000000001000", mti="0200", stan="000001", f7="1114221320", rrn="331822000001", pin=GOOD_PIN):
    msg = {"mti": mti, 2: PAN, 3: "000000", 4: amount, 7: f7,
           11: stan, 12: "221320", 13: "1114", 22: "051", 32: ACQ, 37: rrn,
           41: "DEMO0001", 42: "DEMO00000000001", 49: "840"}
    if pin is not None:
        msg[52] = pin
    return fields_view(msg)


@pytest.mark.parametrize("pin, rc, verdict", [
    (GOOD_PIN, "00", "ok"),
    (pinblock.encipher(ZPK_A, "tdes", 3, "1234", PAN), "00", "ok"),
    (pinblock.encipher(ZPK_A, "tdes", 0, "4321", PAN), "55", "wrong"),
    (pinblock.encipher(bytes.fromhex(sandbox_keys.ZPKS["bank-b"]), "tdes", 0, "1234", PAN), "55", "invalid"),
    (b"\x00" * 8, "55", "invalid"),
    (None, "00", None),
])
def test_sandbox_checks_the_pin_under_its_zpk_s7(pin, rc, verdict):
    out, [event] = Sandbox(seed=1).handle(auth(pin=pin))
    assert out[39] == rc and event.get("pin") == verdict
    assert (38 in out) == (rc == "00") and event["delta"] == (1000 if rc == "00" else 0)
    if pin is not None:
        assert pin.hex() not in json.dumps(event) and "1234" not in json.dumps(event)


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


def completion(amount="000000000900", stan="000002", pre_stan="000001", pre_f7="1114221320", pan=None):
    f90 = "0100" + pre_stan + pre_f7 + ACQ + "0" * 11
    extra = {2: pan} if pan else {}
    return fields_view({"mti": "0220", 3: "000000", 4: amount, 7: "1114221400",
                        11: stan, 32: ACQ, 37: "331822000001", 90: f90, **extra})


def test_lenient_completion_answers_00_to_anything():
    out, [event] = Sandbox(strict=False).handle(completion())
    assert out["mti"] == "0230" and out[39] == "00"
    assert event["original_stan"] == "000001" and not event["original_found"]


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
    assert out["mti"] == "0410" and out[39] == "00" and event["delta"] == 0
    assert event["event"] == "reversal" and event["original_stan"] == "000001"
    assert event["original_found"] and event["original_response_code"] is None
    assert not event["repeat"]


def test_lenient_reversal_is_idempotent_and_unknown_originals_are_acknowledged():
    sb = Sandbox(strict=False)
    out1, [e1] = sb.handle(reversal(stan="000500", rrn="000000000000"))
    out2, [e2] = sb.handle(reversal(stan="000500", rev_stan="000003", rrn="000000000000"))
    assert out1[39] == out2[39] == "00"
    assert not e1["original_found"] and not e1["repeat"] and e2["repeat"]


def test_lenient_reversal_found_by_rrn_when_stan_unknown():
    sb = Sandbox(strict=False)
    sb.handle(auth(rrn="331822000077"))
    _, [event] = sb.handle(reversal(stan="999999", rrn="331822000077"))
    assert event["original_found"] and event["original_response_code"] == "00"
    assert sb.balance("4111111111111111") == 0


def test_strict_reversal_never_matches_by_rrn():
    sb = Sandbox()
    sb.handle(auth(rrn="331822000077"))
    out, [event] = sb.handle(reversal(stan="999999", rrn="331822000077"))
    assert out[39] == "25" and not event["original_found"] and event["delta"] == 0
    assert sb.balance("4111111111111111") == 1000


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


@pytest.mark.parametrize("fast", [False, True], ids=["trio", "fast"])
def test_simulator_process_over_tcp(tmp_path, fast):
    """The simulator as `python -m adapters.card.sim` (on trio, or --fast on uvloop): sign-on,
    approve, decline, no answer, reversal; a ledger line per transaction; clean exit on SIGTERM."""
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
         "--seed", "5", "--ledger", str(ledger)] + (["--fast"] if fast else []),
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
                    2: "4761739001010119"}  # no PIN: "bank-t" has no sandbox ZPK
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


# -- strict acquirer: field 90 only, 25 for unknown originals, money per card --------

PAN = "4111111111111111"
OTHER = "5500000000000004"


def advice(mti="0420", stan="000001", f7="1114221320", orig_mti="0200", rev_stan="000002",
           rev_f7="1114221330", acq=ACQ, amount="000000001000"):
    f90 = orig_mti + stan + f7 + acq.rjust(11, "0") + "0" * 11
    return fields_view({"mti": mti, 2: PAN, 3: "000000", 4: amount, 7: rev_f7,
                        11: rev_stan, 32: ACQ, 37: "331822000001", 41: "DEMO0001", 90: f90})


def test_strict_reversal_advice_undoes_the_approval_once():
    sb = Sandbox()
    sb.handle(auth())
    assert sb.balance(PAN) == 1000
    out, [first] = sb.handle(advice())
    assert out["mti"] == "0430" and out[39] == "00" and out[11] == "000002"
    assert first["delta"] == -1000 and first["original_found"] and not first["repeat"]
    assert sb.balance(PAN) == 0
    # the repeat (0421, same STAN and field 7) is answered 0430 00 and moves nothing
    out, [again] = sb.handle(advice(mti="0421"))
    assert out["mti"] == "0430" and out[39] == "00"
    assert again["delta"] == 0 and again["repeat"]
    # a second, fresh 0420 for the same original moves nothing either
    _, [third] = sb.handle(advice(rev_stan="000003"))
    assert third["delta"] == 0 and sb.balance(PAN) == 0


def test_a_refund_gives_the_card_money_back_and_its_reversal_takes_it_again():
    # The ledger says what the acquirer holds per card: a refund (processing code 20)
    # credits the card, it is not a second charge.
    sb = Sandbox()
    sb.handle(auth())
    refund = fields_view({"mti": "0200", **auth(stan="000005", amount="000000000300").fields(), 3: "200000"})
    out, [event] = sb.handle(refund)
    assert out[39] == "00" and event["delta"] == -300 and sb.balance(PAN) == 700
    _, [rev] = sb.handle(advice(stan="000005", amount="000000000300"))
    assert rev["delta"] == 300 and sb.balance(PAN) == 1000
    assert ledger_balances([event, rev]) == {event["card"]: 0}


@pytest.mark.parametrize("change", [
    {"stan": "000009"}, {"f7": "1114221321"}, {"orig_mti": "0100"}, {"acq": "99"},
])
def test_strict_reversal_of_an_unknown_original_is_25(change):
    sb = Sandbox()
    sb.handle(auth())
    out, [event] = sb.handle(advice(**change))
    assert out["mti"] == "0430" and out[39] == "25"
    assert not event["original_found"] and event["delta"] == 0
    assert sb.balance(PAN) == 1000


def test_strict_reversal_that_overtook_its_original_finds_it_on_repeat():
    sb = Sandbox()
    out, _ = sb.handle(advice())
    assert out[39] == "25"
    sb.handle(auth())  # the original arrives late, and is approved
    out, [event] = sb.handle(advice(mti="0421"))
    assert out[39] == "00" and event["delta"] == -1000 and event["repeat"]
    assert sb.balance(PAN) == 0


def test_strict_reversal_of_a_decline_moves_nothing():
    sb = Sandbox()
    sb.handle(auth(amount="000000001051"))
    out, [event] = sb.handle(advice(amount="000000001051"))
    assert out[39] == "00" and event["delta"] == 0 and event["original_response_code"] == "51"
    assert sb.balance(PAN) == 0


def preauth(sb, amount="000000002500"):
    out, _ = sb.handle(auth(amount=amount, mti="0100"))
    assert out[39] == "00"


def test_strict_completion_within_the_preauthorization():
    sb = Sandbox()
    preauth(sb)
    assert sb.balance(PAN) == 2500
    out, [event] = sb.handle(completion(amount="000000002000"))
    assert out["mti"] == "0230" and out[39] == "00"
    assert event["original_found"] and event["delta"] == -500 and event["card"] == sb.handle(auth())[1][0]["card"]
    assert sb.balance(PAN) == 2000 + 1000  # the completion, and the 0200 just above


def test_strict_completion_at_most_once_and_repeat_gets_its_answer():
    sb = Sandbox()
    preauth(sb)
    out, _ = sb.handle(completion(amount="000000002500"))
    assert out[39] == "00"
    out, [repeat] = sb.handle(completion(amount="000000002500"))  # the same 0220 again
    assert out[39] == "00" and repeat["repeat"] and repeat["delta"] == 0
    out, [second] = sb.handle(completion(amount="000000900000", stan="000003"))
    assert out[39] == "94" and second["delta"] == 0
    assert sb.balance(PAN) == 2500


@pytest.mark.parametrize("msg,rc", [
    (lambda: completion(amount="000000002501"), "13"),
    (lambda: completion(pre_stan="000077"), "25"),
    (lambda: completion(pan=OTHER), "12"),
])
def test_strict_completion_refused(msg, rc):
    sb = Sandbox()
    preauth(sb)
    out, [event] = sb.handle(msg())
    assert out[39] == rc and event["delta"] == 0
    assert sb.balance(PAN) == 2500


def test_strict_completion_of_a_reversed_or_declined_preauthorization():
    sb = Sandbox()
    preauth(sb)
    sb.handle(advice(orig_mti="0100", amount="000000002500"))
    assert sb.handle(completion())[0][39] == "12"
    sb2 = Sandbox()
    sb2.handle(auth(amount="000000002551", mti="0100"))
    assert sb2.handle(completion())[0][39] == "12"


def test_reversal_of_a_completion_gives_back_the_completed_amount():
    sb = Sandbox()
    preauth(sb)
    sb.handle(completion(amount="000000002000"))
    f90 = "0220" "000002" "1114221400" + ACQ + "0" * 11
    out, [event] = sb.handle(fields_view({"mti": "0420", 4: "000000002000", 7: "1114221500",
                                          11: "000009", 32: ACQ, 37: "331822000001", 90: f90}))
    assert out[39] == "00" and event["delta"] == -2000
    assert sb.balance(PAN) == 0


def completion_reversal(stan="000002", rev_stan="000009", mti="0420"):
    f90 = "0220" + stan + "1114221400" + ACQ + "0" * 11
    return fields_view({"mti": mti, 4: "000000002000", 7: "1114221500",
                        11: rev_stan, 32: ACQ, 37: "331822000001", 90: f90})


def test_a_reversed_completion_reopens_its_preauthorization():
    # The switch reverses a completion whose answer came late and forwards the
    # terminal's next one (spec 6.1): a bank host then completes it.
    sb = Sandbox()
    preauth(sb)
    assert sb.handle(completion(amount="000000002000"))[0][39] == "00"
    assert sb.handle(completion_reversal())[0][39] == "00"
    out, [event] = sb.handle(completion(amount="000000002000", stan="000003"))
    assert out[39] == "00" and event["delta"] == 2000 and not event["repeat"]
    assert sb.balance(PAN) == 2000
    # completed once more: a third completion is 94, the repeat of the reversal moves nothing
    assert sb.handle(completion(amount="000000000100", stan="000004"))[0][39] == "94"
    _, [again] = sb.handle(completion_reversal(mti="0421"))
    assert again["repeat"] and again["delta"] == 0
    assert sb.handle(completion(amount="000000000100", stan="000005"))[0][39] == "94"
    assert sb.balance(PAN) == 2000


def test_a_restarted_simulator_knows_a_reversed_completion_reopened_its_preauthorization():
    sb = Sandbox()
    events = []
    for msg in (auth(amount="000000002500", mti="0100"), completion(amount="000000002000"), completion_reversal()):
        events += sb.handle(msg)[1]
    again = Sandbox()
    again.replay(events)
    out, _ = again.handle(completion(amount="000000002000", stan="000003"))
    assert out[39] == "00" and again.balance(PAN) == 2000


def test_ledger_balances_match_the_sandbox_and_hold_no_pan():
    from adapters.card.sim import ledger_balances

    sb = Sandbox()
    events = []
    for msg in (auth(), auth(stan="000002", amount="000000000700"),
                fields_view({**{k: auth().get(k) for k in (3, 4, 7, 32, 37, 41, 42, 49)},
                             "mti": "0200", 11: "000003", 2: OTHER}),
                advice(), advice(mti="0421"), advice(stan="000404")):
        events += sb.handle(msg)[1]
    assert sb.balance(PAN) == 700 and sb.balance(OTHER) == 1000
    assert ledger_balances(events) == sb.balances()
    text = json.dumps(events)
    assert PAN not in text and OTHER not in text
    assert all(e["card"].startswith(("411111******1111#", "550000******0004#")) for e in events)


def test_track2_only_authorization_names_the_card():
    sb = Sandbox()
    msg = {k: auth().get(k) for k in (3, 4, 7, 11, 32, 37, 41, 42, 49)}
    sb.handle(fields_view({"mti": "0200", **msg, 35: PAN + "=2812101"}))
    assert sb.balance(PAN) == 1000


def test_sim_network_request_and_answers_to_our_0800():
    sb = Sandbox()
    a = sb.network_request("002", "1114221320")
    b = sb.network_request("002", "1114221321")
    assert a["mti"] == "0800" and a[70] == "002" and a[11] != b[11]
    assert sb.handle(fields_view({"mti": "0810", 11: a[11], 39: "00", 70: "002"})) == (None, [])


def test_parser_new_knobs():
    args = build_parser().parse_args(["--lenient", "--late-ms", "500", "--late-rate", "0.2",
                                      "--sign-off-after", "3", "--stall-after-echo"])
    assert (args.lenient, args.late_ms, args.late_rate, args.sign_off_after, args.stall_after_echo) == (
        True, 500.0, 0.2, 3, True)
    defaults = build_parser().parse_args([])
    assert not defaults.lenient and not defaults.stall_after_echo and defaults.sign_off_after == 0


@pytest.mark.parametrize("argv,complaint", [
    (["--late-rate", "0.5"], "--late-rate needs --late-ms"),
    (["--late-ms", "100", "--late-rate", "1.5"], "--late-rate must be between 0 and 1"),
    (["--sign-off-after", "-1"], "--sign-off-after must be >= 0"),
])
def test_bad_knobs_are_refused(argv, complaint, capsys):
    from adapters.card.sim import main

    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


def test_a_restarted_simulator_takes_back_its_ledger_and_reverses_what_it_approved_before(tmp_path):
    # A bank's host remembers its authorizations across a restart: the
    # switch's 0420 for one approved before it (the switch killed with its
    # sandbox simulators, say) is 00 with the money given back, not 25.
    from adapters.card.card_names import ledger_key, use_key

    path = str(tmp_path / "bank-a.ledger")
    use_key(ledger_key(path))  # card names as the simulator with --ledger makes them (HMAC under FILE.key)
    first = Ledger(path)
    sb = Sandbox()
    for msg in (auth(), auth(stan="000005", amount="000000000700"), advice(stan="000005", rev_stan="000006", amount="000000000700")):
        first.write(sb.handle(msg)[1])
    preauth_msg = auth(amount="000000002500", mti="0100", stan="000007")
    first.write(sb.handle(preauth_msg)[1])
    first.write(sb.handle(completion(amount="000000002000", stan="000008", pre_stan="000007"))[1])
    first.close()
    with open(path, "a") as f:
        f.write('{"event":"authoriz')  # the last line, cut short when the process died
    balance = sb.balance(PAN)

    again = Sandbox()
    assert again.replay(Ledger.events(path)) == 5
    assert again.balance(PAN) == balance == 1000 + 2000
    out, [event] = again.handle(advice())
    assert out[39] == "00" and event["original_found"] and event["delta"] == -1000
    # a repeat of the reversal made before the restart is a repeat and moves nothing
    out, [event] = again.handle(advice(mti="0421", stan="000005", rev_stan="000006", amount="000000000700"))
    assert out[39] == "00" and event["repeat"] and event["delta"] == 0
    # the completed pre-authorization stays completed
    out, _ = again.handle(completion(amount="000000000100", stan="000009", pre_stan="000007"))
    assert out[39] == "94"
    assert again.balance(PAN) == 2000

    # The process: started on the same ledger, it reads it back and appends after the cut line.
    sim = build_parser().parse_args(["--ledger", path])
    from adapters.card.sim import SimulatedAcquirer

    acq = SimulatedAcquirer(sim)
    assert acq.sandbox.balance(PAN) == 3000
    acq.ledger.write(acq.sandbox.handle(advice())[1])
    acq.ledger.close()
    assert Ledger.events(path)[-1]["delta"] == -1000
    use_key(None)


def test_bank_codes_are_answered_only_when_asked_for():
    assert sandbox_response_code("000000001054") == "00"  # section 7 as the spec has it
    assert sandbox_response_code("000000001054", bank_codes=True) == "54"
    assert sandbox_response_code("000000001005", bank_codes=True) == "05"
    assert build_parser().parse_args(["--bank-codes"]).bank_codes is True
    assert build_parser().parse_args([]).bank_codes is False


def test_the_sandbox_approves_half_for_10_and_a_reversal_gives_it_back():
    sb = Sandbox("bank-a", seed=1, bank_codes=True)
    out, [event] = sb.handle(auth(amount="000000001010", pin=None))
    assert (out[39], out[4], len(out[38])) == ("10", "000000000505", 6)
    assert (event["amount"], event["approved"], event["delta"]) == (1010, 505, 505)
    out, [event] = sb.handle(auth(amount="000000001054", stan="000002", pin=None))
    assert out[39] == "54" and 38 not in out and event["delta"] == 0
    out, [event] = sb.handle(auth(amount="000000001008", stan="000003", pin=None))
    assert out[39] == "08" and event["delta"] == 1008
    _, [event] = sb.handle(advice(stan="000001", rev_stan="000009", amount="000000000505"))
    assert event["original_found"] and event["delta"] == -505
    assert sb.balance(PAN) == 1008


def test_a_strict_host_refuses_a_reversal_of_another_amount_than_it_holds():
    # A partial approval holds half: a reversal of the amount requested is 64
    # (original amount incorrect), moves nothing, and the right one still undoes
    # it, after a restart of the host too.
    sb = Sandbox("bank-a", seed=1, bank_codes=True)
    events = sb.handle(auth(amount="000000001010", pin=None))[1]
    for amount in ("000000001010", "000000000000"):
        out, [event] = sb.handle(advice(amount=amount))
        assert (out[39], event["delta"], event["held_amount"], event["repeat"]) == ("64", 0, 505, False)
        events.append(event)
    assert sb.balance(PAN) == 505
    again = Sandbox("bank-a", bank_codes=True)
    again.replay(events)
    for host in (sb, again):
        out, [event] = host.handle(advice(amount="000000000505", mti="0421"))
        assert (out[39], event["delta"], event["repeat"]) == ("00", -505, False)
        assert host.balance(PAN) == 0
    # a full approval holds the amount requested: no other amount reverses it
    sb.handle(auth(amount="000000001000", stan="000002", pin=None))
    assert sb.handle(advice(stan="000002", rev_stan="000003", amount="000000000500"))[0][39] == "64"
    assert sb.handle(advice(stan="000002", rev_stan="000003"))[0][39] == "00"
    assert sb.balance(PAN) == 0
