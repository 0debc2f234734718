"""The wallet outcomes table, the order number and the hold / poll / cancel flow."""
import msgspec
import pytest

from adapters.wallet import outcomes
from adapters.wallet.acquirer import acquirer_ref, auth_code, order_number, original_order_number
from adapters.wallet.flow import Call, Done, PaymentFlow, Reply, Wait
from adapters.wallet.outcomes import Disposition, classify
from switch.core.acquirer import Original, Request

SPEC_CODES = {"00", "03", "05", "12", "13", "14", "25", "30", "51", "55", "58", "62", "68",
              "91", "94", "95", "96", "A0"}


# --- the table ----------------------------------------------------------------


def test_every_row_is_consistent_with_the_spec():
    for (style, call, word), outcome in outcomes.TABLE.items():
        where = f"{style} {call} {word}"
        assert style in (outcomes.TRADEPAY, outcomes.MICROPAY), where
        assert call in ("pay", "query", "cancel"), where
        if outcome.disposition in (Disposition.PAID, Disposition.DECLINED):
            assert outcome.code in SPEC_CODES, where
        if call == "cancel":  # a cancel answer never ends the payment with its own code
            assert outcome.disposition in outcomes.ACKNOWLEDGED | {Disposition.RETRY}, where
        else:
            assert outcome.disposition not in (Disposition.RETRY, Disposition.CLOSED,
                                               Disposition.REFUNDED, Disposition.REVERSED), where


@pytest.mark.parametrize("style,call,word,code", [
    ("tradepay", "pay", "ACQ.BUYER_BALANCE_NOT_ENOUGH", "51"),
    ("tradepay", "pay", "ACQ.PAYMENT_AUTH_CODE_INVALID", "14"),
    ("tradepay", "pay", "ACQ.CONTEXT_INCONSISTENT", "94"),
    ("tradepay", "pay", "isv.invalid-signature", "96"),
    ("tradepay", "query", "TRADE_CLOSED", "05"),
    ("tradepay", "pay", "TRADE_SUCCESS", "00"),
    ("tradepay", "query", "TRADE_FINISHED", "00"),
    ("micropay", "pay", "NOTENOUGH", "51"),
    ("micropay", "pay", "AUTHCODEEXPIRE", "14"),
    ("micropay", "pay", "OUT_TRADE_NO_USED", "94"),
    ("micropay", "query", "PAYERROR", "05"),
    ("micropay", "query", "SUCCESS", "00"),
])
def test_final_codes(style, call, word, code):
    assert classify(style, call, word).code == code


@pytest.mark.parametrize("style,call,word,family,disposition", [
    ("tradepay", "pay", "WAIT_BUYER_PAY", "10003", Disposition.WAITING),
    ("tradepay", "pay", "ACQ.SYSTEM_ERROR", "20000", Disposition.UNKNOWN),
    ("tradepay", "pay", "ACQ.TRADE_HAS_SUCCESS", "40004", Disposition.UNKNOWN),
    ("tradepay", "pay", "ACQ.SOMETHING_NEW", "40004", Disposition.DECLINED),  # family 40004
    ("tradepay", "pay", "isp.something", "20000", Disposition.UNKNOWN),
    ("tradepay", "pay", "ACQ.SOMETHING", "99999", Disposition.UNKNOWN),
    ("tradepay", "query", "ACQ.SOMETHING_NEW", "40004", Disposition.UNKNOWN),  # never final
    ("tradepay", "query", "ACQ.TRADE_NOT_EXIST", "40004", Disposition.NOT_FOUND),
    ("tradepay", "cancel", "close", "10000", Disposition.CLOSED),
    ("tradepay", "cancel", "refund", "10000", Disposition.REFUNDED),
    ("tradepay", "cancel", "retry", "20000", Disposition.RETRY),
    ("tradepay", "cancel", "ACQ.TRADE_CANCEL_TIME_OUT", "40004", Disposition.RETRY),
    ("micropay", "pay", "USERPAYING", None, Disposition.WAITING),
    ("micropay", "pay", "SYSTEMERROR", None, Disposition.UNKNOWN),
    ("micropay", "pay", "SOMETHING_NEW", None, Disposition.UNKNOWN),
    ("micropay", "query", "NOTPAY", None, Disposition.WAITING),
    ("micropay", "query", "RETURN_FAIL", None, Disposition.UNKNOWN),
    ("micropay", "cancel", "REVERSED", None, Disposition.REVERSED),
    ("micropay", "cancel", "RECALL", None, Disposition.RETRY),
    ("micropay", "cancel", "ORDERNOTEXIST", None, Disposition.NOT_FOUND),
    ("micropay", "cancel", "RETURN_FAIL", None, Disposition.RETRY),
])
def test_dispositions(style, call, word, family, disposition):
    assert classify(style, call, word, family).disposition is disposition


def test_deadline_codes():
    assert outcomes.NEVER_CONFIRMED == "68" and outcomes.WALLET_UNAVAILABLE == "91"


# --- order numbers -----------------------------------------------------------------


def request(**changes):
    fields = dict(txn_id=1, kind="wallet", mti="0200", processing_code="000000", amount=1234,
                  currency="156", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
                  stan="000123", transmission_time="0501120000", rrn="000000000001",
                  tlv={"BC": "281234567890123401"})
    fields.update(changes)
    return Request(**fields)


def test_order_number_is_terminal_field7_stan():
    assert order_number(request()) == "DEMO00010501120000000123"
    # A retransmission (another txn id and RRN, same 41/7/11) is the same order.
    assert order_number(request(txn_id=9, rrn="000000000009")) == order_number(request())
    assert order_number(request(stan="000124")) != order_number(request())
    assert order_number(request(transmission_time="0501120001")) != order_number(request())
    assert order_number(request(terminal_id="DEMO0002")) != order_number(request())
    assert order_number(request(terminal_id="T 1-2   ")) == "T_1_20501120000000123"


def test_original_order_number():
    original = Original(txn_id=1, mti="0200", processing_code="000000", amount=1234,
                        currency="156", stan="000123", transmission_time="0501120000",
                        rrn="000000000001")
    reversal = request(mti="0400", stan="000124", transmission_time="0501120105", original=original)
    assert original_order_number(reversal) == order_number(request())
    ref = acquirer_ref("ORDER1", "2088", "paid")
    assert ref == "ORDER1|2088|paid"
    with_ref = request(mti="0400", original=msgspec.structs.replace(original, acquirer_ref=ref))
    assert original_order_number(with_ref) == "ORDER1"


def test_auth_code_is_six_characters():
    assert auth_code("2088000000000000000000123456", "X") == "123456"
    assert auth_code("42", "X") == "000042"
    assert auth_code(None, "DEMO0001abcdef") == "ABCDEF"
    # Field 38 is an6: letters and digits of ASCII only, whatever the wallet's trade number holds.
    assert auth_code("T20\u4ea4\u6613\uff11\u0661", "X") == "000T20"


@pytest.mark.parametrize("trade_no", ["4" * 1200, "T-1\u4ea4", "T 1\n"])
def test_a_trade_number_field_48_cannot_carry_is_left_out_of_the_approval(trade_no):
    from adapters.wallet.micropay import MicroPayAcquirer

    wallet = MicroPayAcquirer("w", "http://127.0.0.1:1", app_id="a", mch_id="m", secret=b"s")
    result = wallet._result("ORDER1", Done("00", "paid", trade_no, False))
    assert (result.response_code, result.tlv) == ("00", {})
    assert result.acquirer_ref == f"ORDER1|{trade_no}|paid"  # kept for a reversal
    assert wallet._result("ORDER1", Done("00", "paid", "2088X-1", False)).tlv == {"WT": "2088X-1"}


# --- the flow, on a fake clock -------------------------------------------------------

PAID = outcomes.PAID
WAITING = outcomes.WAITING
UNKNOWN = outcomes.UNKNOWN


def flow(**changes):
    options = dict(now=0.0, deadline=60.0, margin=10.0, poll_interval=3.0, cancel_interval=1.0,
                   request_timeout=5.0)
    options.update(changes)
    return PaymentFlow(**options)


def test_paid_at_once():
    f = flow()
    assert f.step(0.0) == Call("pay", 5.0)
    f.feed("pay", Reply(PAID, "T1"), 0.2)
    assert f.step(0.2) == Done("00", "paid", "T1", False)


def test_waiting_then_paid_polls_every_interval():
    f = flow()
    f.step(0.0)
    f.feed("pay", Reply(WAITING, "T1"), 0.1)
    assert f.step(0.1) == Wait(3.1)
    assert f.step(3.1) == Call("query", 5.0)
    f.feed("query", Reply(WAITING), 3.2)
    assert f.step(3.2) == Wait(6.2)
    f.feed("query", Reply(PAID), 6.3)
    assert f.step(6.3) == Done("00", "paid", "T1", False)


def test_declined_during_poll():
    f = flow()
    f.feed("pay", Reply(WAITING), 0.1)
    f.feed("query", Reply(outcomes.declined("05")), 3.2)
    assert f.step(3.2) == Done("05", "declined", None, False)


def test_never_confirmed_is_cancelled_at_hold_end_and_answers_68():
    f = flow()
    f.feed("pay", Reply(WAITING, "T1"), 0.1)
    t = 0.1
    while isinstance(step := f.step(t), Wait) or step.call == "query":
        if isinstance(step, Wait):
            t = step.until
        else:
            assert step.timeout <= 50.0 - t
            f.feed("query", Reply(WAITING), t)
    assert step.call == "cancel" and t == pytest.approx(50.0)
    f.feed("cancel", Reply(outcomes.RETRY), 50.2)
    assert f.step(50.2) == Wait(51.2)
    f.feed("cancel", Reply(outcomes.CLOSED), 51.3)
    assert f.step(51.3) == Done("68", "closed", "T1", False)


def test_a_stop_ends_the_hold_its_margin_before_and_cancels_by_then():
    """The switch stops at 20 s (drain): the customer is held until 10 s (the margin before
    it), then the order is cancelled, each call bounded by the stop, not the 60 s deadline."""
    f = flow()
    f.feed("pay", Reply(WAITING, "T1"), 0.1)
    assert f.step(0.1) == Wait(3.1)
    f.stop_by(20.0)
    assert f.step(9.0) == Call("query", 1.0)  # no query runs past the hold's new end
    f.feed("query", Reply(WAITING), 9.5)
    assert f.step(9.5) == Wait(10.0)
    assert f.step(10.0) == Call("cancel", 5.0)
    f.feed("cancel", Reply(None), 15.0)
    assert f.step(17.0) == Call("cancel", 3.0)  # bounded by the stop
    f.feed("cancel", Reply(outcomes.CLOSED), 17.5)
    assert f.step(17.5) == Done("68", "closed", "T1", False)
    f.stop_by(30.0)  # a later stop changes nothing
    assert (f.deadline, f.hold_until) == (20.0, 10.0)


def test_a_stop_before_the_pay_leaves_room_or_sends_nothing():
    f = flow()
    f.stop_by(5.0)  # less than the margin: no pay is sent that could not be held and cancelled
    assert f.step(0.0) == Done(outcomes.WALLET_UNAVAILABLE, "unsent", None, False)


def test_cancel_never_acknowledged_is_uncertain():
    f = flow()
    f.feed("pay", Reply(WAITING), 0.1)
    f.feed("query", Reply(WAITING), 49.0)
    assert f.step(50.0) == Call("cancel", 5.0)
    f.feed("cancel", Reply(None), 55.0)
    assert f.step(58.0) == Call("cancel", 2.0)  # bounded by the deadline
    f.feed("cancel", Reply(outcomes.RETRY), 59.99)
    assert f.step(60.0) == Done("68", "open", None, True)


def test_refunded_at_the_deadline():
    f = flow()
    f.feed("pay", Reply(WAITING), 0.1)
    f.step(50.0)
    f.feed("cancel", Reply(outcomes.REFUNDED, "T1"), 50.1)
    assert f.step(50.1) == Done("68", "refunded", "T1", False)


def test_unknown_then_query_finds_paid():
    f = flow()
    f.feed("pay", Reply(UNKNOWN), 0.1)
    assert f.step(0.1) == Wait(3.1)
    f.feed("query", Reply(PAID, "T9"), 3.2)
    assert f.step(3.3) == Done("00", "paid", "T9", False)


def test_no_readable_state_all_along_answers_91():
    f = flow()
    f.feed("pay", Reply(None, sent=True), 5.0)  # timed out after sending
    f.feed("query", Reply(None), 49.0)
    f.step(50.0)
    f.feed("cancel", Reply(outcomes.CLOSED), 50.1)
    assert f.step(50.1) == Done("91", "closed", None, False)


def test_pay_that_never_left_answers_91_at_once():
    f = flow()
    f.feed("pay", Reply(None, sent=False), 0.01)
    assert f.step(0.01) == Done("91", "unsent", None, False)


def test_no_time_to_pay():
    assert flow(deadline=0.1, margin=0.06).step(0.0) == Done("91", "unsent", None, False)


def test_abandon_before_and_after_the_pay():
    assert flow().abandon() == Done("91", "unsent", None, False)
    f = flow()
    f.feed("pay", Reply(WAITING), 0.1)
    assert f.abandon() == Done("68", "open", None, True)


def test_reversal_flow():
    f = PaymentFlow.for_reversal(now=0.0, deadline=2.0, cancel_interval=0.5, request_timeout=5.0)
    assert f.step(0.0) == Call("cancel", 2.0)
    f.feed("cancel", Reply(outcomes.RETRY), 0.1)
    assert f.step(0.1) == Wait(0.6)
    f.feed("cancel", Reply(outcomes.REFUNDED, "T1"), 0.7)
    assert f.step(0.7) == Done("68", "refunded", "T1", False)


def test_a_reversal_answered_not_found_is_not_final():
    # The pay it undoes may still be on its way to the wallet: the switch asks again.
    f = PaymentFlow.for_reversal(now=0.0, deadline=2.0, cancel_interval=0.5, request_timeout=5.0)
    f.feed("cancel", Reply(outcomes.NOT_FOUND), 0.1)
    assert f.step(0.1) == Done("68", "not-found", None, True)


@pytest.mark.parametrize("pay_reply", [Reply(None, sent=True), Reply(UNKNOWN), Reply(WAITING)])
def test_not_found_after_a_pay_that_may_have_reached_the_wallet_is_uncertain(pay_reply):
    f = flow()
    f.feed("pay", pay_reply, 5.0)  # timed out after sending / unknown / waiting
    assert f.step(5.0) == Wait(8.0)
    f.feed("query", Reply(outcomes.NOT_FOUND), 8.1)  # a query is never final on "not found"
    assert f.step(11.1) == Call("query", 5.0)
    f.step(50.0)
    f.feed("cancel", Reply(outcomes.NOT_FOUND), 50.1)
    code = "68" if pay_reply.outcome is WAITING else "91"
    # Ended at once, uncertain: the switch's reversal queue repeats the cancel for its window.
    assert f.step(50.1) == Done(code, "not-found", None, True)


def test_order_flow_queries_first():
    f = PaymentFlow.for_order(now=0.0, deadline=20.0, margin=5.0, poll_interval=3.0,
                              cancel_interval=1.0, request_timeout=5.0)
    assert f.step(0.0) == Call("query", 5.0)
    f.feed("query", Reply(PAID, "T1"), 0.1)
    assert f.step(0.1) == Done("00", "paid", "T1", False)
