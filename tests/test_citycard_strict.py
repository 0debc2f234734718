"""City cards against a strict clearing centre and a hostile terminal.

Nothing is lost or charged twice: an answer that is not the request's own
never settles it (it times out and is reversed), a top-up whose outcome is
unknown is reversed, a retransmission is answered from the journal, and the
card number stays out of every log line.
"""
from __future__ import annotations

import asyncio
import json
import logging

import msgspec
import pytest

from adapters.citycard import CityCardAcquirer, crypto
from adapters.citycard.centre import DEMO_MK, Centre
from adapters.citycard.mapping import Refusal, build_message, to_result
from adapters.citycard.protocol import Response, encode
from tests.test_citycard_adapter import FakeCentre, cc, debit, request, run  # noqa: F401  (run: a fixture)
from tests.test_vas import plugin_registered  # noqa: F401  (autouse fixture: the keys the switch needs)

CARD = "8800000000005001"  # fails the Luhn check, as city-card numbers may


def topup(card, counter, amount, m1="0123ABCD", txn_id=None):
    return request(card, pc="210000", amount=amount, txn_id=txn_id,
                   tlv={"CC": cc(card, counter, amount), "M1": m1})


def raw(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return len(body).to_bytes(2, "big") + body


# -- 2. an answer naming another ref is not the request's answer ----------------------------------


def test_an_answer_naming_another_ref_is_unmatched_and_the_debit_times_out_uncertain(run):
    async def main():
        async def other_ref(req, writer, number):
            writer.write(encode(Response(id=req.id, code="00", balance=1, ref="1.000000000001", auth="000001")))

        async with FakeCentre(other_ref) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(debit(CARD, 1, 100), 0.2)
            assert (result.response_code, result.uncertain) == ("68", True)
            assert acq.metrics.get("unmatched_answers") == 1
            assert acq.metrics.get("timeouts", op="debit") == 1
            assert acq.healthy() and sum(link.in_flight for link in acq._links) == 0
            await acq.close()

    run(main())


def test_the_requests_own_answer_after_another_refs_still_counts(run):
    async def main():
        async def stray_then_own(req, writer, number):
            writer.write(encode(Response(id=req.id, code="00", balance=1, ref="1.000000000001", auth="000001")))
            await asyncio.sleep(0.05)
            writer.write(encode(Response(id=req.id, code="51", balance=7, ref=req.ref)))

        async with FakeCentre(stray_then_own) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(debit(CARD, 1, 100), 1)
            assert (result.response_code, result.uncertain) == ("51", False)
            assert acq.metrics.get("unmatched_answers") == 1
            await acq.close()

    run(main())


def test_a_top_up_approved_under_another_ref_is_never_an_approval(run):
    async def main():
        async def other_ref(req, writer, number):
            writer.write(encode(Response(id=req.id, code="00", balance=1, ref="x", mac2="0123ABCD")))

        async with FakeCentre(other_ref) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(topup(CARD, 1, 100), 0.2)
            assert (result.response_code, result.uncertain) == ("68", True)
            assert "M2" not in result.tlv
            assert acq.metrics.get("unmatched_answers") == 1
            await acq.close()

    run(main())


# -- 1. an answer approving another amount (a field the protocol has not) ---------------------------


def test_an_answer_with_an_amount_of_its_own_is_no_approval_and_leaves_the_debit_uncertain(run):
    async def main():
        async def other_amount(req, writer, number):
            writer.write(raw({"id": req.id, "code": "00", "ref": req.ref, "auth": "000001", "amount": 1}))

        async with FakeCentre(other_amount) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(debit(CARD, 1, 100), 1)
            assert (result.response_code, result.uncertain) == ("91", True)
            assert acq.metrics.get("protocol_errors", endpoint="%s:%d" % centre.endpoint) == 1
            await acq.close()

    run(main())


# -- 3. a top-up whose outcome is unknown is reversed --------------------------------------------


def test_a_top_up_unanswered_or_lost_in_flight_is_uncertain(run):
    async def main():
        async def silent_then_drop(req, writer, number):
            if req.counter == "00002":
                writer.transport.abort()

        async with FakeCentre(silent_then_drop) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(topup(CARD, 1, 100), 0.1)
            assert (result.response_code, result.uncertain) == ("68", True)
            result = await acq.authorize(topup(CARD, 2, 100), 1)
            assert (result.response_code, result.uncertain) == ("91", True)
            assert acq.metrics.get("timeouts", op="load") == acq.metrics.get("lost_in_flight", op="load") == 1
            await acq.close()

    run(main())


# -- 5. malformed field 48 tag CC / M1; a top-up beyond the most a card holds ---------------------


GOOD_CC = "00001" + "000000010000" + "0000000001" + "ABCD1234"


@pytest.mark.parametrize("value", [
    GOOD_CC + "5",  # one character too many
    GOOD_CC[:-1],  # one too few
    GOOD_CC[:-1] + "G",  # TAC not hex
    "0000x" + GOOD_CC[5:],  # counter not digits
    GOOD_CC[:10] + "x" + GOOD_CC[11:],  # balance not digits
    GOOD_CC[:20] + "-" + GOOD_CC[21:],  # serial not digits
    "\uff10" + GOOD_CC[1:],  # a digit outside ASCII
])
def test_a_malformed_cc_is_30_and_goes_to_no_centre(value):
    for req in (request(CARD, amount=100, tlv={"CC": value}),
                request(CARD, pc="210000", amount=100, tlv={"CC": value, "M1": "0123ABCD"}),
                request(CARD, mti="0220", amount=100, tlv={"CC": value})):
        with pytest.raises(Refusal) as refused:
            build_message(req)
        assert refused.value.code == "30"
        assert CARD not in str(refused.value)


@pytest.mark.parametrize("m1", ["0123ABC", "0123ABCDE", "0123ABCG", ""])
def test_a_top_up_with_a_malformed_m1_is_30(m1):
    with pytest.raises(Refusal) as refused:
        build_message(topup(CARD, 1, 100, m1=m1))
    assert refused.value.code == "30"


def test_a_top_up_beyond_the_configured_most_a_card_holds_is_13():
    centre = Centre(prefixes=(), max_balance=10_050)
    card, amount = CARD, 100
    fields = (card, "00001", f"{amount:012d}", "0000000001", "DEMO0001")
    m1 = crypto.mac1(crypto.derive_dk(DEMO_MK, card), *fields)
    message = build_message(topup(card, 1, amount, m1=m1))
    result = to_result(message, centre.handle(message))
    assert (result.response_code, result.uncertain) == ("13", False)
    assert centre.accounts[card].balance == 10_000 and centre.conserved()


# -- 6. the card number stays out of the logs ------------------------------------------------------


def test_no_log_line_names_the_card_in_clear(run, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async def hostile(req, writer, number):
            if req.counter == "00001":
                writer.write(encode(Response(id=req.id, code="00", ref="other")))  # unmatched
            elif req.counter == "00002":
                writer.write(raw({"id": req.id, "code": "00", "ref": req.ref, "card": req.card}))  # protocol error
            else:
                writer.write(encode(Response(id=req.id + 99, code="00", ref=req.ref)))  # stray

        async with FakeCentre(hostile) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            for counter in (1, 2, 3):
                while not acq.healthy():
                    await asyncio.sleep(0.01)
                await acq.authorize(debit(CARD, counter, 100), 0.1)
            await acq.close()

    run(main())
    assert caplog.records
    assert not [r.getMessage() for r in caplog.records if CARD in r.getMessage()]


# -- 4. an upload retransmitted by the terminal ----------------------------------------------------


def test_an_upload_retransmitted_is_answered_from_the_journal_and_sent_to_the_centre_once():
    from tests import test_citycard_uploads as tu
    from tests.test_service import call
    from tests.test_vas import run as vas_run

    centre = tu.CentreAcquirer()

    async def scenario(sw):
        first = await call(sw, tu.upload("000001", 4, 1200))
        assert first[39] == "00"
        again = await call(sw, tu.upload("000001", 4, 1200))  # same 41, 11, 7 and content
        assert (again[39], again[37], again.get(38)) == ("00", first[37], first.get(38))
        assert centre.calls == 1
        other = await call(sw, tu.upload("000001", 4, 1300))  # same key, other amount
        assert other[39] == "94"
        assert centre.calls == 1
        # Uploads come late and in any order (protocol.py): a lower counter than one
        # uploaded before is the card's own older debit, booked once, not a replay.
        older = await call(sw, tu.upload("000002", 2, 300))
        assert older[39] == "00" and centre.calls == 2

    vas_run(scenario, acquirers=tu.fakes(city=centre), extra=tu.CITY)


def test_a_centre_answer_whose_unknown_field_is_a_card_number_is_logged_masked(run, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async def card_as_field(req, writer, number):
            writer.write(raw({"id": req.id, "code": "00", "ref": req.ref, req.card: 1}))

        async with FakeCentre(card_as_field) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(debit(CARD, 1, 100), 1)
            assert (result.response_code, result.uncertain) == ("91", True)
            await acq.close()

    run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "unknown field `880000******5001`" in line]
    assert not [line for line in lines if CARD in line]


def test_a_repeat_0221_of_a_confirmed_upload_is_answered_from_the_journal():
    from tests import test_citycard_uploads as tu
    from tests.test_service import call
    from tests.test_vas import run as vas_run

    centre = tu.CentreAcquirer()

    async def scenario(sw):
        first = await call(sw, tu.upload("000001", 4, 1200))
        repeat = await call(sw, tu.upload("000001", 4, 1200, mti="0221"))
        assert (repeat.mti, repeat[39], repeat[37], repeat.get(38)) == ("0230", "00", first[37], first.get(38))
        assert centre.calls == 1

    vas_run(scenario, acquirers=tu.fakes(city=centre), extra=tu.CITY)


def test_an_upload_retransmitted_while_at_the_centre_is_sent_there_once():
    from tests import test_citycard_uploads as tu
    from tests.test_service import call
    from tests.test_vas import run as vas_run

    gate = asyncio.Event()
    centre = tu.CentreAcquirer(gate=gate)

    async def scenario(sw):
        first = asyncio.ensure_future(call(sw, tu.upload("000001", 4, 1200)))
        while centre.calls == 0:
            await asyncio.sleep(0.005)
        again = asyncio.ensure_future(call(sw, tu.upload("000001", 4, 1200)))
        await asyncio.sleep(0.05)
        gate.set()
        first, again = await first, await again
        assert first[39] == "00" and (again[39], again[37]) == ("00", first[37])
        assert centre.calls == 1

    vas_run(scenario, acquirers=tu.fakes(city=centre), extra=tu.CITY)


# -- 3. (the switch's side) a top-up the centre booked but never confirmed is reversed there ---------


def test_a_top_up_unanswered_is_68_and_reversed_at_the_centre():
    from adapters.citycard.mapping import original_ref
    from adapters.citycard.protocol import Reverse
    from native.iso8583 import build_tlv48
    from switch.core.acquirer import REVERSED, Result
    from tests import test_citycard_uploads as tu
    from tests.test_service import TID, call, wait_state
    from tests.test_service import request as terminal_request
    from tests.test_vas import run as vas_run

    class BookedThenSilent(tu.CentreAcquirer):
        async def authorize(self, request, timeout):
            message = build_message(request)
            self.calls += 1
            self.centre.handle(message)  # booked; the answer is lost
            return Result(response_code="68", acquirer_ref=message.ref, uncertain=True)

        async def reverse(self, request, timeout):
            self.centre.handle(Reverse(id=0, ref=original_ref(request.original)))
            return REVERSED

    centre = BookedThenSilent()
    card, amount, counter, serial = tu.CARD, 2000, "00001", "0000000001"
    fields = (card, counter, f"{amount:012d}", serial, TID)
    m1 = crypto.mac1(crypto.derive_dk(DEMO_MK, card), *fields)
    cc_value = f"{counter}{10000:012d}{serial}{'0' * 8}"

    async def scenario(sw):
        body = terminal_request("0200", stan="000001", pan=card, amount=f"{amount:012d}", pcode="210000",
                                f22="071", f48=build_tlv48({"CC": cc_value, "M1": m1}))
        answer = await call(sw, body)
        assert answer[39] == "68" and 38 not in answer
        assert centre.centre.accounts[card].balance == 12_000  # credited, the card never got M2
        await wait_state(sw, "000001", "reversed")
        assert centre.centre.accounts[card].balance == 10_000 and centre.centre.conserved()

    vas_run(scenario, acquirers=tu.fakes(city=centre), extra=tu.CITY)


def test_a_reversal_answered_with_a_code_outside_section_5_logs_no_centre_text(run, caplog):
    from switch.core.acquirer import RETRY, Original

    caplog.set_level(logging.DEBUG)

    async def main():
        async def card_as_code(req, writer, number):
            writer.write(encode(Response(id=req.id, code=CARD)))

        async with FakeCentre(card_as_code) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            original = Original(txn_id=7, mti="0200", processing_code="000000", currency="156", stan="000007",
                                transmission_time="1124070000",
                                rrn="000000000007", amount=100, acquirer_ref="7.000000000007")
            rev = request(CARD, mti="0400", amount=100, original=original)
            assert await acq.reverse(rev, 1) == RETRY
            await acq.close()

    run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "reversal of ref 7.000000000007" in line]
    assert not [line for line in lines if CARD in line]


@pytest.mark.parametrize("value", [GOOD_CC[:-1], GOOD_CC[:-1] + "G"])
def test_a_balance_inquiry_carrying_a_malformed_cc_is_30(value):
    with pytest.raises(Refusal) as refused:
        build_message(request(CARD, pc="310000", tlv={"CC": value}))
    assert refused.value.code == "30"
    build_message(request(CARD, pc="310000", tlv={"CC": GOOD_CC}))  # a well-formed one is no matter
    build_message(request(CARD, pc="310000"))  # nor is none


def test_an_upload_answered_68_is_forwarded_again_and_booked_once():
    from switch.core.acquirer import Result
    from tests import test_citycard_uploads as tu
    from tests.test_service import call
    from tests.test_vas import run as vas_run

    class LosesTheFirstAnswer(tu.CentreAcquirer):
        refs: list = []

        async def authorize(self, request, timeout):
            message = build_message(request)
            self.calls += 1
            self.refs.append(message.ref)
            answer = to_result(message, self.centre.handle(message))
            return Result(response_code="68", acquirer_ref=message.ref, uncertain=True) if self.calls == 1 else answer

    centre = LosesTheFirstAnswer()

    async def scenario(sw):
        assert (await call(sw, tu.upload("000001", 4, 1200)))[39] == "68"
        again = await call(sw, tu.upload("000001", 4, 1200))  # section 6.1: an advice is delivered
        assert again[39] == "00" and centre.calls == 2
        # Forwarded under a new ref: the centre de-duplicates uploads on (card, counter).
        assert centre.centre.accounts[tu.CARD].balance == 10_000 - 1200 and centre.centre.conserved()

    vas_run(scenario, acquirers=tu.fakes(city=centre), extra=tu.CITY)


def test_a_balance_answer_naming_a_ref_is_another_transactions_and_unmatched(run):
    async def main():
        async def debit_answer(req, writer, number):
            writer.write(encode(Response(id=req.id, code="00", balance=4242, ref="1.000000000001", auth="000001")))

        async with FakeCentre(debit_answer) as centre:
            acq = CityCardAcquirer(endpoints=[centre.endpoint])
            await acq.start()
            result = await acq.authorize(request(CARD, pc="310000"), 0.2)
            assert (result.response_code, result.uncertain, result.tlv) == ("68", False, {})
            assert acq.metrics.get("unmatched_answers") == 1
            await acq.close()

    run(main())


@pytest.mark.parametrize("tid", ["DEMO\x01001", "DEMO\u00e9001", "DEMO\n001"])
def test_a_terminal_id_the_centre_cannot_take_is_30_and_goes_to_no_centre(tid):
    req = msgspec.structs.replace(debit(CARD, 1, 100), terminal_id=tid)
    with pytest.raises(Refusal) as refused:
        build_message(req)
    assert refused.value.code == "30"
