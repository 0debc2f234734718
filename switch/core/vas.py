"""Value-added services at the moment of payment: customer tokens, coupons, points (issue 11).

Sans-I/O like the engine: the two moments are generators that yield a
:class:`~switch.core.commands.Vas` command, which the driver executes with
the deadline enforced, and get back what each service answered (or the
exception that stopped it).  The payment never depends on a service:
past its deadline, on an error or a nonsensical answer the payment goes on
as if the service were not configured, counted in ``metrics.vas_call``.

- *before authorization* (0100/0200 purchases, not city cards, whose
  purse the card debits itself): the service may lower the
  amount (coupon, member price).  The lowered amount is journaled before the
  request leaves, so the acquirer, the 0500 totals and any reversal use it;
  the response carries it in field 4 and the discount in field 48 ``DS``.
  A refused coupon changes nothing but the receipt line (``LY``).
- *after approval* (0200 purchases and 0220 completions answered 00 and
  not being reversed): points, enrolment; the service's receipt line goes
  to ``LY``.  Never called for declines, reversals, refunds, balance
  enquiries or top-ups (a refund's event on the stream tells partners to
  take points back).

A service sees only what :func:`payload` puts in: the customer token,
merchant, terminal, amount, currency, kind, coupon code and the switch's
RRN as an idempotency reference -- never card data.  A coupon code that
holds a card number (a terminal that sent the card in ``CP``, a cashier who
scanned the card for the coupon) goes as null; what a service answers for
the receipt is masked (:func:`native.panguard.mask_pans`) before it reaches
``LY``, since a partner may quote back what it was given.

The customer token is a keyed hash (HMAC-SHA256) of the payer's identifier
(the PAN for cards and city cards, the wallet's buyer id) under the
merchant group's token key, versioned: the same card at the same group
always gives the same token, another group an unrelated one, and nobody
without the key can go from a token back to a card number.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Generator, Mapping

from native.panguard import holds_pan, mask_pans
from switch.core.commands import Op, Vas

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

BEFORE, AFTER = "before", "after"
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_LY_MAX = 99  # characters of receipt text in field 48 LY
_MIN_DEADLINE = 0.001  # seconds: less than this to spare, no service is asked


def customer_token(key: bytes, version: int, kind: str, ident: str) -> str:
    """``t<version>`` + 32 letters: 128 bits of HMAC-SHA256 of ``kind:ident``.

    Letters only (a-p for the hex digits), so a token can never look like a
    card number to the journal's PAN guard or to a scanner.
    """
    digest = hmac.new(key, f"{kind}:{ident}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"t{version}{digest.translate(_LETTERS)}"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value of a request or webhook: ``t=<unix>,v1=<hex HMAC-SHA256>``.

    The MAC covers ``<timestamp>.`` followed by the exact body bytes.
    """
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, now: float, tolerance: float = 300.0) -> bool:
    """True if ``header`` signs ``body`` under ``secret`` within ``tolerance`` seconds of ``now``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp).split("v1=", 1)[1], given)


def payload(moment: str, *, ref: str, token: str | None, merchant: str, terminal: str, amount: int | None,
            currency: str | None, kind: str, coupon: str | None) -> dict:
    """What a service is told: these keys and nothing else (docs/value-added-services.md).

    A coupon holding a card number is sent as null: the services are outside
    the cardholder-data environment (PCI DSS 3.4, 12.8).
    """
    if holds_pan(coupon):
        coupon = None
    return {"moment": moment, "ref": ref, "token": token, "merchant": merchant, "terminal": terminal,
            "amount": amount, "currency": currency, "kind": kind, "coupon": coupon}


class VasHook:
    """The services and token keys of each merchant, and the two moments.

    ``token_keys``: group → (version, key), the highest version of each
    group (loaded from files or the environment by the I/O layer).
    """

    def __init__(self, engine, token_keys: Mapping[str, tuple[int, bytes]] | None = None) -> None:
        self.engine = engine
        self.token_keys = dict(token_keys or {})
        self.groups: dict[str, str] = {}
        self.services: dict[tuple[str, str], list] = {}  # filled by apply(), with the engine's
        # Whether any merchant has a service after approval: decided by apply(), so that
        # every payment of a switch without one (the default) is answered at once.
        self.asks_after = False

    def apply(self, cfg) -> None:
        self.groups = {mc.id: (mc.group or mc.id) for mc in cfg.merchants}
        services: dict[tuple[str, str], list] = {}
        for s in getattr(cfg, "vas", ()):
            for merchant in s.merchants:
                for moment in s.moments:
                    services.setdefault((merchant, moment), []).append(s)
        self.services = services
        self.asks_after = any(moment == AFTER for _, moment in services)

    def token(self, merchant: str, kind: str, ident: str | None) -> str | None:
        if not ident:
            return None
        found = self.token_keys.get(self.groups.get(merchant, merchant))
        if found is None:
            return None
        version, key = found
        return customer_token(key, version, kind, ident)

    def _call(self, moment: str, merchant: str, body: dict, left: float) -> Gen:
        """Yield the command; (service name, answer) for every service that answered sensibly.

        ``left``: seconds the terminal's budget spares the services (:meth:`_spare`);
        their deadline is cut to it, and with nothing to spare none is asked.

        An answer that makes no sense (:func:`fault`) counts as an error and is
        dropped whole, its receipt line too: as if the service were not there.
        """
        services = self.services.get((merchant, moment))
        if not services:
            return []
        metrics = self.engine.metrics
        names = tuple(s.name for s in services)
        deadline = min(max(s.deadline for s in services), left)
        if deadline < _MIN_DEADLINE:
            for name in names:
                metrics.vas_call(name, moment, "timeout")
            log.info("rrn %s: value-added services skipped at %s: the terminal's response_timeout leaves them "
                     "no time", body["ref"], moment)
            return []
        try:
            answers = yield Vas(moment, names, body, deadline)
        except Exception as e:  # the driver broke the deadline itself: no service this time
            for name in names:
                metrics.vas_call(name, moment, "timeout")
            log.info("rrn %s: value-added services skipped at %s: %s", body["ref"], moment, type(e).__name__)
            return []
        if not isinstance(answers, dict):
            answers = {}
        out = []
        for name in names:
            if name not in answers or isinstance(answers[name], BaseException):
                answer = answers.get(name)
                outcome = "timeout" if answer is None or isinstance(answer, TimeoutError) else "error"
                metrics.vas_call(name, moment, outcome)
                log.info("rrn %s: service %s skipped at %s (%s)", body["ref"], name, moment, outcome)
                continue
            answer = answers[name]
            wrong = fault(moment, answer, body)
            if wrong is not None:
                metrics.vas_call(name, moment, "error")
                # What it said is not logged: a partner may quote back a card number.
                log.warning("rrn %s: service %s answered at %s with %s; ignored", body["ref"], name, moment, wrong)
                continue
            metrics.vas_call(name, moment, "ok")
            out.append((name, answer))
        return out

    def _spare(self, rec, flight, acquirer: str | None = None) -> float:
        """Seconds left for the services in the terminal's budget (spec section 6).

        The services' time comes out of the response_timeout budget, never out of
        the acquirer's: before authorization, the first acquirer's own timeout is
        kept for it (a slow coupon must not turn an approval into a 68).
        """
        engine = self.engine
        left = engine._budget_end(rec, flight) - engine.clock()
        if acquirer is not None and acquirer in engine.acquirer_cfg:
            left -= engine.acquirer_cfg[acquirer].timeout
        return left

    # -- the moments -------------------------------------------------------------------

    def before(self, msg, rec, merchant: str, kind: str, tlv: Mapping[str, str], flight) -> Gen:
        """Coupons and member prices: may lower ``msg[4]`` and the journaled amount.

        Sets ``flight.vas_tlv`` (DS, LY) for the response; returns nothing.
        Not a generator itself: it returns what to run (``yield from``), an
        empty tuple when the merchant has no service at this moment, the
        common case, which then costs no generator.
        """
        services = self.services
        if not services or not services.get((merchant, BEFORE)):  # no service at all: no key to build
            return ()
        return self._before(msg, rec, merchant, kind, tlv, flight)

    def _before(self, msg, rec, merchant: str, kind: str, tlv: Mapping[str, str], flight) -> Gen:
        if msg.mti[:3] not in ("010", "020") or msg[3][:2] != "00" or 4 not in msg:
            return None
        if kind == "citycard":
            return None  # the card debits its own purse (its TAC covers the amount): nothing to lower
        amount = int(msg[4])
        if rec.amount is not None and 0 < rec.amount < amount:
            # Handled again (journaled, never sent: the switch died in between): the
            # discount journaled under this ref stands, and the service is not asked
            # again: it could answer otherwise (or not in time) and leave the acquirer
            # asked for one amount while the journal, the totals and a reversal say another.
            msg[4] = "%012d" % rec.amount
            flight.vas_tlv = {"DS": "%012d" % (amount - rec.amount)}
            log.info("rrn %s: handled again with the discount journaled before", rec.rrn)
            return None
        body = payload(BEFORE, ref=rec.rrn, token=rec.customer_token, merchant=merchant, terminal=msg[41],
                       amount=amount, currency=msg.get(49), kind=kind, coupon=tlv.get("CP"))
        answers = yield from self._call(BEFORE, merchant, body, self._spare(rec, flight, rec.acquirer))
        lowered, lines, winner = None, [], None
        for name, answer in answers:
            new = answer.get("amount")
            if new is not None and new != amount:
                if lowered is not None:
                    # Another service's discount won: this one is not given, nor printed.
                    log.info("rrn %s: service %s's discount not taken, an earlier one's was", rec.rrn, name)
                    continue
                lowered, winner = new, name
            line = answer.get("line")
            if line:
                lines.append((name, line))
        out: dict[str, str] = {}
        if lowered is not None:
            try:
                yield Op("update", rec.id, amount=lowered)
            except Exception:
                # Not journaled: the payment goes on at its full amount.
                log.exception("rrn %s: cannot journal the discounted amount; full amount", rec.rrn)
                self.engine.metrics.vas_call("journal", BEFORE, "error")
                lowered = None
                lines = [(name, line) for name, line in lines if name != winner]  # nor printed
        if lowered is not None:
            msg[4] = "%012d" % lowered
            out["DS"] = "%012d" % (amount - lowered)
        if lines:
            out["LY"] = _line([line for _, line in lines])
        flight.vas_tlv = out
        return None

    def after(self, rec, request, result, code: str, reverse: bool, flight, services: bool = True):
        """Points and enrolment after an approval: (field 48 tags of the response, token to journal),
        or when services are to be called the generator that returns them (so the common case,
        no service, costs no generator).

        ``services`` False: the approval is of something counted already (a
        city-card upload sent again, switch.core.uploads): no service is called.
        """
        # The acquirer's tags go with its own answer only.  When the terminal gets another
        # code (68: reversed while at the acquirer, spec 6.1), a wallet's trade number, a
        # city card's balance after the debit or its top-up MAC2 would speak of money
        # the switch is taking back.
        extra = getattr(flight, "vas_tlv", None)
        if not (extra or self.asks_after) and request.kind != "wallet":
            # No service after approval anywhere, no line from before it, no buyer to
            # token: the acquirer's tags as they are (the common case, every payment).
            return (dict(result.tlv) if code == result.response_code else {}), None
        tlv = dict(result.tlv) if code == result.response_code else {}
        extra = extra or {}
        token = None
        if request.kind == "wallet" and getattr(result, "buyer_id", None):
            token = self.token(request.merchant_id or rec.merchant_id, "wallet", result.buyer_id)
        if extra.get("DS"):
            tlv["DS"] = extra["DS"]
        lines = [extra["LY"]] if extra.get("LY") else []
        merchant = rec.merchant_id
        approved = code == "00" and not reverse and not result.uncertain
        purchase = request.mti in ("0200", "0220") and request.processing_code[:2] == "00"
        if approved and purchase and services and self.services.get((merchant, AFTER)):
            return self._after(rec, request, flight, merchant, tlv, token, lines)
        if lines:
            tlv["LY"] = _line(lines)
        return tlv, token

    def _after(self, rec, request, flight, merchant: str, tlv: dict, token, lines: list) -> Gen:
        body = payload(AFTER, ref=rec.rrn, token=token or rec.customer_token, merchant=merchant,
                       terminal=request.terminal_id, amount=request.amount, currency=request.currency,
                       kind=request.kind, coupon=request.tlv.get("CP"))
        for name, answer in (yield from self._call(AFTER, merchant, body, self._spare(rec, flight))):
            line = answer.get("line")
            if line:
                lines.append(line)
        if lines:
            tlv["LY"] = _line(lines)
        return tlv, token


def fault(moment: str, answer: Any, body: Mapping) -> str | None:
    """What makes ``answer`` nonsense for the payment ``body`` describes, or None.

    Named by key and kind, never by value.  Before authorization ``amount``
    is absent, null, the request's own, or an integer between 0 and it
    (exclusive); ``currency``, if given, is the request's code as sent; at
    both moments ``line`` is absent, null or text.
    """
    if not isinstance(answer, dict):
        return f"a {type(answer).__name__}, not a JSON object"
    line = answer.get("line")
    if line is not None and not isinstance(line, str):
        return f"line as a {type(line).__name__}, not text"
    if moment != BEFORE:
        return None
    new = answer.get("amount")
    if new is not None and new != body["amount"] or type(new) is bool:
        if type(new) is not int:
            return f"amount as a {type(new).__name__}, not an integer"
        if not 0 < new < body["amount"]:
            return "an amount not between 0 and the request's (exclusive)"
    currency = answer.get("currency")
    if currency is not None and currency != body["currency"]:
        return "a currency other than the request's"
    return None


def _line(lines: list[str]) -> str:
    text = " / ".join(lines)
    text = "".join(ch if " " <= ch <= "~" else " " for ch in text)  # printable ASCII on a receipt
    # Masked before it is cut: cut first, the end of a card number could lose its
    # last digits and pass for something else.
    return mask_pans(text)[:_LY_MAX]
