"""The strict simulated host matches a reversal by the authorization code (field 38) it gave."""
from __future__ import annotations

from adapters.card.messages import fields_view
from adapters.card.sandbox import Sandbox
from tests.test_card_sim import PAN, advice, auth


def with_38(msg, code):
    fields = {"mti": msg.mti, **msg.fields()}
    if code is None:
        fields.pop(38, None)
    else:
        fields[38] = code
    return fields_view(fields)


def test_a_reversal_of_a_delivered_approval_must_repeat_its_field_38():
    sb = Sandbox()
    request = auth()
    out, _ = sb.handle(request)
    sb.delivered(request)
    code = out[38]
    for wrong, why in ((None, "field 38 missing"), ("ZZZZZZ", "field 38 not the original's")):
        answer, [event] = sb.handle(with_38(advice(), wrong))
        assert (answer[39], event["delta"], event["refused"], event["repeat"]) == ("12", 0, why, False)
        assert sb.balance(PAN) == 1000  # nothing moved, and the right one may still follow
    answer, [event] = sb.handle(with_38(advice(mti="0421"), code))
    assert (answer[39], event["delta"]) == ("00", -1000) and sb.balance(PAN) == 0


def test_an_answer_the_switch_may_not_have_got_asks_for_no_field_38():
    sb = Sandbox()
    sb.handle(auth())  # never delivered: dropped, late, or the switch died first
    answer, [event] = sb.handle(advice())
    assert (answer[39], event["delta"]) == ("00", -1000)


def test_after_a_restart_the_host_asks_for_no_field_38_and_a_refused_reversal_is_not_replayed():
    sb = Sandbox()
    request = auth()
    _, events = sb.handle(request)
    sb.delivered(request)
    events += sb.handle(advice())[1]
    assert events[-1]["response_code"] == "12"
    again = Sandbox()
    again.replay(events)
    assert again.balance(PAN) == 1000
    answer, [event] = again.handle(advice(mti="0421"))
    assert (answer[39], event["delta"], event["repeat"]) == ("00", -1000, False)


def test_lenient_never_asks_for_field_38():
    sb = Sandbox(strict=False)
    request = auth()
    sb.handle(request)
    sb.delivered(request)
    assert sb.handle(advice())[0][39] == "00"


def test_a_repeat_of_a_reversal_taken_before_the_answer_was_delivered_is_still_a_repeat():
    # The 0420 of a timed-out approval is taken; the late answer is written afterwards;
    # the switch's 0421 (its 0420's answer was late too) cannot know field 38.
    sb = Sandbox()
    request = auth()
    sb.handle(request)
    assert sb.handle(advice())[0][39] == "00"
    sb.delivered(request)
    answer, [event] = sb.handle(advice(mti="0421"))
    assert (answer[39], event["delta"], event["repeat"]) == ("00", 0, True)
