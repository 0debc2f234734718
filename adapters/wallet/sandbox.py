"""The wallet sandbox: its rules and its two API faces, without I/O or a clock.

Spec section 7, by the last two digits of the payment code:

====  =====================================================================
01    the customer confirms after ``confirm_delay`` s (waiting until then)
02    the customer declines after ``confirm_delay`` s
03    the customer never confirms (the order waits until cancelled)
04    insufficient balance
05    the first answer is "unknown"; the payment is in fact made
06    the pay reaches the wallet only ``late_delay`` s after it was sent (queued
      on its way), then is approved; until then the wallet knows no such order
      and answers "not found" to a query and to a cancel.  The pay's own answer
      is held until then (the switch has given up on it long before).
else  approved at once
====  =====================================================================

*Project addition:* ``06`` is the payswitch sandbox's, not the spec's: it is
how a cancel answered "not found" before the pay lands is reproduced.

The :class:`Ledger` is idempotent on the merchant order number: a repeated
pay never makes a second payment, a pay with the same number and another
code or amount is refused, a cancel closes an unpaid order and refunds a
paid one (once), and a cancel for an order the wallet never saw leaves a
closed tombstone so that a late pay cannot go through after it (except
``06``, whose pay is already on its way: "not found", no tombstone).  The first
``cancel_retries`` cancels of every order are answered "retry" (trade.pay
``retry_flag=Y``, micropay ``recall=Y``) so that path gets exercised.

:class:`TradePayWallet` and :class:`MicroPayWallet` answer HTTP requests
(method, target, body, now) -> (status, body); :mod:`.sim` serves them.
"""
from __future__ import annotations

import enum
import secrets

import msgspec

from . import messages, signing


class Scenario(enum.Enum):
    CONFIRM = "01"
    DECLINE = "02"
    NEVER = "03"
    INSUFFICIENT = "04"
    UNKNOWN_FIRST = "05"
    LATE = "06"
    APPROVE = "other"


_BY_SUFFIX = {s.value: s for s in Scenario if s is not Scenario.APPROVE}


def scenario(auth_code: str) -> Scenario:
    return _BY_SUFFIX.get(auth_code[-2:], Scenario.APPROVE)


class State(enum.Enum):
    WAITING = "waiting"  # the customer has not confirmed yet
    PAID = "paid"
    DECLINED = "declined"  # the customer declined: nothing paid
    FAILED = "failed"  # refused (insufficient balance): nothing paid
    CLOSED = "closed"  # cancelled before it was paid
    REFUNDED = "refunded"  # cancelled after it was paid: money returned


class Order(msgspec.Struct, kw_only=True):
    out_trade_no: str
    trade_no: str
    auth_code: str  # "" for a tombstone left by a cancel of an unknown order
    amount: int  # fen
    state: State
    created: float
    charges: int = 0  # times money left the customer (never more than 1)
    refunds: int = 0
    pay_calls: int = 0
    query_calls: int = 0
    cancel_calls: int = 0
    told_unknown: bool = False
    arrives: float = 0.0  # when the pay reaches the wallet (06): before it, no such order


class Ledger:
    def __init__(self, *, confirm_delay: float = 6.0, cancel_retries: int = 1,
                 trade_no_prefix: str = "20880000000000", late_delay: float = 40.0):
        self.confirm_delay = confirm_delay
        self.late_delay = late_delay
        self._hold = 0.0  # seconds the answer to the last pay is held (06)
        self.cancel_retries = cancel_retries
        self._prefix = trade_no_prefix
        self._orders: dict[str, Order] = {}

    def pay(self, out_trade_no: str, auth_code: str, amount: int, now: float) -> tuple[str, Order]:
        """("paid" | "waiting" | "unknown" | "insufficient" | "declined" | "closed" | "mismatch", order)."""
        order = self._orders.get(out_trade_no)
        if order is None:
            return self._open(out_trade_no, auth_code, amount, now)
        if now < order.arrives:  # a repeat of a pay still on its way: answered with it
            self._hold = order.arrives - now
            return "paid", order
        order.pay_calls += 1
        self._settle(order, now)
        if not order.auth_code or order.state in (State.CLOSED, State.REFUNDED):
            return "closed", order
        if (order.auth_code, order.amount) != (auth_code, amount):
            return "mismatch", order
        return _PAY_ANSWER[order.state], order

    def take_hold(self) -> float:
        """Seconds the answer just computed must wait before it is sent (0: none)."""
        hold, self._hold = self._hold, 0.0
        return hold

    def query(self, out_trade_no: str, now: float) -> Order | None:
        order = self._orders.get(out_trade_no)
        if order is not None and now < order.arrives:
            return None  # its pay has not reached the wallet yet
        if order is not None:
            order.query_calls += 1
            self._settle(order, now)
        return order

    def cancel(self, out_trade_no: str, now: float) -> tuple[str, Order]:
        """("retry" | "closed" | "refunded" | "not-found", order)."""
        order = self._orders.get(out_trade_no)
        if order is not None and now < order.arrives:
            # The pay is still on its way: "no such order", and no tombstone (that
            # wallet has none), so the pay goes through when it lands.
            return "not-found", order
        if order is None:
            order = self._add(out_trade_no, "", 0, State.CLOSED, now)
        order.cancel_calls += 1
        self._settle(order, now)
        if order.cancel_calls <= self.cancel_retries:
            return "retry", order
        if order.state is State.WAITING:
            order.state = State.CLOSED
        elif order.state is State.PAID:
            order.state = State.REFUNDED
            order.refunds += 1
        return ("refunded" if order.state is State.REFUNDED else "closed"), order

    def orders(self, now: float) -> list[Order]:
        seen = [order for order in self._orders.values() if now >= order.arrives]
        for order in seen:
            self._settle(order, now)
        return seen

    def _open(self, out_trade_no: str, auth_code: str, amount: int, now: float) -> tuple[str, Order]:
        kind = scenario(auth_code)
        if kind is Scenario.INSUFFICIENT:
            return "insufficient", self._add(out_trade_no, auth_code, amount, State.FAILED, now)
        if kind in (Scenario.CONFIRM, Scenario.DECLINE, Scenario.NEVER):
            return "waiting", self._add(out_trade_no, auth_code, amount, State.WAITING, now)
        order = self._add(out_trade_no, auth_code, amount, State.PAID, now)
        order.charges = 1
        if kind is Scenario.LATE:
            order.arrives = now + self.late_delay
            self._hold = self.late_delay
        if kind is Scenario.UNKNOWN_FIRST:
            order.told_unknown = True
            return "unknown", order
        return "paid", order

    def _add(self, out_trade_no: str, auth_code: str, amount: int, state: State, now: float) -> Order:
        trade_no = f"{self._prefix}{len(self._orders) + 1:014d}"
        order = Order(out_trade_no=out_trade_no, trade_no=trade_no, auth_code=auth_code,
                      amount=amount, state=state, created=now, pay_calls=1 if auth_code else 0)
        self._orders[out_trade_no] = order
        return order

    def _settle(self, order: Order, now: float) -> None:
        """The customer's move, once ``confirm_delay`` has passed."""
        if order.state is not State.WAITING or now < order.created + self.confirm_delay:
            return
        kind = scenario(order.auth_code)
        if kind is Scenario.CONFIRM:
            order.state = State.PAID
            order.charges += 1
        elif kind is Scenario.DECLINE:
            order.state = State.DECLINED


_PAY_ANSWER = {
    State.WAITING: "waiting",
    State.PAID: "paid",
    State.DECLINED: "declined",
    State.FAILED: "insufficient",
}

_ledger_json = msgspec.json.Encoder()
JSON = "application/json; charset=utf-8"


def ledger_body(ledger: Ledger, now: float) -> bytes:
    """The orders as JSON, each payment code masked as the switch masks a card
    number (a bearer credential, even on a sandbox page)."""
    from native.panguard import mask_pan

    orders = [msgspec.structs.replace(o, auth_code=mask_pan(o.auth_code)) if o.auth_code else o
              for o in ledger.orders(now)]
    return _ledger_json.encode({"orders": orders})


# --- trade.pay face ----------------------------------------------------------

_TRADE_STATUS = {
    State.WAITING: "WAIT_BUYER_PAY",
    State.PAID: "TRADE_SUCCESS",
    State.DECLINED: "TRADE_CLOSED",
    State.FAILED: "TRADE_CLOSED",
    State.CLOSED: "TRADE_CLOSED",
    State.REFUNDED: "TRADE_CLOSED",
}
_SUCCESS = {"code": "10000", "msg": "Success"}
_PAY_FAILURE = {
    "unknown": ("20000", "Service Currently Unavailable", "ACQ.SYSTEM_ERROR"),
    "insufficient": ("40004", "Business Failed", "ACQ.BUYER_BALANCE_NOT_ENOUGH"),
    "declined": ("40004", "Business Failed", "ACQ.TRADE_HAS_CLOSE"),
    "closed": ("40004", "Business Failed", "ACQ.TRADE_HAS_CLOSE"),
    "mismatch": ("40004", "Business Failed", "ACQ.CONTEXT_INCONSISTENT"),
}


class TradePayWallet:
    """The trade.pay face: RSA-verified requests, RSA-signed answers."""

    def __init__(self, ledger: Ledger, wallet_key: signing.RsaSigner,
                 merchant_key: signing.RsaVerifier):
        self.ledger = ledger
        self._signer = wallet_key
        self._verifier = merchant_key

    def handle(self, method: str, target: str, body: bytes, now: float) -> tuple[int, bytes]:
        if method == "GET" and target == "/sandbox/ledger":
            return 200, ledger_body(self.ledger, now)
        if method != "POST" or target != messages.TRADEPAY_PATH:
            return 404, b'{"error":"not found"}'
        try:
            api, biz = messages.tradepay_parse_request(body, self._verifier)
            fields = self._answer(api, biz, now)
        except messages.BadRequest as exc:
            api = messages.ERROR_RESPONSE
            fields = {"code": exc.code, "msg": "Invalid Arguments", "sub_code": exc.sub_code,
                      "sub_msg": str(exc)}
        key = api if api == messages.ERROR_RESPONSE else messages.response_key(api)
        return 200, messages.tradepay_encode_reply(key, fields, self._signer)

    def _answer(self, api: str, biz: dict[str, str], now: float) -> dict[str, str]:
        out_trade_no = biz.get("out_trade_no", "")
        if not out_trade_no:
            raise messages.BadRequest("40001", "isv.missing-parameter", "missing out_trade_no")
        if api == "trade.pay":
            try:
                amount = messages.minor_units(biz.get("total_amount", ""))
            except ValueError as exc:
                raise messages.BadRequest("40002", "isv.invalid-parameter", str(exc))
            kind, order = self.ledger.pay(out_trade_no, biz.get("auth_code", ""), amount, now)
            ids = {"out_trade_no": out_trade_no, "trade_no": order.trade_no,
                   "total_amount": messages.yuan(order.amount), "buyer_user_id": buyer_id("2088", order.auth_code)}
            if kind == "paid":
                return {**_SUCCESS, **ids}
            if kind == "waiting":
                return {"code": "10003", "msg": "Order success pay inprocess", **ids}
            code, msg, sub_code = _PAY_FAILURE[kind]
            return {"code": code, "msg": msg, "sub_code": sub_code, "out_trade_no": out_trade_no}
        if api == "trade.query":
            order = self.ledger.query(out_trade_no, now)
            if order is None:
                return {"code": "40004", "msg": "Business Failed",
                        "sub_code": "ACQ.TRADE_NOT_EXIST", "out_trade_no": out_trade_no}
            return {**_SUCCESS, "out_trade_no": out_trade_no, "trade_no": order.trade_no,
                    "total_amount": messages.yuan(order.amount),
                    "trade_status": _TRADE_STATUS[order.state], "buyer_user_id": buyer_id("2088", order.auth_code)}
        kind, order = self.ledger.cancel(out_trade_no, now)
        if kind == "not-found":
            return {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST",
                    "out_trade_no": out_trade_no}
        if kind == "retry":
            return {"code": "20000", "msg": "Service Currently Unavailable",
                    "sub_code": "ACQ.SYSTEM_ERROR", "retry_flag": "Y",
                    "out_trade_no": out_trade_no}
        return {**_SUCCESS, "out_trade_no": out_trade_no, "trade_no": order.trade_no,
                "retry_flag": "N", "action": "refund" if kind == "refunded" else "close"}


def buyer_id(prefix: str, payment_code: str) -> str:
    """The sandbox's payer behind a payment code: codes that agree up to their
    last 4 digits belong to the same buyer (real codes change at every scan)."""
    import hashlib

    return prefix + hashlib.sha256(payment_code[:-4].encode()).hexdigest()[:12]


# --- micropay face -----------------------------------------------------------

_TRADE_STATE = {
    State.WAITING: "USERPAYING",
    State.PAID: "SUCCESS",
    State.DECLINED: "PAYERROR",
    State.FAILED: "PAYERROR",
    State.CLOSED: "REVOKED",
    State.REFUNDED: "REVOKED",
}
_ERR_CODE = {
    "waiting": "USERPAYING",
    "unknown": "SYSTEMERROR",
    "insufficient": "NOTENOUGH",
    "declined": "ORDERCLOSED",
    "closed": "ORDERREVERSED",
    "mismatch": "OUT_TRADE_NO_USED",
}


class MicroPayWallet:
    """The micropay face: HMAC-verified requests, HMAC-signed answers."""

    def __init__(self, ledger: Ledger, secret: bytes):
        self.ledger = ledger
        self._secret = secret

    def handle(self, method: str, target: str, body: bytes, now: float) -> tuple[int, bytes]:
        if method == "GET" and target == "/sandbox/ledger":
            return 200, ledger_body(self.ledger, now)
        calls = {path: call for call, path in messages.MICROPAY_PATHS.items()}
        if method != "POST" or target not in calls:
            return 404, b'{"error":"not found"}'
        try:
            request = messages.micropay_parse_request(body, self._secret)
            fields = self._answer(calls[target], request, now)
        except messages.BadRequest as exc:
            fields = {"return_code": "FAIL", "return_msg": exc.sub_code}
        fields["nonce_str"] = secrets.token_hex(8)
        return 200, messages.micropay_encode_reply(fields, self._secret)

    def _answer(self, call: str, request: dict[str, str], now: float) -> dict[str, str]:
        out_trade_no = request.get("out_trade_no", "")
        if not out_trade_no:
            raise messages.BadRequest("FAIL", "LACK_PARAMS", "missing out_trade_no")
        head = {"return_code": "SUCCESS", "return_msg": "OK",
                "appid": request.get("appid", ""), "mch_id": request.get("mch_id", ""),
                "out_trade_no": out_trade_no}
        if call == "pay":
            try:
                amount = int(request.get("total_fee", ""))
            except ValueError:
                return {**head, "result_code": "FAIL", "err_code": "PARAM_ERROR"}
            kind, order = self.ledger.pay(out_trade_no, request.get("auth_code", ""), amount, now)
            if kind == "paid":
                return {**head, "result_code": "SUCCESS", "transaction_id": order.trade_no,
                        "total_fee": str(order.amount), "openid": buyer_id("o", order.auth_code)}
            return {**head, "result_code": "FAIL", "err_code": _ERR_CODE[kind],
                    "err_code_des": kind}
        if call == "query":
            order = self.ledger.query(out_trade_no, now)
            if order is None:
                return {**head, "result_code": "FAIL", "err_code": "ORDERNOTEXIST"}
            return {**head, "result_code": "SUCCESS", "transaction_id": order.trade_no,
                    "total_fee": str(order.amount), "trade_state": _TRADE_STATE[order.state],
                    "openid": buyer_id("o", order.auth_code)}
        kind, order = self.ledger.cancel(out_trade_no, now)
        if kind == "not-found":
            return {**head, "result_code": "FAIL", "err_code": "ORDERNOTEXIST"}
        if kind == "retry":
            return {**head, "result_code": "FAIL", "err_code": "SYSTEMERROR", "recall": "Y"}
        return {**head, "result_code": "SUCCESS", "recall": "N"}
