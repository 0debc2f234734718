"""Wallet signatures and wire formats: round trips, tampering, amounts."""
import base64

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.wallet import messages, signing


@pytest.fixture(scope="module")
def keys():
    merchant_private, merchant_public = signing.generate_rsa_pem()
    wallet_private, wallet_public = signing.generate_rsa_pem()
    return {
        "merchant": signing.RsaSigner(merchant_private),
        "merchant_public": signing.RsaVerifier(merchant_public),
        "wallet": signing.RsaSigner(wallet_private),
        "wallet_public": signing.RsaVerifier(wallet_public),
    }


# --- signatures ---------------------------------------------------------------


def test_signing_string_sorts_and_drops_sign_and_empty_values():
    assert signing.signing_string({"b": "2", "a": "1", "sign": "x", "c": ""}) == "a=1&b=2"


def test_rsa_round_trip_and_tamper(keys):
    sig = keys["merchant"].sign(b"out_trade_no=1&total_amount=12.34")
    assert keys["merchant_public"].verify(b"out_trade_no=1&total_amount=12.34", sig)
    assert not keys["merchant_public"].verify(b"out_trade_no=1&total_amount=12.35", sig)
    assert not keys["wallet_public"].verify(b"out_trade_no=1&total_amount=12.34", sig)
    flipped = bytearray(base64.b64decode(sig))
    flipped[0] ^= 1
    assert not keys["merchant_public"].verify(b"out_trade_no=1&total_amount=12.34",
                                             base64.b64encode(bytes(flipped)).decode())
    assert not keys["merchant_public"].verify(b"x", "not base64!")


def test_rsa_key_types_are_checked(keys):
    public = signing.generate_rsa_pem(1024)[1]
    with pytest.raises(ValueError):
        signing.RsaSigner(public)


def test_hmac_round_trip_and_tamper():
    secret = b"0123456789abcdef0123456789abcdef"
    params = {"appid": "wx1", "out_trade_no": "T1", "total_fee": "1234"}
    params["sign"] = signing.hmac_sign(secret, params)
    assert len(params["sign"]) == 64 and params["sign"].isupper()
    assert signing.hmac_verify(secret, params)
    assert not signing.hmac_verify(secret, {**params, "total_fee": "1235"})
    assert not signing.hmac_verify(b"another secret", params)
    assert not signing.hmac_verify(secret, {k: v for k, v in params.items() if k != "sign"})


# --- amounts --------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**14))
def test_yuan_round_trip(minor):
    assert messages.minor_units(messages.yuan(minor)) == minor


@pytest.mark.parametrize("text,minor", [("12.34", 1234), ("0.01", 1), ("12.3", 1230), ("12", 1200)])
def test_minor_units(text, minor):
    assert messages.minor_units(text) == minor


@pytest.mark.parametrize("text", ["", "-1.00", "1.234", "01.00", "1,00", " 1.00", "1e3"])
def test_minor_units_refuses(text):
    with pytest.raises(ValueError):
        messages.minor_units(text)


def test_yuan():
    assert messages.yuan(1234) == "12.34" and messages.yuan(5) == "0.05"
    with pytest.raises(ValueError):
        messages.yuan(-1)


# --- trade.pay wire ---------------------------------------------------------------


def tradepay_codec(keys, wallet_public="wallet_public"):
    return messages.TradePayCodec("2021", keys["merchant"], keys[wallet_public])


def test_tradepay_request_is_verified_by_the_wallet(keys):
    body = tradepay_codec(keys).request(
        "pay", {"out_trade_no": "T1", "auth_code": "281234", "total_amount": "12.34"},
        "2024-05-01 12:00:00")
    method, biz = messages.tradepay_parse_request(body, keys["merchant_public"])
    assert method == "trade.pay"
    assert biz == {"out_trade_no": "T1", "auth_code": "281234", "total_amount": "12.34"}


def test_tradepay_tampered_request_is_refused(keys):
    body = tradepay_codec(keys).request("pay", {"out_trade_no": "T1", "total_amount": "12.34"}, "t")
    tampered = body.replace(b"12.34", b"99.34")
    with pytest.raises(messages.BadRequest) as exc:
        messages.tradepay_parse_request(tampered, keys["merchant_public"])
    assert exc.value.sub_code == "isv.invalid-signature"
    with pytest.raises(messages.BadRequest):
        messages.tradepay_parse_request(b"[1, 2]", keys["merchant_public"])


def test_tradepay_reply_round_trip(keys):
    body = messages.tradepay_encode_reply(
        "trade_pay_response",
        {"code": "10003", "msg": "inprocess", "out_trade_no": "T1", "trade_no": "2088001"},
        keys["wallet"])
    reply = tradepay_codec(keys).reply("pay", body, "T1")
    assert reply == messages.WalletReply("WAIT_BUYER_PAY", "10003", "2088001", "inprocess")


def test_tradepay_reply_signature_covers_the_bytes_as_sent(keys):
    body = messages.tradepay_encode_reply(
        "trade_pay_response", {"code": "10000", "msg": "Success", "out_trade_no": "T1",
                               "trade_no": "2088001", "total_amount": "12.34"}, keys["wallet"])
    codec = tradepay_codec(keys)
    assert codec.reply("pay", body, "T1").word == "TRADE_SUCCESS"
    # Same JSON meaning, different bytes: no longer the signed text.
    assert codec.reply("pay", body.replace(b'"code":', b'"code" :'), "T1") is None
    assert codec.reply("pay", body.replace(b"12.34", b"12.35"), "T1") is None
    assert codec.reply("pay", body, "another order") is None  # signed, but not ours
    assert codec.reply("query", body, "T1") is None  # answers another method
    assert codec.reply("pay", b"<html>busy</html>", "T1") is None
    assert tradepay_codec(keys, "merchant_public").reply("pay", body, "T1") is None


def test_tradepay_reply_for_another_amount_or_currency_is_not_ours(keys):
    def paid(**more):
        return messages.tradepay_encode_reply(
            "trade_pay_response", {"code": "10000", "msg": "Success", "out_trade_no": "T1",
                                   "trade_no": "2088001", "total_amount": "12.34", **more}, keys["wallet"])

    codec = tradepay_codec(keys)
    assert codec.reply("pay", paid(), "T1", 1234).word == "TRADE_SUCCESS"
    assert codec.reply("pay", paid(trans_currency="CNY"), "T1", 1234).word == "TRADE_SUCCESS"
    # Signed by the wallet, and still not the payment we asked for.
    assert codec.reply("pay", paid(), "T1", 12340) is None
    assert codec.reply("query", paid().replace(b"trade_pay", b"trade_query"), "T1", 1) is None
    assert codec.reply("pay", paid(total_amount="12.3x"), "T1", 1234) is None
    assert codec.reply("pay", paid(trans_currency="USD"), "T1", 1234) is None
    assert codec.reply("pay", paid(trans_currency="USD"), "T1") is None
    # The amount unknown to the caller (a reversal, a sweeper): only the currency is checked.
    assert codec.reply("pay", paid(), "T1").word == "TRADE_SUCCESS"


def test_tradepay_error_response_is_read(keys):
    body = messages.tradepay_encode_reply(
        messages.ERROR_RESPONSE, {"code": "40002", "msg": "Invalid Arguments",
                                  "sub_code": "isv.invalid-signature"}, keys["wallet"])
    assert tradepay_codec(keys).reply("pay", body, "T1").word == "isv.invalid-signature"


@pytest.mark.parametrize("call,answer,word", [
    ("pay", {"code": "10000"}, "TRADE_SUCCESS"),
    ("pay", {"code": "10003"}, "WAIT_BUYER_PAY"),
    ("pay", {"code": "20000", "sub_code": "ACQ.SYSTEM_ERROR"}, "ACQ.SYSTEM_ERROR"),
    ("pay", {"code": "20000"}, "code:20000"),
    ("query", {"code": "10000", "trade_status": "TRADE_CLOSED"}, "TRADE_CLOSED"),
    ("query", {"code": "40004", "sub_code": "ACQ.TRADE_NOT_EXIST"}, "ACQ.TRADE_NOT_EXIST"),
    ("cancel", {"code": "10000", "retry_flag": "N", "action": "refund"}, "refund"),
    ("cancel", {"code": "10000", "retry_flag": "N"}, "close"),
    ("cancel", {"code": "20000", "retry_flag": "Y"}, "retry"),
    ("cancel", {"code": "40004", "retry_flag": "N", "sub_code": "ACQ.TRADE_NOT_EXIST"},
     "ACQ.TRADE_NOT_EXIST"),
])
def test_tradepay_words(call, answer, word):
    assert messages.tradepay_word(call, msgspec.convert(answer, messages.TradeAnswer)) == word


# --- micropay wire -----------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


def test_micropay_request_is_verified_by_the_wallet():
    codec = messages.MicroPayCodec("wx1", "1900", SECRET)
    body = codec.request({"out_trade_no": "T1", "total_fee": "1234"}, "nonce")
    fields = messages.micropay_parse_request(body, SECRET)
    assert fields["total_fee"] == "1234" and fields["mch_id"] == "1900"
    assert fields["sign_type"] == "HMAC-SHA256"
    with pytest.raises(messages.BadRequest) as exc:
        messages.micropay_parse_request(body.replace(b"1234", b"1235"), SECRET)
    assert exc.value.sub_code == "SIGNERROR"


def test_micropay_reply_round_trip_and_tamper():
    codec = messages.MicroPayCodec("wx1", "1900", SECRET)
    body = messages.micropay_encode_reply(
        {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": "T1",
         "transaction_id": "4200001", "total_fee": "1234"}, SECRET)
    assert codec.reply("pay", body, "T1") == messages.WalletReply("SUCCESS", None, "4200001", "")
    assert codec.reply("pay", body.replace(b"1234", b"1235"), "T1") is None
    assert codec.reply("pay", body, "T2") is None
    assert messages.MicroPayCodec("wx1", "1900", b"other").reply("pay", body, "T1") is None
    assert codec.reply("pay", b'{"return_code": 1}', "T1") is None


def test_micropay_reply_for_another_amount_or_currency_is_not_ours():
    codec = messages.MicroPayCodec("wx1", "1900", SECRET)

    def paid(**more):
        return messages.micropay_encode_reply(
            {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": "T1",
             "transaction_id": "4200001", "total_fee": "1234", **more}, SECRET)

    assert codec.reply("pay", paid(), "T1", 1234).word == "SUCCESS"
    assert codec.reply("pay", paid(fee_type="CNY"), "T1", 1234).word == "SUCCESS"
    assert codec.reply("pay", paid(), "T1", 1) is None
    assert codec.reply("pay", paid(total_fee="12.34"), "T1", 1234) is None
    assert codec.reply("pay", paid(total_fee="+1234"), "T1", 1234) is None
    assert codec.reply("pay", paid(fee_type="HKD"), "T1", 1234) is None
    assert codec.reply("pay", paid(), "T1").word == "SUCCESS"


@pytest.mark.parametrize("call,fields,word", [
    ("pay", {"return_code": "FAIL", "return_msg": "SIGNERROR"}, "RETURN_FAIL"),
    ("pay", {"return_code": "SUCCESS", "result_code": "SUCCESS"}, "SUCCESS"),
    ("pay", {"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "USERPAYING"}, "USERPAYING"),
    ("query", {"return_code": "SUCCESS", "result_code": "SUCCESS", "trade_state": "NOTPAY"}, "NOTPAY"),
    ("query", {"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "ORDERNOTEXIST"},
     "ORDERNOTEXIST"),
    ("cancel", {"return_code": "SUCCESS", "result_code": "SUCCESS", "recall": "N"}, "REVERSED"),
    ("cancel", {"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "SYSTEMERROR",
                "recall": "Y"}, "RECALL"),
])
def test_micropay_words(call, fields, word):
    assert messages.micropay_word(call, fields) == word
