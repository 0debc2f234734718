"""A hostile or broken terminal over TCP (spec sections 1, 3, 5, 6).

Whatever a terminal sends, it gets a clear response code, nothing it sent
well is lost, and nothing is charged twice: a request the switch refuses
itself is journaled under its key like any other answer (its retransmission
gets that same answer, other content under the key 94); a terminal the
configuration does not know leaves nothing in the journal; good frames in
front of a bad length header are answered before the connection closes.

The switch is the service harness's (fake acquirers, journal in memory); the
framing tests reach it over real sockets.
"""
from __future__ import annotations

import asyncio

import pytest

from native.emv import encode as emv_encode
from native.framing import FrameError, Framer
from tests.test_framing import HEADERS, check_stream, header
from tests.test_framing import frame as framed
from tests.test_limits import LOOP, closed, frame, read_answer, serve
from tests.test_service import (  # noqa: F401  (hmac_key: the journal's key for every test here)
    T7,
    FakeAcquirer,
    TERM,
    TID,
    call,
    fakes,
    hmac_key,
    record,
    request,
    reversal,
    run,
    sample,
)

ICC = emv_encode([(0x9F26, bytes(8)), (0x9F36, b"\x00\x01")])
BAD_ICC = b"\x9f\x26\x09" + bytes(8)  # declares 9 bytes, 8 follow


def authorized(sw) -> int:
    return sum(len(a.authorized) for a in sw.acquirers.values())


# -- 1. a request refused by the request checks is journaled under its key ------------


@pytest.mark.parametrize("bad, code", [
    (dict(amount="000000000000"), "13"),
    (dict(f55=BAD_ICC), "30"),
    (dict(drop=(12,)), "30"),
    (dict(pcode="200000", mti="0100"), "12"),
], ids=["zero-amount", "bad-icc", "missing-12", "refund-in-0100"])
def test_a_refused_request_is_journaled_and_its_retransmission_gets_the_same_answer(bad, code):
    async def scenario(sw):
        body = request(**bad)
        first = await sw.handle(body)
        answer = TERM.decode(first)
        assert answer[39] == code and not answer[37].startswith("N")  # the journal's RRN
        rec = await record(sw, "000001")
        assert (rec.response_code, rec.rrn) == (code, answer[37])
        assert await sw.handle(body) == first  # from the journal, byte for byte
        assert sample(sw, "payswitch_retransmissions_total", outcome="same") == 1
        # Other content under the same key (41, 11, 7): 94, never sent to an acquirer.
        other = await call(sw, request(mti=bad.get("mti", "0200"), amount="000000009900"))
        assert other[39] == "94"
        assert authorized(sw) == 0

    run(scenario)


def test_a_refused_request_without_its_key_is_answered_and_not_journaled():
    async def scenario(sw):
        answer = await call(sw, request(drop=(11,)))
        assert answer[39] == "30" and answer[37].startswith("N")
        assert authorized(sw) == 0

    run(scenario)


# -- 2. unknown terminals are answered 03 and counted, never journaled ----------------


@pytest.mark.parametrize("extra", [{}, dict(amount="000000000000"), dict(f55=BAD_ICC)],
                         ids=["good", "zero-amount", "bad-icc"])
def test_an_unknown_terminal_is_answered_and_counted_but_never_journaled(extra):
    async def scenario(sw):
        answer = await call(sw, request(tid="NOSUCH01", **extra))
        assert answer[39] in ("03", "13", "30") and answer[41] == "NOSUCH01"
        assert await record(sw, "000001", tid="NOSUCH01") is None
        assert sample(sw, "payswitch_requests_total", kind="unknown", mclass="financial",
                      code=answer[39]) == 1
        assert authorized(sw) == 0

    run(scenario)


def test_an_unknown_terminals_0800_is_not_kept_for_retransmissions():
    async def scenario(sw):
        echo = TERM.encode({"mti": "0800", 7: T7, 11: "000001", 41: "NOSUCH01", 70: "301"})
        assert (await call(sw, echo))[39] == "03"
        assert sw.engine.network_answers.find(("NOSUCH01", "000001", T7), None, 0, 1e9) is None

    run(scenario)


# -- 3. framing: good frames before a bad header, zero-length frames ------------------


def test_good_frames_in_front_of_a_bad_length_header_are_answered_then_the_connection_closes():
    async def scenario(sw, port):
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(frame(request(stan="000001")) + frame(request(stan="000002")) + b"\xff\xff" + b"x" * 4)
        answers = {(await read_answer(reader))[11] for _ in range(2)}
        assert answers == {"000001", "000002"}
        assert await closed(reader, 2.0)
        writer.close()
        assert sample(sw, "payswitch_frame_errors_total") == 1
        assert len(sw.acquirers["bank-a"].authorized) == 2

    serve(scenario)


def test_a_zero_length_frame_is_a_keepalive():
    async def scenario(sw, port):
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(b"\x00\x00" + frame(request(stan="000001")) + b"\x00\x00")
        assert (await read_answer(reader))[39] == "00"
        writer.write(b"\x00\x00")
        assert await closed(reader, 0.3) is False
        writer.write(frame(request(stan="000002")))
        assert (await read_answer(reader))[11] == "000002"
        writer.close()
        assert sample(sw, "payswitch_frame_errors_total") == 0
        assert sample(sw, "payswitch_format_errors_total") == 0

    serve(scenario)


# -- 4. field 14 (expiry YYMM) with no such month -------------------------------------


@pytest.mark.parametrize("expiry", ["2513", "2500", "2599"])
def test_an_expiry_with_no_such_month_is_30_and_never_forwarded(expiry):
    async def scenario(sw):
        answer = await call(sw, request(f14=expiry))
        assert answer[39] == "30"
        assert authorized(sw) == 0
        assert (await call(sw, request(stan="000002", f14="2512")))[39] == "00"
        # A reversal is never refused for it: it must always be able to undo money.
        assert (await call(sw, reversal("000003", "000002", f14=expiry)))[39] == "00"
        assert (await record(sw, "000002")).state in ("reversal_pending", "reversed")

    run(scenario)


# -- 5. field 55 is content ------------------------------------------------------------


def test_same_key_with_other_icc_data_is_94():
    async def scenario(sw):
        first = await call(sw, request(f55=ICC))
        assert first[39] == "00"
        other = emv_encode([(0x9F26, b"\x01" * 8), (0x9F36, b"\x00\x02")])
        assert (await call(sw, request(f55=other)))[39] == "94"
        assert (await call(sw, request()))[39] == "94"  # without 55 is other content too
        assert await call(sw, request(f55=ICC)) == first
        assert authorized(sw) == 1

    run(scenario)


# -- 6. an undecodable request whose key can be read ----------------------------------


def test_an_undecodable_request_with_a_readable_key_is_journaled_under_it():
    async def scenario(sw):
        broken = request()[:-2]  # cut inside field 49, after 41
        first = await sw.handle(broken)
        answer = TERM.decode(first)
        assert answer[39] == "30" and (answer[41], answer[11], answer[7]) == (TID, "000001", T7)
        assert not answer[37].startswith("N") and 2 not in answer
        rec = await record(sw, "000001")
        assert (rec.response_code, rec.pan_masked) == ("30", None)
        assert await sw.handle(broken) == first  # its retransmission: the same answer
        assert (await call(sw, request()))[39] == "94"  # a good request under the key: other content
        assert authorized(sw) == 0
        assert sample(sw, "payswitch_format_errors_total") == 2

    run(scenario)


def test_an_undecodable_request_of_an_unknown_terminal_is_not_journaled():
    async def scenario(sw):
        answer = await call(sw, request(tid="NOSUCH01")[:-2])
        assert answer[39] == "30" and 41 not in answer
        assert await record(sw, "000001", tid="NOSUCH01") is None

    run(scenario)


@pytest.mark.parametrize("kind", HEADERS)
@pytest.mark.parametrize("tpdu", [False, True])
def test_the_framer_takes_a_zero_length_frame_off_the_stream_as_a_keepalive(kind, tpdu):
    lead = bytes.fromhex("6000120034") if tpdu else b""
    payloads = [lead + b"one", lead + b"two"]
    data = header(kind, 0) + framed(kind, payloads[0]) + header(kind, 0) + header(kind, 0) + framed(kind, payloads[1])
    check_stream(lambda: Framer(kind, tpdu=tpdu, keepalive=True), data, payloads,
                 framed(kind, lead + b"next"))
    assert "keepalive=True" in repr(Framer(kind, keepalive=True))
    with pytest.raises(FrameError, match=r"^declared length 0 "):  # the acquirer links' framers
        Framer(kind).feed(header(kind, 0))


def test_the_repeat_of_an_undecodable_request_gets_its_answer():
    async def scenario(sw):
        first = await call(sw, request()[:-2])
        again = await call(sw, request("0201")[:-2])
        assert (again.mti, again[39], again[37]) == ("0210", "30", first[37])
        assert (await call(sw, request(amount="000000002600")[:-2]))[39] == "94"  # other bytes

    run(scenario)


def test_an_undecodable_request_under_a_mac_policy_is_not_journaled():
    """It cannot be authenticated: it must not take the key of the terminal's next request."""
    class MacEverywhere:
        def policy(self, merchant):
            return "mac"

    async def scenario(sw):
        sw.engine.security.config = MacEverywhere()
        answer = await call(sw, request()[:-2])
        assert answer[39] == "30" and answer[37].startswith("N") and answer[41] == TID
        assert await record(sw, "000001") is None

    run(scenario)


def test_a_request_mti_section_3_does_not_have_is_answered_12_and_not_journaled():
    async def scenario(sw):
        answer = await call(sw, request("0300"))
        assert (answer.mti, answer[39]) == ("0310", "12") and answer[37].startswith("N")
        assert await record(sw, "000001") is None
        assert (await call(sw, request("0300")[:-2]))[41] == TID  # undecodable: not journaled either
        assert await record(sw, "000001") is None
        assert (await call(sw, request()))[39] == "00"  # the key is free

    run(scenario)


def test_a_bad_length_header_after_a_request_in_flight_closes_only_after_its_answer():
    gate = asyncio.Event()
    bank = FakeAcquirer("bank-a", gate=gate)

    async def scenario(sw, port):
        reader, writer = await asyncio.open_connection(LOOP, port)
        writer.write(frame(request(stan="000001")))
        await asyncio.wait_for(bank.entered.wait(), 3)
        writer.write(b"\xff\xff")  # at the acquirer meanwhile: the terminal breaks the framing
        assert await closed(reader, 0.2) is False
        gate.set()
        assert (await read_answer(reader))[39] == "00"
        assert await closed(reader, 2.0)
        writer.close()

    serve(scenario, acquirers=fakes(**{"bank-a": bank}))
