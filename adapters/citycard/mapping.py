"""Between the switch's Request/Result and the clearing centre's messages (sans-I/O).

Which centre request a terminal message becomes:

=====  ================  =========================================
MTI    processing code   centre request
=====  ================  =========================================
0200   00xxxx            debit (field 48 CC)
0200   31xxxx            balance
0200   21xxxx            load (field 48 CC and M1; spec 4.1)
0220   00xxxx            offline (field 48 CC; offline debit upload)
0400   (original's)      reverse (ref of the original)
=====  ================  =========================================

Anything else is refused 12; a malformed CC or M1, or a missing field, 30
(a balance inquiry needs no CC, but one it carries must be well-formed).
The centre's protocol carries no currency: a debit, top-up or upload whose
field 49 names another currency than the one the centre is configured with
is refused 12 too (as a wallet refuses another currency), never sent.  A
reversal is never refused for its field 49.
"""
from __future__ import annotations

import re

import msgspec

from switch.core.acquirer import REVERSED, RETRY, Original, Refused, Request, Result
from switch.core.messages import RESPONSE_CODES

from .protocol import Balance, CentreRequest, Debit, Load, Offline, Response, Reverse

__all__ = [
    "Refusal",
    "CardData",
    "parse_cc",
    "centre_ref",
    "original_ref",
    "build_message",
    "to_result",
    "moves_money",
    "reversal_outcome",
    "answers",
    "shown_code",
]

_CC = re.compile(r"([0-9]{5})([0-9]{12})([0-9]{10})([0-9A-Fa-f]{8})")
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_CARD = re.compile(r"[0-9]{1,19}")
_MAX_AMOUNT = 999_999_999_999


class Refusal(Exception):
    """A request the adapter answers itself, without asking the centre."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class CardData(msgspec.Struct, frozen=True):
    """Field 48 tag CC (spec 4)."""

    counter: str  # 5 digits
    reported_balance: int  # minor units
    serial: str  # 10 digits
    tac: str  # 8 upper-case hex digits


def parse_cc(value: str | None) -> CardData:
    if value is None:
        raise Refusal("30", "field 48 tag CC missing")
    match = _CC.fullmatch(value)
    if match is None:
        raise Refusal(
            "30",
            f"field 48 tag CC: expected counter(5 digits) + balance(12 digits) + serial(10 digits)"
            f" + TAC(8 hex), got {len(value)} characters",
        )
    counter, balance, serial, tac = match.groups()
    return CardData(counter, int(balance), serial, tac.upper())


def centre_ref(txn_id: int, rrn: str) -> str:
    """The ref sent to the centre: fixed for a transaction, so retries are idempotent."""
    return f"{txn_id}.{rrn}"


def original_ref(original: Original) -> str:
    return original.acquirer_ref or centre_ref(original.txn_id, original.rrn)


def _card(request: Request) -> str:
    if not request.pan or _CARD.fullmatch(request.pan) is None:
        raise Refusal("30", "card number (field 2) missing or not 1 to 19 digits")
    return request.pan


def _amount(request: Request) -> int:
    if request.amount is None:
        raise Refusal("30", "amount (field 4) missing")
    if not 0 < request.amount <= _MAX_AMOUNT:
        raise Refusal("13", f"amount {request.amount} out of range")
    return request.amount


_TERMINAL = re.compile(r"[ -~]{8}")


def _terminal(request: Request) -> str:
    # The centre's protocol (and the TAC, MACed over its ASCII bytes) takes 8 printable ASCII characters.
    if _TERMINAL.fullmatch(request.terminal_id) is None:
        raise Refusal("30", "terminal ID (field 41) must be 8 printable ASCII characters")
    return request.terminal_id


def build_message(request: Request, currency: str | None = None) -> CentreRequest:
    """The centre request for ``request`` (its ``id`` left 0); raises :class:`Refusal`.

    ``currency``: the one the centre takes (ISO 4217 numeric), None: any.
    """
    message = _message(request)
    if currency is not None and moves_money(message) and request.currency not in (None, currency):
        raise Refusal("12", f"field 49 {request.currency!r} is not the centre's currency {currency!r}")
    return message


def _message(request: Request) -> CentreRequest:
    mti = request.mti
    kind = request.processing_code[:2]
    if mti == "0400":
        if request.original is None:
            raise Refusal("25", "reversal without its original")
        return Reverse(id=0, ref=original_ref(request.original))
    ref = centre_ref(request.txn_id, request.rrn)
    if mti == "0200" and kind == "31":
        if request.amount:  # section 7: field 4 zero; an amount would read as money asked for
            raise Refusal("13", f"balance inquiry with amount {request.amount}: field 4 must be zero")
        if "CC" in request.tlv:  # not needed, but a malformed one is a malformed request
            parse_cc(request.tlv["CC"])
        return Balance(id=0, card=_card(request))
    if (mti == "0200" and kind == "00") or (mti == "0220" and kind == "00"):
        card = _card(request)
        cc = parse_cc(request.tlv.get("CC"))
        cls = Debit if mti == "0200" else Offline
        return cls(
            id=0,
            card=card,
            counter=cc.counter,
            amount=_amount(request),
            serial=cc.serial,
            terminal_id=_terminal(request),
            merchant_id=request.merchant_id[:15],
            reported_balance=cc.reported_balance,
            tac=cc.tac,
            ref=ref,
        )
    if mti == "0200" and kind == "21":
        card = _card(request)
        cc = parse_cc(request.tlv.get("CC"))
        m1 = request.tlv.get("M1")
        if m1 is None or _HEX8.fullmatch(m1) is None:
            raise Refusal("30", "top-up without field 48 tag M1 (8 hex digits)")
        return Load(
            id=0,
            card=card,
            counter=cc.counter,
            amount=_amount(request),
            serial=cc.serial,
            terminal_id=_terminal(request),
            mac1=m1.upper(),
            ref=ref,
        )
    raise Refusal("12", f"MTI {mti} with processing code {request.processing_code} is not a city-card transaction")


def _ascii_alnum(text: str) -> bool:
    """Letters and digits of ASCII: what fields 38 (an6) and 39 (an2) can carry."""
    return text.isascii() and text.isalnum()


# A reversal answered with one of these may go through when repeated.
_TRANSIENT = frozenset({"68", "91", "96"})


def reversal_outcome(message: Reverse, response: Response) -> str:
    """What the centre's answer to a reverse means for the switch's reversal queue.

    00 echoing the ref: reversed.  An answer that names another ref, or a
    code outside section 5, says nothing about this reversal; 68, 91 and 96
    are transient: repeat it.  Any other code is the centre's considered
    refusal of this very booking (a top-up whose money the card has spent
    since: 51), which a repeat cannot change: an operator's
    (:class:`switch.core.acquirer.Refused`).
    """
    code = response.code
    if response.ref != message.ref or code not in RESPONSE_CODES or code in _TRANSIENT:
        return RETRY
    if code == "00":
        return REVERSED
    return Refused(code, f"the centre refused the reversal of ref {message.ref} with {code}")


def answers(ref: str | None, response: Response) -> bool:
    """Whether ``response`` can be the answer to the request sent under ``ref``.

    The protocol echoes the ref: an answer naming another ref is another
    transaction's, and an approval naming none does not say whose it is.
    A refusal without a ref is the request's own (the centre's 30 to a
    request it could not read has none).  A request sent without a ref (a
    balance inquiry) takes only an answer naming none: one naming a ref is
    a debit's or a top-up's, and its balance another card's.
    """
    if response.ref == ref:
        return True
    return ref is not None and response.ref is None and response.code != "00"


def shown_code(response: Response) -> str:
    """The answer's code fit for a log line: one of section 5, else not the centre's text."""
    return response.code if response.code in RESPONSE_CODES else "a code outside section 5"


def moves_money(message: CentreRequest) -> bool:
    """Whether a lost answer to ``message`` leaves money to reverse."""
    return isinstance(message, (Debit, Offline, Load))


def to_result(message: CentreRequest, response: Response) -> Result:
    """The switch's Result from the centre's answer to ``message``."""
    ref = getattr(message, "ref", None)
    code = response.code
    uncertain = moves_money(message)
    if code not in RESPONSE_CODES:  # the protocol's codes are section 5's; another tells nothing
        return Result(response_code="96", acquirer_ref=ref, uncertain=uncertain)
    if ref is not None and response.ref != (ref if code == "00" or response.ref is not None else None):
        # Another transaction's answer, or an approval that does not say whose it
        # is (the protocol echoes the ref): never approved for the wrong thing.
        return Result(response_code="96", acquirer_ref=ref, uncertain=uncertain)
    tlv: dict[str, str] = {}
    if response.balance is not None and 0 <= response.balance <= _MAX_AMOUNT and not isinstance(message, Reverse):
        tlv["CB"] = f"{response.balance:012d}"
    elif isinstance(message, Balance) and code == "00":
        # Section 7: the answer to an inquiry is the balance in CB; without one
        # (none, below zero, beyond 12 digits) there is nothing to approve.
        return Result(response_code="96")
    if isinstance(message, Load) and code == "00":
        if response.mac2 is None or _HEX8.fullmatch(response.mac2) is None:
            # Credited at the centre, but the card cannot credit itself: undo.
            return Result(response_code="96", acquirer_ref=ref, uncertain=True)
        tlv["M2"] = response.mac2.upper()
    return Result(
        response_code=code,
        auth_code=response.auth if code == "00" and response.auth and len(response.auth) == 6
        and _ascii_alnum(response.auth) else None,
        acquirer_ref=ref,
        tlv=tlv,
    )
