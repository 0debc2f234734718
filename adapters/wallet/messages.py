"""Wire formats of the two wallet API styles, client and server side (sans-I/O).

trade.pay style -- ``POST /gateway.do``, ``application/json``::

    request  {"app_id": .., "method": "trade.pay", "charset": "utf-8",
              "sign_type": "RSA2", "timestamp": "2024-05-01 12:00:00",
              "version": "1.0", "biz_content": "<JSON text>", "sign": ..}
    response {"trade_pay_response": {"code": "10000", ..}, "sign": ..}

All request values are strings; ``biz_content`` is JSON text so the signed
string is unambiguous.  The response is signed over the exact bytes of its
``<method>_response`` object (``error_response`` when the request could not
be read).  Amounts are decimal yuan, "12.34".

micropay style -- ``POST /pay/micropay``, ``/pay/orderquery``,
``/secapi/pay/reverse``, ``application/json``: one flat JSON object of string
values each way, HMAC-signed in its ``sign`` member (:mod:`.signing`).
Amounts (``total_fee``) are integer fen.  ``return_code`` says whether the
request was processed, ``result_code`` how it ended, ``err_code`` why not.

A reply that does not parse, is not signed by the wallet, names another
order, or names another amount or currency than the payment's becomes
``None``: the flow treats it like no answer at all (it queries, and cancels
or reverses at the deadline), so a wallet never gets an approval for money
it took in another amount.  Neither style's request names a currency, so
the wallet charges in its own, CNY: an answer in another is not our order's.

A pay that went through (trade.pay ``code`` 10000, micropay ``result_code``
SUCCESS) is paid only when its trade status is a paid one or absent: any other
status becomes the reply's word (:func:`tradepay_word`, :func:`micropay_word`),
so the hold loop waits or queries instead of approving.
"""
from __future__ import annotations

import re

import msgspec

from . import signing

_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,2}))?")


def yuan(minor: int) -> str:
    """Decimal yuan for an amount in fen: 1234 -> "12.34"."""
    if minor < 0:
        raise ValueError(f"negative amount {minor}")
    return f"{minor // 100}.{minor % 100:02d}"


def minor_units(text: str) -> int:
    """Fen for decimal yuan: "12.34" -> 1234, "12.3" -> 1230, "12" -> 1200."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(f"not an amount in yuan: {text!r}")
    return int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))


#: The currency both styles charge in when the request names none (ours never does).
WALLET_CURRENCY = "CNY"


def _same_money(amount: int | None, named: str | None, parse, currency: str | None) -> bool:
    """False when the answer names an amount other than ``amount`` (minor units; None:
    not known to this call) or a currency other than :data:`WALLET_CURRENCY`."""
    if currency not in (None, WALLET_CURRENCY):
        return False
    if amount is None or named is None:
        return True
    try:
        return parse(named) == amount
    except ValueError:
        return False


def _fen(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"not an amount in fen: {text!r}")
    return int(text)


class WalletReply(msgspec.Struct, frozen=True):
    """A verified answer, reduced to what the hold loop needs."""

    word: str  # the key into outcomes.TABLE
    family: str | None = None  # trade.pay ``code`` (fallback rows)
    trade_no: str | None = None
    detail: str = ""  # the wallet's message, for logs
    buyer_id: str | None = None  # the payer at the wallet (customer tokens, switch.core.vas)


class BadRequest(Exception):
    """A request the wallet (simulator) refuses before processing it."""

    def __init__(self, code: str, sub_code: str, message: str):
        super().__init__(message)
        self.code = code
        self.sub_code = sub_code


_str_map = msgspec.json.Decoder(dict[str, str])
_encode = msgspec.json.Encoder().encode


# --- trade.pay style ---------------------------------------------------------

TRADEPAY_PATH = "/gateway.do"
TRADEPAY_METHODS = {"pay": "trade.pay", "query": "trade.query", "cancel": "trade.cancel"}
ERROR_RESPONSE = "error_response"


def response_key(method: str) -> str:
    return method.replace(".", "_") + "_response"


class TradeAnswer(msgspec.Struct):
    code: str
    msg: str = ""
    sub_code: str | None = None
    sub_msg: str | None = None
    buyer_user_id: str | None = None
    out_trade_no: str | None = None
    trade_no: str | None = None
    total_amount: str | None = None
    trade_status: str | None = None
    retry_flag: str | None = None
    action: str | None = None
    trans_currency: str | None = None


_envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])
_trade_answer = msgspec.json.Decoder(TradeAnswer)
_sign = msgspec.json.Decoder(str)


# A trade.pay answer without a trade status is paid (code 10000 alone, as the wallets send it).
_TRADEPAY_PAID = (None, "TRADE_SUCCESS", "TRADE_FINISHED")


def tradepay_word(call: str, answer: TradeAnswer) -> str:
    """The outcomes-table word of a trade.pay answer."""
    if call == "cancel":
        if answer.retry_flag == "Y":
            return "retry"
        if answer.code == "10000":
            return answer.action or "close"
    elif answer.code == "10000":
        if call != "pay":
            return answer.trade_status or ""
        # code 10000 says the call went through; only the trade status says the money
        # moved.  Any other status (WAIT_BUYER_PAY, TRADE_CLOSED) is its own word: the
        # customer is still confirming, or the flow queries what the order is.
        return "TRADE_SUCCESS" if answer.trade_status in _TRADEPAY_PAID else answer.trade_status
    elif answer.code == "10003":
        return "WAIT_BUYER_PAY"
    return answer.sub_code or f"code:{answer.code}"


class TradePayCodec:
    """The merchant's side: build signed requests, verify and read answers."""

    def __init__(self, app_id: str, signer: signing.RsaSigner, verifier: signing.RsaVerifier):
        self.app_id = app_id
        self._signer = signer
        self._verifier = verifier

    def request(self, call: str, biz: dict[str, str], timestamp: str) -> bytes:
        params = {
            "app_id": self.app_id,
            "method": TRADEPAY_METHODS[call],
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": timestamp,
            "version": "1.0",
            "biz_content": _encode(biz).decode(),
        }
        params["sign"] = self._signer.sign(signing.signing_string(params).encode())
        return _encode(params)

    def reply(self, call: str, body: bytes, out_trade_no: str, amount: int | None = None) -> WalletReply | None:
        """The verified answer to ``call`` for order ``out_trade_no`` of ``amount`` fen
        (None: the caller does not know it), or None."""
        try:
            envelope = _envelope.decode(body)
            sign = _sign.decode(envelope["sign"])
        except (msgspec.DecodeError, KeyError):
            return None
        raw = envelope.get(response_key(TRADEPAY_METHODS[call])) or envelope.get(ERROR_RESPONSE)
        if raw is None or not self._verifier.verify(bytes(raw), sign):
            return None
        try:
            answer = _trade_answer.decode(raw)
        except msgspec.DecodeError:
            return None
        if answer.out_trade_no not in (None, out_trade_no):
            return None
        if not _same_money(amount, answer.total_amount, minor_units, answer.trans_currency):
            return None
        return WalletReply(
            word=tradepay_word(call, answer),
            family=answer.code,
            trade_no=answer.trade_no,
            detail=answer.sub_msg or answer.msg,
            buyer_id=answer.buyer_user_id,
        )


def tradepay_parse_request(body: bytes, verifier: signing.RsaVerifier) -> tuple[str, dict[str, str]]:
    """The wallet's side: (method, biz_content) of a verified request."""
    try:
        params = _str_map.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest("40002", "isv.invalid-parameter", f"request is not a JSON string map: {exc}")
    for name in ("app_id", "method", "biz_content", "sign"):
        if not params.get(name):
            raise BadRequest("40001", "isv.missing-parameter", f"missing {name}")
    if not verifier.verify(signing.signing_string(params).encode(), params["sign"]):
        raise BadRequest("40002", "isv.invalid-signature", "signature does not verify")
    if params["method"] not in TRADEPAY_METHODS.values():
        raise BadRequest("40002", "isv.invalid-method", f"unknown method {params['method']}")
    try:
        biz = _str_map.decode(params["biz_content"])
    except msgspec.DecodeError as exc:
        raise BadRequest("40002", "isv.invalid-parameter", f"biz_content: {exc}")
    return params["method"], biz


def tradepay_encode_reply(key: str, fields: dict[str, str], signer: signing.RsaSigner) -> bytes:
    """``{"<key>": {...}, "sign": ...}`` signed over the object's bytes as sent."""
    inner = _encode(fields)
    return b'{"%s":%s,"sign":%s}' % (key.encode(), inner, _encode(signer.sign(inner)))


# --- micropay style ----------------------------------------------------------

MICROPAY_PATHS = {"pay": "/pay/micropay", "query": "/pay/orderquery", "cancel": "/secapi/pay/reverse"}


def micropay_word(call: str, fields: dict[str, str]) -> str:
    """The outcomes-table word of a micropay answer."""
    if fields.get("return_code") != "SUCCESS":
        return "RETURN_FAIL"
    ok = fields.get("result_code") == "SUCCESS"
    if call == "cancel":
        if fields.get("recall") == "Y":
            return "RECALL"
        if ok:
            return "REVERSED"
    elif ok:
        if call != "pay":
            return fields.get("trade_state", "")
        # result_code SUCCESS with a trade_state other than SUCCESS (USERPAYING, NOTPAY,
        # CLOSED) is not a payment: that state is the word (waiting, or query the order).
        return fields.get("trade_state", "SUCCESS")
    return fields.get("err_code", "")


class MicroPayCodec:
    """The merchant's side: build signed requests, verify and read answers."""

    def __init__(self, app_id: str, mch_id: str, secret: bytes):
        self.app_id = app_id
        self.mch_id = mch_id
        self._secret = secret

    def request(self, fields: dict[str, str], nonce: str) -> bytes:
        params = {
            "appid": self.app_id,
            "mch_id": self.mch_id,
            "nonce_str": nonce,
            "sign_type": "HMAC-SHA256",
            **fields,
        }
        params["sign"] = signing.hmac_sign(self._secret, params)
        return _encode(params)

    def reply(self, call: str, body: bytes, out_trade_no: str, amount: int | None = None) -> WalletReply | None:
        """The verified answer to ``call`` for order ``out_trade_no`` of ``amount`` fen
        (None: the caller does not know it), or None."""
        try:
            fields = _str_map.decode(body)
        except msgspec.DecodeError:
            return None
        if not signing.hmac_verify(self._secret, fields):
            return None
        if fields.get("out_trade_no", out_trade_no) != out_trade_no:
            return None
        if not _same_money(amount, fields.get("total_fee"), _fen, fields.get("fee_type")):
            return None
        return WalletReply(
            word=micropay_word(call, fields),
            trade_no=fields.get("transaction_id") or None,
            buyer_id=fields.get("openid") or None,
            detail=fields.get("err_code_des") or fields.get("return_msg", ""),
        )


def micropay_parse_request(body: bytes, secret: bytes) -> dict[str, str]:
    """The wallet's side: the fields of a verified request."""
    try:
        fields = _str_map.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest("FAIL", "INVALID_REQUEST", f"request is not a JSON string map: {exc}")
    if not signing.hmac_verify(secret, fields):
        raise BadRequest("FAIL", "SIGNERROR", "signature does not verify")
    return fields


def micropay_encode_reply(fields: dict[str, str], secret: bytes) -> bytes:
    signed = dict(fields)
    signed["sign"] = signing.hmac_sign(secret, signed)
    return _encode(signed)

