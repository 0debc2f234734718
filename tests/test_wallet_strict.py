"""The wallet adapters against a wallet that answers what a test scripts: answers
that are signed but not for the payment asked, and codes no wallet issues."""
import asyncio
import time

import pytest

from adapters.wallet import messages
from adapters.wallet.http import Response
from adapters.wallet.micropay import MicroPayAcquirer
from switch.core.acquirer import Request

SECRET = b"0123456789abcdef0123456789abcdef"
FAST = dict(poll_interval=0.02, cancel_interval=0.02, cancel_margin=0.1, request_timeout=0.2)
CALLS = {path: call for call, path in messages.MICROPAY_PATHS.items()}


class ScriptedWallet:
    """Answers each call with ``answers[call](request fields)``, signed with the shared secret."""

    def __init__(self, answers):
        self.answers = answers
        self.calls: list[str] = []

    async def request(self, method, path, body, *, timeout, **_):
        fields = messages.micropay_parse_request(body, SECRET)
        call = CALLS[path]
        self.calls.append(call)
        return Response(200, [], messages.micropay_encode_reply(self.answers[call](fields), SECRET))

    async def close(self):
        pass


def adapter(wallet: ScriptedWallet) -> MicroPayAcquirer:
    acquirer = MicroPayAcquirer("wallet-b", "http://127.0.0.1:1", app_id="wx1", mch_id="1900",
                                secret=SECRET, **FAST)
    acquirer._pool = wallet
    return acquirer


def purchase(code: str, amount: int = 1234) -> Request:
    return Request(txn_id=1, kind="wallet", mti="0200", processing_code="000000", amount=amount,
                   currency="156", terminal_id="DEMO0001", merchant_id="DEMO00000000001",
                   stan="000001", transmission_time=time.strftime("%m%d%H%M%S"), rrn="000000000001",
                   entry_mode="031", tlv={"BC": code})


def authorize(wallet: ScriptedWallet, request: Request, timeout: float = 0.6):
    async def main():
        acquirer = adapter(wallet)
        try:
            return await acquirer.authorize(request, timeout)
        finally:
            await acquirer.close()

    return asyncio.run(main())


def paid(total_fee: str, **more):
    def answer(fields):
        return {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": fields["out_trade_no"],
                "transaction_id": "4200001", "total_fee": total_fee, "trade_state": "SUCCESS", **more}
    return answer


def reversed_(fields):
    return {"return_code": "SUCCESS", "result_code": "SUCCESS", "recall": "N"}


@pytest.mark.parametrize("answer", [paid("1"), paid("123400"), paid("1234", fee_type="USD")],
                         ids=["less", "more", "currency"])
def test_paid_in_another_amount_or_currency_is_reversed_not_approved(answer):
    wallet = ScriptedWallet({"pay": answer, "query": answer, "cancel": reversed_})
    result = authorize(wallet, purchase("134567890123456789"))
    # The wallet took money, but not the payment the terminal asked for: never 00, and the
    # order is reversed at the wallet before the terminal is answered.
    assert result.response_code != "00" and result.auth_code is None
    assert result.acquirer_ref.endswith("|reversed") and result.uncertain is False
    assert wallet.calls[0] == "pay" and wallet.calls[-1] == "cancel"


def test_paid_in_the_amount_asked_is_approved():
    wallet = ScriptedWallet({"pay": paid("1234"), "query": paid("1234"), "cancel": reversed_})
    result = authorize(wallet, purchase("134567890123456789"))
    assert result.response_code == "00" and wallet.calls == ["pay"]


@pytest.mark.parametrize("code", ["13", "134567890123456", "1345678901234567890123456"])
def test_a_code_of_a_length_no_wallet_issues_is_14_and_never_sent(code):
    wallet = ScriptedWallet({})
    result = authorize(wallet, purchase(code))
    assert result.response_code == "14" and wallet.calls == []


@pytest.mark.parametrize("code", ["1345678901234567", "134567890123456789", "134567890123456789012345"])
def test_codes_of_16_to_24_digits_are_sent(code):
    wallet = ScriptedWallet({"pay": paid("1234")})
    assert authorize(wallet, purchase(code)).response_code == "00" and wallet.calls == ["pay"]


# --- a "success" whose trade status is not one ------------------------------------------


def paying(state: str, fee: str = "1234"):
    """A pay answered SUCCESS whose trade_state says the payment is not (or not yet) made."""
    def answer(fields):
        return {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": fields["out_trade_no"],
                "transaction_id": "4200001", "total_fee": fee, "trade_state": state}
    return answer


def test_a_pay_answered_success_while_the_customer_is_still_paying_is_queried_not_approved():
    wallet = ScriptedWallet({"pay": paying("USERPAYING"), "query": paid("1234"), "cancel": reversed_})
    result = authorize(wallet, purchase("134567890123456789"))
    assert result.response_code == "00" and wallet.calls == ["pay", "query"]


@pytest.mark.parametrize("state", ["USERPAYING", "NOTPAY", "CLOSED", "PAYERROR", "success"])
def test_a_pay_answered_success_with_a_trade_state_that_is_not_paid_never_approves(state):
    # The query says what the order really is: here, the customer declined.
    wallet = ScriptedWallet({"pay": paying(state), "query": paying("PAYERROR"), "cancel": reversed_})
    result = authorize(wallet, purchase("134567890123456789"))
    assert result.response_code == "05" and result.auth_code is None
    assert wallet.calls == ["pay", "query"]


@pytest.fixture(scope="module")
def tradepay_keys():
    from adapters.wallet import signing

    merchant_private, merchant_public = signing.generate_rsa_pem()
    wallet_private, wallet_public = signing.generate_rsa_pem()
    codec = messages.TradePayCodec("2021", signing.RsaSigner(merchant_private), signing.RsaVerifier(wallet_public))
    return codec, signing.RsaSigner(wallet_private)


@pytest.mark.parametrize("status, disposition", [
    (None, "paid"), ("TRADE_SUCCESS", "paid"), ("TRADE_FINISHED", "paid"),
    ("WAIT_BUYER_PAY", "waiting"), ("TRADE_CLOSED", "unknown"), ("trade_success", "unknown"),
])
def test_a_trade_pay_code_10000_is_paid_only_with_a_paid_trade_status(tradepay_keys, status, disposition):
    from adapters.wallet import outcomes

    codec, wallet_key = tradepay_keys
    fields = {"code": "10000", "msg": "Success", "out_trade_no": "T1", "trade_no": "2024", "total_amount": "12.34"}
    if status is not None:
        fields["trade_status"] = status
    body = messages.tradepay_encode_reply("trade_pay_response", fields, wallet_key)
    reply = codec.reply("pay", body, "T1", 1234)
    outcome = outcomes.classify(outcomes.TRADEPAY, "pay", reply.word, reply.family)
    assert outcome.disposition.value == disposition


# --- the switch around a wallet adapter (switch.io.service, no sockets) -------------------


@pytest.fixture
def service_key(monkeypatch):
    from tests import test_service

    monkeypatch.setenv(test_service.KEY_ENV, test_service.KEY_HEX)
    return test_service


class ConfirmingWallet(ScriptedWallet):
    """A micropay wallet whose customer keeps confirming until the order is reversed, after
    which the order is revoked: a confirmation then can no longer take the money."""

    def __init__(self):
        self.reversed_at: float | None = None
        self.queried_after_reverse = 0
        super().__init__({"pay": paying("USERPAYING", "2500"), "query": self._query, "cancel": self._cancel})

    def _query(self, fields):
        if self.reversed_at is not None:
            self.queried_after_reverse += 1
            return paying("REVOKED", "2500")(fields)
        return paying("USERPAYING", "2500")(fields)

    def _cancel(self, fields):
        self.reversed_at = time.monotonic()
        return reversed_(fields)


def wallet_switch_acquirers(test_service, wallet):
    acquirer = adapter(wallet)
    acquirer.name = "wallet-a"
    return test_service.fakes(**{"wallet-a": acquirer}), acquirer


WALLET_CODE = "BC018281234567890123456"



async def pay_while_confirming(sw, ts, wallet) -> "asyncio.Task":
    """A wallet purchase started and held at the wallet: the probe at start, then the
    customer confirming (queries), nothing cancelled yet; the task of its answer."""
    original = asyncio.create_task(sw.handle(ts.request(pan=None, f22="031", f48=WALLET_CODE)))
    for _ in range(200):
        if wallet.calls.count("query") >= 3:
            break
        await asyncio.sleep(0.01)
    assert "cancel" not in wallet.calls
    return original

def test_a_terminal_reversal_while_the_customer_confirms_withdraws_the_order_at_the_wallet(service_key):
    ts = service_key
    wallet = ConfirmingWallet()
    acquirers, _ = wallet_switch_acquirers(ts, wallet)

    async def scenario(sw):
        original = await pay_while_confirming(sw, ts, wallet)
        t0 = time.monotonic()
        assert ts.TERM.decode(await asyncio.wait_for(sw.handle(ts.reversal("000002", "000001")), 1.0))[39] == "00"
        answer = ts.TERM.decode(await asyncio.wait_for(original, ts.WAIT))
        # The order is reversed at the wallet at once, not when the hold would have ended.
        assert wallet.reversed_at is not None and wallet.reversed_at - t0 < 0.5
        assert answer[39] == "68" and 38 not in answer
        assert wallet.queried_after_reverse == 0
        rec = await ts.record(sw, "000001")
        assert rec.acquirer_ref.endswith("|reversed") and rec.response_code == "68"

    ts.run(scenario, acquirers=acquirers, timeout=2.5, response_timeout=3.0)


def test_a_payment_withdrawn_before_its_pay_left_is_never_sent_and_one_polled_is_cancelled_at_once():
    from adapters.wallet import outcomes
    from adapters.wallet.flow import Call, Done, PaymentFlow, Reply

    def flow():
        return PaymentFlow(now=0.0, deadline=30.0, margin=5.0, poll_interval=3.0, cancel_interval=1.0,
                           request_timeout=5.0)

    unsent = flow()
    unsent.withdraw(0.0)
    assert unsent.step(0.0) == Done("91", "unsent", None, False)
    held = flow()
    assert held.step(0.0) == Call("pay", 5.0)
    held.feed("pay", Reply(outcomes.WAITING), 0.5)
    held.withdraw(1.0)  # between two queries: no more queries, the cancel now
    assert held.step(1.0) == Call("cancel", 5.0)
    held.feed("cancel", Reply(outcomes.REVERSED), 1.2)
    assert held.step(1.2) == Done("68", "reversed", None, False)
    answering = flow()
    answering.step(0.0)
    answering.withdraw(0.2)  # while its pay is under way: cancelled as soon as it is answered
    answering.feed("pay", Reply(None), 0.4)
    assert answering.step(0.4) == Call("cancel", 5.0)


# --- a retransmission on the other listener ------------------------------------------------


def test_a_retransmission_on_the_other_listener_while_the_original_waits_is_answered_in_its_own_dialect(
        service_key):
    from switch.core.codecs import listener_codec

    ts = service_key
    ascii87 = listener_codec("iso87-ascii")
    gate = asyncio.Event()
    wallet = ts.FakeAcquirer("wallet-a", gate=gate)

    async def scenario(sw):
        body = ts.request(pan=None, f22="031", f48=WALLET_CODE)
        original = asyncio.create_task(sw.handle(body))  # binary listener
        await asyncio.wait_for(wallet.entered.wait(), ts.WAIT)
        again = asyncio.create_task(sw.handle(ascii87.encode(ts.TERM.decode(body)), ascii87))
        binary_again = asyncio.create_task(sw.handle(body))
        await asyncio.sleep(0.02)
        gate.set()
        first, second, third = await asyncio.wait_for(asyncio.gather(original, again, binary_again), ts.WAIT)
        assert third == first
        answer = ascii87.decode(second)  # iso87-ascii, as its listener speaks
        assert answer.mti == "0210" and answer[39] == "00" and answer.fields() == ts.TERM.decode(first).fields()
        assert len(wallet.authorized) == 1
        # The other way round: an ascii original, a binary retransmission while it waits.
        gate.clear()
        body2 = ts.request(pan=None, f22="031", f48=WALLET_CODE, stan="000002")
        original = asyncio.create_task(sw.handle(ascii87.encode(ts.TERM.decode(body2)), ascii87))
        await asyncio.sleep(0.05)
        again = asyncio.create_task(sw.handle(body2))
        await asyncio.sleep(0.02)
        gate.set()
        first, second = await asyncio.wait_for(asyncio.gather(original, again), ts.WAIT)
        assert ts.TERM.decode(second).fields() == ascii87.decode(first).fields()

    ts.run(scenario, acquirers=ts.fakes(**{"wallet-a": wallet}))


# --- a reversal is named by its original's kind ------------------------------------------------


@pytest.mark.parametrize("original, kind", [
    (dict(pan=None, f22="031", f48=WALLET_CODE), "wallet"),
    (dict(), "card"),
])
def test_a_reversal_of_a_payment_in_flight_is_named_by_the_payments_kind(service_key, original, kind):
    ts = service_key
    gate = asyncio.Event()
    acquirers = ts.fakes(**{name: ts.FakeAcquirer(name, gate=gate) for name in ("wallet-a", "bank-a")})

    async def scenario(sw):
        task = asyncio.create_task(sw.handle(ts.request(**original)))
        for _ in range(300):
            if sw.inflight and next(iter(sw.inflight.values())).txn_id is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert ts.TERM.decode(await sw.handle(ts.reversal("000002", "000001")))[39] == "00"
        gate.set()
        assert ts.TERM.decode(await asyncio.wait_for(task, ts.WAIT))[39] == "68"
        assert (await ts.record(sw, "000002")).kind == kind
        assert ts.sample(sw, "payswitch_requests_total", kind=kind, mclass="reversal", code="00") == 1
        other = {"wallet": "card", "card": "wallet"}[kind]
        assert ts.sample(sw, "payswitch_requests_total", kind=other, mclass="reversal", code="00") == 0

    ts.run(scenario, acquirers=acquirers)


# --- the gauge of payments held ---------------------------------------------------------------


class HangingWallet(ConfirmingWallet):
    """The customer is confirming, then the wallet stops answering its queries at all."""

    def __init__(self, answered_queries: int):
        super().__init__()
        self.answered_queries = answered_queries

    async def request(self, method, path, body, *, timeout, **kw):
        if CALLS[path] == "query" and self.calls.count("query") >= self.answered_queries:
            self.calls.append("query")
            await asyncio.Event().wait()  # never answered, whatever its timeout says
        return await super().request(method, path, body, timeout=timeout, **kw)


def test_a_held_payment_whose_adapter_overran_is_held_no_more(service_key, monkeypatch):
    from switch.io import service

    ts = service_key
    monkeypatch.setattr(service, "_ADAPTER_GRACE", 0.05)
    wallet = HangingWallet(answered_queries=3)  # the probe at start, then two while confirming
    acquirers, acquirer = wallet_switch_acquirers(ts, wallet)

    async def before_start(sw):
        acquirer._on_state = sw._order_state

    async def scenario(sw):
        held = lambda: ts.sample(sw, "payswitch_wallet_held", acquirer="wallet-a")  # noqa: E731
        task = asyncio.create_task(sw.handle(ts.request(pan=None, f22="031", f48=WALLET_CODE)))
        for _ in range(200):
            if held() == 1:
                break
            await asyncio.sleep(0.01)
        assert held() == 1
        assert ts.TERM.decode(await asyncio.wait_for(task, ts.WAIT))[39] == "68"  # the overrun
        assert sw.metrics.internal_errors._value.get() == 1
        assert held() == 0

    ts.run(scenario, acquirers=acquirers, before_start=before_start, timeout=0.5, response_timeout=2.0)


# --- card-scheme QR codes: what their reversal needs -----------------------------------------

QR_CODE = "6212345678901234567"  # route unionpay-qr: the card network cup, the code as a token PAN


def test_a_terminal_reversal_of_a_card_scheme_qr_payment_carries_its_code_as_field_2(service_key):
    ts = service_key

    async def scenario(sw):
        assert ts.TERM.decode(await sw.handle(ts.request(pan=None, f22="031", f48="BC019" + QR_CODE)))[39] == "00"
        rec = await ts.record(sw, "000001")
        assert rec.kind == "wallet" and rec.pan_hash is not None and rec.pan_masked == "621234*********4567"
        assert rec.card_sealed is not None and QR_CODE.encode() not in rec.card_sealed
        # The terminal's 0400 carries no card number (a wallet payment has none): the
        # host, which matches reversals on field 2, gets the code it was paid with.
        assert ts.TERM.decode(await sw.handle(ts.reversal("000002", "000001")))[39] == "00"
        await ts.wait_state(sw, "000001", "reversed")
        (reversal, _), = sw.acquirers["cup"].reversed
        assert reversal.pan == QR_CODE and reversal.original.pan == QR_CODE

    ts.run(scenario)


def test_a_card_scheme_qr_payment_at_its_network_keeps_its_code_sealed_for_a_reversal_after_a_crash(service_key):
    ts = service_key
    gate = asyncio.Event()
    cup = ts.FakeAcquirer("cup", gate=gate)

    async def scenario(sw):
        task = asyncio.create_task(sw.handle(ts.request(pan=None, f22="031", f48="BC019" + QR_CODE)))
        await asyncio.wait_for(cup.entered.wait(), ts.WAIT)
        rec = await ts.record(sw, "000001")
        assert rec.state == "sent" and rec.pan_hash is not None and rec.card_sealed is not None
        gate.set()
        await asyncio.wait_for(task, ts.WAIT)

    ts.run(scenario, acquirers=ts.fakes(cup=cup))


@pytest.mark.parametrize("code, answer", [("62123456789012345678", "14"), ("6212345", "14")])
def test_a_card_scheme_qr_code_no_field_2_can_carry_is_refused_before_its_network(service_key, code, answer):
    ts = service_key

    async def scenario(sw):
        bc = "BC%03d%s" % (len(code), code)
        assert ts.TERM.decode(await sw.handle(ts.request(pan=None, f22="031", f48=bc)))[39] == answer
        assert sw.acquirers["cup"].authorized == []

    ts.run(scenario)


# --- currencies -------------------------------------------------------------------------------


def test_a_wallet_payment_without_field_49_answers_30_and_reaches_no_wallet(service_key):
    ts = service_key

    async def scenario(sw):
        answer = ts.TERM.decode(await sw.handle(ts.request(pan=None, f22="031", f48=WALLET_CODE, drop=(49,))))
        assert answer[39] == "30" and 38 not in answer
        assert sw.acquirers["wallet-a"].authorized == []

    ts.run(scenario)


def test_a_wallet_adapter_asked_to_pay_in_no_currency_answers_30_and_sends_nothing():
    wallet = ScriptedWallet({})
    request = purchase("134567890123456789")
    request.currency = None
    assert authorize(wallet, request).response_code == "30" and wallet.calls == []


WALLET_TOML = """
[[merchants]]
id = "SHOP00000000001"
terminals = ["TERM0001"]

[[acquirers]]
name = "wallet-b"
type = "{type}"
endpoints = ["http://127.0.0.1:9202"]
secret_file = "secret"
merchant_key_file = "key.pem"
wallet_public_key_file = "wallet.pem"
{currency}
[[routes]]
name = "wallet-b"
kind = "wallet"
prefixes = ["10-15"]
acquirers = ["wallet-b"]
"""


@pytest.mark.parametrize("wallet_type", ["wallet-micropay", "wallet-tradepay"])
@pytest.mark.parametrize("currency", ["978", "840"])
def test_a_wallet_acquirer_in_a_currency_its_wallet_does_not_settle_in_is_a_config_error(wallet_type, currency):
    from switch import config

    text = WALLET_TOML.format(type=wallet_type, currency=f'currency = "{currency}"\n')
    if wallet_type == "wallet-micropay":
        text = text.replace('merchant_key_file = "key.pem"\nwallet_public_key_file = "wallet.pem"\n', "")
    else:
        text = text.replace('secret_file = "secret"\n', "")
    with pytest.raises(config.ConfigError) as e:
        config.loads(text, "wallets.toml")
    assert str(e.value) == (
        f"wallets.toml: a {wallet_type} wallet settles in CNY: its currency must be \"156\", got {currency!r} "
        "- at `$.acquirers[0].currency`")


def test_a_wallet_acquirer_in_cny_or_with_the_default_currency_loads():
    from switch import config

    text = WALLET_TOML.format(type="wallet-micropay", currency="").replace(
        'merchant_key_file = "key.pem"\nwallet_public_key_file = "wallet.pem"\n', "")
    assert config.loads(text, "wallets.toml").acquirers[0].currency == "156"
    assert config.loads(text.replace("secret_file", 'currency = "156"\nsecret_file'), "w.toml").acquirers[0].currency == "156"
