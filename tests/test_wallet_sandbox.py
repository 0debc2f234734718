"""The wallet sandbox rules (spec 7) as pure functions, and both API faces
driven in-process by the adapters' own codecs."""
import msgspec
import pytest

from adapters.wallet import messages, outcomes, sandbox, signing
from adapters.wallet.sandbox import Ledger, Scenario, State, scenario


@pytest.mark.parametrize("code,expected", [
    ("281234567890123401", Scenario.CONFIRM),
    ("281234567890123402", Scenario.DECLINE),
    ("281234567890123403", Scenario.NEVER),
    ("281234567890123404", Scenario.INSUFFICIENT),
    ("281234567890123405", Scenario.UNKNOWN_FIRST),
    ("281234567890123406", Scenario.LATE),
    ("281234567890123407", Scenario.APPROVE),
    ("281234567890123410", Scenario.APPROVE),
    ("1", Scenario.APPROVE),
])
def test_scenario_by_last_two_digits(code, expected):
    assert scenario(code) is expected


def ledger(**options):
    return Ledger(**{"confirm_delay": 6.0, "cancel_retries": 0, **options})


def test_confirm_after_the_delay():
    lg = ledger()
    assert lg.pay("O1", "2801", 100, now=0.0)[0] == "waiting"
    assert lg.query("O1", now=5.9).state is State.WAITING
    order = lg.query("O1", now=6.0)
    assert order.state is State.PAID and order.charges == 1
    assert lg.query("O1", now=100.0).charges == 1


def test_decline_after_the_delay():
    lg = ledger()
    lg.pay("O1", "2802", 100, now=0.0)
    order = lg.query("O1", now=6.0)
    assert order.state is State.DECLINED and order.charges == 0


def test_never_confirms_until_cancelled():
    lg = ledger()
    lg.pay("O1", "2803", 100, now=0.0)
    assert lg.query("O1", now=1000.0).state is State.WAITING
    kind, order = lg.cancel("O1", now=1001.0)
    assert kind == "closed" and order.state is State.CLOSED and order.charges == 0


def test_insufficient_balance():
    lg = ledger()
    kind, order = lg.pay("O1", "2804", 100, now=0.0)
    assert kind == "insufficient" and order.charges == 0
    assert lg.pay("O1", "2804", 100, now=1.0)[0] == "insufficient"


def test_first_answer_unknown_but_paid():
    lg = ledger()
    kind, order = lg.pay("O1", "2805", 100, now=0.0)
    assert kind == "unknown" and order.state is State.PAID and order.charges == 1
    assert lg.pay("O1", "2805", 100, now=0.1)[0] == "paid"


def test_other_codes_approve_at_once():
    kind, order = ledger().pay("O1", "2877", 100, now=0.0)
    assert kind == "paid" and order.charges == 1


def test_repeated_pay_is_the_same_trade_never_a_second_payment():
    lg = ledger()
    _, first = lg.pay("O1", "2801", 100, now=0.0)
    for t in (1.0, 7.0, 8.0):
        kind, again = lg.pay("O1", "2801", 100, now=t)
        assert again is first
    assert kind == "paid" and first.charges == 1 and first.pay_calls == 4
    assert len(lg.orders(now=9.0)) == 1


def test_same_order_other_content_is_refused():
    lg = ledger()
    lg.pay("O1", "2877", 100, now=0.0)
    assert lg.pay("O1", "2877", 200, now=0.1)[0] == "mismatch"
    assert lg.pay("O1", "2878", 100, now=0.1)[0] == "mismatch"
    assert lg.query("O1", now=0.2).charges == 1


def test_cancel_refunds_a_paid_order_once():
    lg = ledger()
    lg.pay("O1", "2877", 100, now=0.0)
    assert lg.cancel("O1", now=1.0)[0] == "refunded"
    kind, order = lg.cancel("O1", now=2.0)
    assert kind == "refunded" and order.refunds == 1 and order.state is State.REFUNDED


def test_cancel_of_an_unknown_order_blocks_a_late_pay():
    lg = ledger()
    assert lg.cancel("O1", now=0.0)[0] == "closed"
    kind, order = lg.pay("O1", "2877", 100, now=0.1)
    assert kind == "closed" and order.charges == 0


def test_a_late_pay_is_unknown_until_it_lands_then_paid_despite_a_cancel():
    lg = ledger(late_delay=5.0)
    kind, order = lg.pay("O1", "2806", 100, now=0.0)
    assert kind == "paid" and lg.take_hold() == 5.0 and lg.take_hold() == 0.0
    assert lg.query("O1", now=1.0) is None and lg.orders(now=1.0) == []
    assert lg.cancel("O1", now=2.0)[0] == "not-found"  # no tombstone: the pay is on its way
    assert lg.pay("O1", "2806", 100, now=3.0)[0] == "paid" and lg.take_hold() == 2.0
    assert lg.query("O1", now=5.0).state is State.PAID and order.charges == 1
    assert lg.cancel("O1", now=6.0)[0] == "refunded" and order.refunds == 1


def test_cancel_retries_first():
    lg = ledger(cancel_retries=2)
    lg.pay("O1", "2803", 100, now=0.0)
    assert [lg.cancel("O1", now=t)[0] for t in (1.0, 2.0, 3.0)] == ["retry", "retry", "closed"]


def test_a_late_confirmation_after_the_cancel_is_not_charged():
    lg = ledger()
    lg.pay("O1", "2801", 100, now=0.0)
    lg.cancel("O1", now=1.0)
    order = lg.query("O1", now=10.0)
    assert order.state is State.CLOSED and order.charges == 0


def test_ledger_json():
    lg = ledger()
    lg.pay("O1", "2877", 1234, now=0.0)
    doc = msgspec.json.decode(sandbox.ledger_body(lg, now=1.0))
    assert doc["orders"][0]["state"] == "paid"
    assert doc["orders"][0]["amount"] == 1234 and doc["orders"][0]["charges"] == 1


def test_the_ledger_page_masks_payment_codes():
    lg = ledger()
    lg.pay("O1", "281234567890123477", 1234, now=0.0)
    text = sandbox.ledger_body(lg, now=1.0).decode()
    assert "281234567890123477" not in text
    assert msgspec.json.decode(text)["orders"][0]["auth_code"] == "281234********3477"
    assert lg.query("O1", now=1.0).auth_code == "281234567890123477"  # the ledger itself keeps it


# --- the API faces, driven by the adapters' codecs ---------------------------------


@pytest.fixture(scope="module")
def tradepay():
    merchant_private, merchant_public = signing.generate_rsa_pem()
    wallet_private, wallet_public = signing.generate_rsa_pem()
    wallet = sandbox.TradePayWallet(ledger(cancel_retries=1), signing.RsaSigner(wallet_private),
                                    signing.RsaVerifier(merchant_public))
    codec = messages.TradePayCodec("2021", signing.RsaSigner(merchant_private),
                                   signing.RsaVerifier(wallet_public))
    return wallet, codec


def tp_call(tradepay, call, order_no, now, **biz):
    wallet, codec = tradepay
    body = codec.request(call, {"out_trade_no": order_no, **biz}, "2024-05-01 12:00:00")
    status, answer = wallet.handle("POST", messages.TRADEPAY_PATH, body, now)
    assert status == 200
    reply = codec.reply(call, answer, order_no)
    return outcomes.classify("tradepay", call, reply.word, reply.family), reply


def test_tradepay_face(tradepay):
    pay = dict(auth_code="281234567890123401", total_amount="12.34", scene="bar_code")
    assert tp_call(tradepay, "pay", "A1", 0.0, **pay)[0] is outcomes.WAITING
    assert tp_call(tradepay, "query", "A1", 1.0)[0] is outcomes.WAITING
    outcome, reply = tp_call(tradepay, "query", "A1", 6.0)
    assert outcome.code == "00" and reply.trade_no
    assert tp_call(tradepay, "cancel", "A1", 7.0)[0] is outcomes.RETRY
    assert tp_call(tradepay, "cancel", "A1", 7.1)[0] is outcomes.REFUNDED
    assert tp_call(tradepay, "query", "A1", 8.0)[0].code == "05"  # TRADE_CLOSED
    assert tp_call(tradepay, "query", "nope", 8.0)[0] is outcomes.NOT_FOUND
    late = {**pay, "auth_code": "281234567890123406"}
    assert tp_call(tradepay, "pay", "A6", 0.0, **late)[0] is outcomes.PAID  # answered when it lands
    assert tp_call(tradepay, "cancel", "A6", 1.0)[0] is outcomes.NOT_FOUND
    assert tp_call(tradepay, "pay", "A4", 0.0, **{**pay, "auth_code": "2804"})[0].code == "51"
    assert tp_call(tradepay, "pay", "A5", 0.0, **{**pay, "auth_code": "2805"})[0] is outcomes.UNKNOWN
    assert tp_call(tradepay, "pay", "A5", 0.0, **{**pay, "auth_code": "2806"})[0].code == "94"
    wallet, _ = tradepay
    assert wallet.ledger.query("A1", 9.0).amount == 1234


def test_tradepay_face_refuses_a_bad_signature(tradepay):
    wallet, _ = tradepay
    other = messages.TradePayCodec("2021", signing.RsaSigner(signing.generate_rsa_pem(1024)[0]),
                                   signing.RsaVerifier(signing.generate_rsa_pem(1024)[1]))
    body = other.request("pay", {"out_trade_no": "B1", "auth_code": "2877", "total_amount": "1.00"}, "t")
    status, answer = wallet.handle("POST", messages.TRADEPAY_PATH, body, 0.0)
    assert status == 200 and b'"error_response"' in answer and b"isv.invalid-signature" in answer
    assert wallet.ledger.query("B1", 0.0) is None
    assert wallet.handle("GET", "/nope", b"", 0.0)[0] == 404


def test_micropay_face():
    secret = b"0123456789abcdef0123456789abcdef"
    wallet = sandbox.MicroPayWallet(ledger(cancel_retries=1), secret)
    codec = messages.MicroPayCodec("wx1", "1900", secret)

    def call(name, order_no, now, **fields):
        body = codec.request({"out_trade_no": order_no, **fields}, "nonce")
        status, answer = wallet.handle("POST", messages.MICROPAY_PATHS[name], body, now)
        reply = codec.reply(name, answer, order_no)
        return outcomes.classify("micropay", name, reply.word).disposition

    D = outcomes.Disposition
    assert call("pay", "M1", 0.0, auth_code="1301", total_fee="1234") is D.WAITING
    assert call("pay", "M6", 0.0, auth_code="1306", total_fee="1") is D.PAID  # answered when it lands
    assert call("cancel", "M6", 1.0) is D.NOT_FOUND
    assert call("query", "M1", 6.0) is D.PAID
    assert call("pay", "M2", 0.0, auth_code="1302", total_fee="1") is D.WAITING
    assert call("query", "M2", 6.0) is D.DECLINED
    assert call("pay", "M3", 0.0, auth_code="1303", total_fee="1") is D.WAITING
    assert call("cancel", "M3", 1.0) is D.RETRY
    assert call("cancel", "M3", 1.1) is D.REVERSED
    assert call("query", "M3", 2.0) is D.DECLINED
    assert call("pay", "M4", 0.0, auth_code="1304", total_fee="1") is D.DECLINED
    assert call("pay", "M5", 0.0, auth_code="1305", total_fee="1") is D.UNKNOWN
    assert call("query", "M5", 0.1) is D.PAID
    assert call("query", "M6", 0.1) is D.NOT_FOUND
    # A request signed with another secret: answered FAIL, which we cannot verify either.
    body = messages.MicroPayCodec("wx1", "1900", b"wrong").request({"out_trade_no": "M7"}, "n")
    _, answer = wallet.handle("POST", messages.MICROPAY_PATHS["pay"], body, 0.0)
    assert msgspec.json.decode(answer)["return_msg"] == "SIGNERROR"
    assert wallet.ledger.query("M7", 0.0) is None


def test_the_sandboxs_late_pay_lands_after_its_switch_cancelled_and_within_the_refund_window():
    """Code 06 shows its case on `make run` as the README says (91, then refunded) only if the late pay
    lands after the sandbox switch's wallets gave it up (their hold: timeout less the cancel margin)
    and before reversal_not_found_window ends (the repeated cancel then finds and refunds it)."""
    from adapters.wallet.sim import build_parser
    from switch import config

    cfg = config.default()
    wallets = [a for a in cfg.acquirers if a.type.startswith("wallet-")]
    assert wallets
    for sim in cfg.simulators:
        if sim.kind == "wallet":
            late = build_parser().parse_args(list(sim.args)).late_delay
            for a in wallets:
                held = a.timeout - min(a.cancel_margin, a.timeout / 3)  # as WalletAcquirer.authorize
                assert held < late < cfg.reversal_not_found_window, (a.name, held, late)
