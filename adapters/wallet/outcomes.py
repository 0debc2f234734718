"""Every answer of both wallet API styles, and what it means for the payment.

One table, checkable against the spec (docs/terminal-interface.md sections 5-7):
a row is keyed by (style, call, word) where the word is the wallet's own:
the trade status, the sub-code / error code, or for a cancel its action.
``disposition`` tells the hold loop (:mod:`adapters.wallet.flow`) what to do
next; ``code`` is the field 39 response code when the answer is final.

Words no row names fall back on the row for their code family (trade.pay
``code:40004`` and so on), then on :data:`UNKNOWN`: an answer we cannot read
is never taken as "not paid" -- it makes the flow query again, and cancel
or reverse at the deadline.
"""
from __future__ import annotations

import enum

import msgspec


class Disposition(enum.Enum):
    PAID = "paid"  # final: the customer paid
    WAITING = "waiting"  # the customer is confirming on the phone: poll
    UNKNOWN = "unknown"  # the wallet could not say (system error, no answer): query
    NOT_FOUND = "not-found"  # no such order at the wallet: nothing was paid (so far)
    DECLINED = "declined"  # final: nothing paid, answer ``code``
    CLOSED = "closed"  # cancel acknowledged, the unpaid order is closed
    REFUNDED = "refunded"  # cancel acknowledged, the paid order is refunded
    REVERSED = "reversed"  # reverse acknowledged (micropay does not say which)
    RETRY = "retry"  # cancel / reverse not final yet: call it again


#: Dispositions of a cancel / reverse that mean "no money stays with the merchant"
#: (NOT_FOUND only for an order whose pay never left the switch: after one that may
#: have reached the wallet, see :mod:`adapters.wallet.flow`).
ACKNOWLEDGED = frozenset(
    {Disposition.CLOSED, Disposition.REFUNDED, Disposition.REVERSED, Disposition.NOT_FOUND}
)


class Outcome(msgspec.Struct, frozen=True):
    disposition: Disposition
    code: str | None = None  # field 39 when the outcome ends the payment


PAID = Outcome(Disposition.PAID, "00")
WAITING = Outcome(Disposition.WAITING)
UNKNOWN = Outcome(Disposition.UNKNOWN)
NOT_FOUND = Outcome(Disposition.NOT_FOUND)
RETRY = Outcome(Disposition.RETRY)
CLOSED = Outcome(Disposition.CLOSED, "68")
REFUNDED = Outcome(Disposition.REFUNDED, "68")
REVERSED = Outcome(Disposition.REVERSED, "68")


def declined(code: str) -> Outcome:
    return Outcome(Disposition.DECLINED, code)


# Spec 6: the deadline came while the customer was still confirming; the wallet
# payment is cancelled and the terminal gets 68.
NEVER_CONFIRMED = "68"
# The deadline came (or the pay could not be delivered) and the wallet never gave
# a readable state of the order: the wallet is inoperative.
WALLET_UNAVAILABLE = "91"
# Our own request was refused as malformed or badly signed (configuration error).
OUR_FAULT = "96"

TRADEPAY = "tradepay"
MICROPAY = "micropay"

TABLE: dict[tuple[str, str, str], Outcome] = {
    # --- trade.pay style: pay ------------------------------------------------
    (TRADEPAY, "pay", "TRADE_SUCCESS"): PAID,  # code 10000
    (TRADEPAY, "pay", "WAIT_BUYER_PAY"): WAITING,  # code 10003
    (TRADEPAY, "pay", "ACQ.SYSTEM_ERROR"): UNKNOWN,
    (TRADEPAY, "pay", "aop.unknow-error"): UNKNOWN,
    (TRADEPAY, "pay", "isp.unknow-error"): UNKNOWN,
    # The order was paid by an earlier pay: the query returns its trade number.
    (TRADEPAY, "pay", "ACQ.TRADE_HAS_SUCCESS"): UNKNOWN,
    (TRADEPAY, "pay", "ACQ.BUYER_BALANCE_NOT_ENOUGH"): declined("51"),
    (TRADEPAY, "pay", "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH"): declined("51"),
    (TRADEPAY, "pay", "ACQ.PAYMENT_AUTH_CODE_INVALID"): declined("14"),
    (TRADEPAY, "pay", "ACQ.PAYMENT_FAIL"): declined("05"),
    (TRADEPAY, "pay", "ACQ.PAYMENT_REQUEST_HAS_RISK"): declined("05"),
    (TRADEPAY, "pay", "ACQ.PULL_MOBILE_CASHIER_FAIL"): declined("05"),
    (TRADEPAY, "pay", "ACQ.MOBILE_PAYMENT_SWITCH_OFF"): declined("05"),
    (TRADEPAY, "pay", "ACQ.ERROR_BALANCE_PAYMENT_DISABLE"): declined("05"),
    (TRADEPAY, "pay", "ACQ.BUYER_PAYMENT_AMOUNT_DAY_LIMIT_ERROR"): declined("05"),
    (TRADEPAY, "pay", "ACQ.BUYER_ENABLE_STATUS_FORBID"): declined("62"),
    (TRADEPAY, "pay", "ACQ.TRADE_HAS_CLOSE"): declined("05"),  # cancelled before it was paid
    (TRADEPAY, "pay", "ACQ.TOTAL_FEE_EXCEED"): declined("13"),
    (TRADEPAY, "pay", "ACQ.BUYER_SELLER_EQUAL"): declined("12"),
    (TRADEPAY, "pay", "ACQ.ACCESS_FORBIDDEN"): declined("58"),
    # Same merchant order number, different content (spec 6: 94).
    (TRADEPAY, "pay", "ACQ.CONTEXT_INCONSISTENT"): declined("94"),
    (TRADEPAY, "pay", "ACQ.INVALID_PARAMETER"): declined(OUR_FAULT),
    (TRADEPAY, "pay", "isv.invalid-signature"): declined(OUR_FAULT),
    (TRADEPAY, "pay", "isv.invalid-app-id"): declined(OUR_FAULT),
    (TRADEPAY, "pay", "code:40004"): declined("05"),  # business failure: nothing paid
    (TRADEPAY, "pay", "code:40001"): declined(OUR_FAULT),  # missing arguments
    (TRADEPAY, "pay", "code:40002"): declined(OUR_FAULT),  # invalid arguments
    (TRADEPAY, "pay", "code:40006"): declined(OUR_FAULT),  # insufficient permissions
    (TRADEPAY, "pay", "code:20000"): UNKNOWN,  # service unavailable
    # --- trade.pay style: query ----------------------------------------------
    (TRADEPAY, "query", "TRADE_SUCCESS"): PAID,
    (TRADEPAY, "query", "TRADE_FINISHED"): PAID,
    (TRADEPAY, "query", "WAIT_BUYER_PAY"): WAITING,
    # Closed unpaid while we held it: the customer declined on the phone.
    (TRADEPAY, "query", "TRADE_CLOSED"): declined("05"),
    (TRADEPAY, "query", "ACQ.TRADE_NOT_EXIST"): NOT_FOUND,
    # --- trade.pay style: cancel (retry_flag / action of the answer) ---------
    (TRADEPAY, "cancel", "close"): CLOSED,
    (TRADEPAY, "cancel", "refund"): REFUNDED,
    (TRADEPAY, "cancel", "retry"): RETRY,
    (TRADEPAY, "cancel", "ACQ.TRADE_NOT_EXIST"): NOT_FOUND,
    # --- micropay style: micropay --------------------------------------------
    (MICROPAY, "pay", "SUCCESS"): PAID,
    (MICROPAY, "pay", "USERPAYING"): WAITING,
    (MICROPAY, "pay", "SYSTEMERROR"): UNKNOWN,
    (MICROPAY, "pay", "BANKERROR"): UNKNOWN,
    (MICROPAY, "pay", "ORDERPAID"): UNKNOWN,  # paid by an earlier micropay: query it
    (MICROPAY, "pay", "NOTENOUGH"): declined("51"),
    (MICROPAY, "pay", "AUTHCODEEXPIRE"): declined("14"),
    (MICROPAY, "pay", "AUTH_CODE_INVALID"): declined("14"),
    (MICROPAY, "pay", "AUTH_CODE_ERROR"): declined("14"),
    (MICROPAY, "pay", "BUYER_MISMATCH"): declined("05"),
    (MICROPAY, "pay", "NOTSUPORTCARD"): declined("05"),
    (MICROPAY, "pay", "TRADE_ERROR"): declined("05"),
    (MICROPAY, "pay", "ORDERCLOSED"): declined("05"),
    (MICROPAY, "pay", "ORDERREVERSED"): declined("05"),
    (MICROPAY, "pay", "OUT_TRADE_NO_USED"): declined("94"),
    (MICROPAY, "pay", "NOAUTH"): declined("58"),
    (MICROPAY, "pay", "PARAM_ERROR"): declined(OUR_FAULT),
    (MICROPAY, "pay", "SIGNERROR"): declined(OUR_FAULT),
    (MICROPAY, "pay", "LACK_PARAMS"): declined(OUR_FAULT),
    (MICROPAY, "pay", "APPID_NOT_EXIST"): declined(OUR_FAULT),
    (MICROPAY, "pay", "MCHID_NOT_EXIST"): declined(OUR_FAULT),
    (MICROPAY, "pay", "APPID_MCHID_NOT_MATCH"): declined(OUR_FAULT),
    # return_code FAIL: the request was refused before any processing.
    (MICROPAY, "pay", "RETURN_FAIL"): declined(OUR_FAULT),
    # --- micropay style: orderquery (trade_state, or err_code) ---------------
    (MICROPAY, "query", "SUCCESS"): PAID,
    (MICROPAY, "query", "USERPAYING"): WAITING,
    (MICROPAY, "query", "NOTPAY"): WAITING,
    (MICROPAY, "query", "PAYERROR"): declined("05"),  # the customer declined / payment failed
    (MICROPAY, "query", "CLOSED"): declined("05"),
    (MICROPAY, "query", "REVOKED"): declined("05"),
    (MICROPAY, "query", "REFUND"): declined("05"),
    (MICROPAY, "query", "ORDERNOTEXIST"): NOT_FOUND,
    # --- micropay style: reverse (recall flag) -------------------------------
    (MICROPAY, "cancel", "REVERSED"): REVERSED,
    (MICROPAY, "cancel", "RECALL"): RETRY,
    (MICROPAY, "cancel", "ORDERNOTEXIST"): NOT_FOUND,
}

# Cancel / reverse answers no row names are not acknowledgements: retry them.
_FALLBACK = {"pay": UNKNOWN, "query": UNKNOWN, "cancel": RETRY}


def classify(style: str, call: str, word: str, family: str | None = None) -> Outcome:
    """The outcome of the wallet answering ``word`` to ``call`` ("pay", "query", "cancel")."""
    row = TABLE.get((style, call, word))
    if row is None and family is not None:
        row = TABLE.get((style, call, f"code:{family}"))
    return row if row is not None else _FALLBACK[call]
