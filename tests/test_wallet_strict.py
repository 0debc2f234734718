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


def paying(state: str):
    """A pay answered SUCCESS whose trade_state says the payment is not (or not yet) made."""
    def answer(fields):
        return {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": fields["out_trade_no"],
                "transaction_id": "4200001", "total_fee": "1234", "trade_state": state}
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
