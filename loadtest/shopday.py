"""A day at the sandbox's demo shop, as requests and the answers the sandbox promises.

No locust here: :class:`Shopper` builds each request of the mix and says what
spec section 7 says the sandbox answers to it, so the mix can be read (and
unit tested) apart from the load generator.  ``locustfile.py`` sends the steps
and counts any other answer as a failure.

One shopper is one till: a demo terminal (``DEMO0001`` … ``DEMO0999``, shared
by tills beyond the 999th; their STANs differ) with a city card of its own,
whose balance and counter it follows, and the card purchases it may reverse.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from adapters.citycard import crypto
from adapters.citycard.centre import DEMO_MK, OPENING_BALANCE
from native.iso8583 import build_tlv48, parse_tlv48

from switch.client import build

MERCHANT = "DEMO00000000001"
TERMINALS = 999  # DEMO0001 … DEMO0999
REFUND_MAX = 100_000  # the demo merchant's single-refund limit (spec 6.1): above it, 58

# Spec 7 test cards: the acquirer simulators answer by the amount's last two digits.
VISA = "4761739001010119"  # bank-a
MASTERCARD = "5413330089010434"  # bank-b
UNIONPAY = "6250947000000014"  # cup
CARDS = (VISA, VISA, MASTERCARD, UNIONPAY)
DECLINE_ENDINGS = ("05", "13", "51", "55", "68", "96")  # 68: the acquirer never answers

# Spec 7 wallets, by the code's leading digits; the last two decide the outcome.
WALLET_PREFIXES = ("25", "28", "30", "10", "12", "15")  # wallet-a (25-30), wallet-b (10-15)

# Request types (locust's ``request_type``): the latency classes of the targets.
CARD, CITYCARD, WALLET, WALLET_WAIT, NETWORK = "card", "citycard", "wallet", "wallet-wait", "network"

_RUN = secrets.randbelow(10**6)  # city-card numbers of one run differ from the last run's


@dataclass
class Step:
    """One request of the mix: its latency class, a stable name, the request and the code due."""

    kind: str
    name: str
    request: dict
    expected: str
    balance_after: int | None = None  # city cards: the balance (48 CB) the centre must report

    def check(self, answer) -> str | None:
        """What is wrong with ``answer`` (a decoded response), or None."""
        code = answer.get(39)
        if code != self.expected:
            return f"{self.name}: answered {code}, the sandbox promises {self.expected}"
        if self.balance_after is not None and code == "00":
            reported = parse_tlv48(answer[48]).get("CB") if 48 in answer else None
            if reported != "%012d" % self.balance_after:
                return f"{self.name}: city-card balance {reported}, expected {self.balance_after:012d}"
        return None


def approved_amount(rng: random.Random, top: int = 500) -> int:
    """An amount the acquirer simulators approve (its last two digits trigger no decline)."""
    while True:
        amount = rng.randint(1, top * 100)
        if "%02d" % (amount % 100) not in DECLINE_ENDINGS:
            return amount


def wallet_code(rng: random.Random, suffix: str) -> str:
    """An 18-digit payment code routed to one of the sandbox wallets, ending in ``suffix``."""
    return rng.choice(WALLET_PREFIXES) + "".join(rng.choice("0123456789") for _ in range(14)) + suffix


@dataclass
class Shopper:
    """One till of the demo shop; ``index`` (0, 1, …) picks its terminal and city card."""

    index: int
    rng: random.Random = field(default_factory=random.Random)
    purchases: list[dict] = field(default_factory=list)  # approved card purchases not yet reversed
    city_balance: int = OPENING_BALANCE  # spec 7: every city card starts at 100.00
    city_counter: int = 0
    city_known: bool = True  # False after a city-card request lost without an answer

    def __post_init__(self):
        self.terminal = "DEMO%04d" % (self.index % TERMINALS + 1)
        # 8800 (the sandbox's city-card range) + run + till: a fresh card, counter from 1.
        self.city_card = "8800%06d%06d" % (_RUN, self.index % 10**6)
        self._dk = crypto.derive_dk(DEMO_MK, self.city_card)  # spec 4.1 demo MK

    # -- cards --------------------------------------------------------------

    def purchase(self) -> Step:
        amount = approved_amount(self.rng)
        req = build("purchase", terminal=self.terminal, pan=self.rng.choice(CARDS), amount=amount)
        return Step(CARD, "purchase 00", req, "00")

    def answered(self, step: Step, answer) -> None:
        """What the till learns from an answer, the one due or not: an approved purchase
        to reverse later (the last few only); its city card's balance (48 CB: the
        centre's ledger is the authority)."""
        if step.name == "purchase 00" and answer.get(39) == "00":
            self.purchases = (self.purchases + [step.request])[-5:]
        if step.kind == CITYCARD and 48 in answer:
            reported = parse_tlv48(answer[48]).get("CB")
            if reported and reported.isdigit():
                self.city_balance = int(reported)
                self.city_known = True

    def lost(self, step: Step) -> None:
        """No answer came: a city-card request may or may not have been booked."""
        if step.kind == CITYCARD:
            self.city_known = False

    def declined_purchase(self) -> Step:
        code = self.rng.choice(("05", "51"))
        amount = self.rng.randint(1, 500) * 100 + int(code)
        req = build("purchase", terminal=self.terminal, pan=self.rng.choice(CARDS), amount=amount)
        return Step(CARD, f"purchase {code}", req, code)

    def refund(self) -> Step:
        req = build("refund", terminal=self.terminal, pan=self.rng.choice(CARDS), amount=approved_amount(self.rng, 200))
        return Step(CARD, "refund 00", req, "00")

    def refund_over_limit(self) -> Step:
        """A refund above the demo merchant's single-refund limit: the switch refuses it (58)."""
        amount = REFUND_MAX + approved_amount(self.rng, 100)
        req = build("refund", terminal=self.terminal, pan=self.rng.choice(CARDS), amount=amount)
        return Step(CARD, "refund 58", req, "58")

    def reversal(self) -> Step | None:
        """An 0400 for this till's latest approved purchase (None when it has none)."""
        if not self.purchases:
            return None
        orig = self.purchases.pop()
        req = build(
            "reversal", terminal=self.terminal, amount=int(orig[4]),
            original={"mti": orig["mti"], "stan": orig[11], "time": orig[7]},
        )
        return Step(CARD, "reversal 00", req, "00")

    # -- wallets ------------------------------------------------------------

    def wallet(self) -> Step:
        """A code the wallet answers at once: approved, or (one in five) insufficient balance."""
        suffix, code = ("04", "51") if self.rng.random() < 0.2 else (self.rng.choice(("00", "10", "99")), "00")
        req = build("purchase", terminal=self.terminal, code=wallet_code(self.rng, suffix), amount=approved_amount(self.rng, 300))
        return Step(WALLET, f"wallet pay {code}", req, code)

    def wallet_on_phone(self) -> Step:
        """A customer who confirms (01) or declines (02) on the phone after some seconds."""
        suffix, code = ("02", "05") if self.rng.random() < 0.25 else ("01", "00")
        req = build("purchase", terminal=self.terminal, code=wallet_code(self.rng, suffix), amount=approved_amount(self.rng, 300))
        return Step(WALLET_WAIT, f"wallet on phone {code}", req, code)

    # -- city cards ---------------------------------------------------------

    def _city(self, kind: str, amount: int) -> dict:
        self.city_counter += 1
        fields = (self.city_card, "%05d" % self.city_counter, "%012d" % amount, "%010d" % self.city_counter, self.terminal)
        tags = {"CC": fields[1] + "%012d" % self.city_balance + fields[3] + crypto.tac(self._dk, *fields)}
        if kind == "topup":
            tags["M1"] = crypto.mac1(self._dk, *fields)
        req = build(kind, terminal=self.terminal, pan=self.city_card, amount=amount, entry="071")
        req[48] = build_tlv48(tags)
        return req

    def city_debit(self) -> Step:
        """A ride or a coffee paid by city card, within its balance."""
        amount = min(self.rng.randint(1, 8) * 50, self.city_balance)
        if amount == 0 or not self.city_known:
            return self.city_topup()
        req = self._city("purchase", amount)
        self.city_balance -= amount
        return Step(CITYCARD, "citycard debit 00", req, "00", balance_after=self.city_balance)

    def city_overdraw(self) -> Step:
        """A debit above the card's balance: the centre refuses it (51), nothing moves."""
        if not self.city_known:
            return self.city_topup()
        req = self._city("purchase", self.city_balance + self.rng.randint(1, 500))
        return Step(CITYCARD, "citycard debit 51", req, "51")

    def city_topup(self) -> Step:
        """Cash loaded at the counter: always 00, so it also finds the balance again after a loss."""
        amount = self.rng.choice((2000, 5000, 10000))
        req = self._city("topup", amount)
        self.city_balance += amount
        after = self.city_balance if self.city_known else None
        return Step(CITYCARD, "citycard top-up 00", req, "00", balance_after=after)

    # -- network ------------------------------------------------------------

    def echo(self) -> Step:
        return Step(NETWORK, "echo 00", build("echo", terminal=self.terminal), "00")


# Every request name of the mix, by latency class: what a run must have sent.
NAMES = {
    CARD: ("purchase 00", "purchase 05", "purchase 51", "refund 00", "refund 58", "reversal 00"),
    WALLET: ("wallet pay 00", "wallet pay 51"),
    WALLET_WAIT: ("wallet on phone 00", "wallet on phone 05"),
    CITYCARD: ("citycard debit 00", "citycard debit 51", "citycard top-up 00"),
    NETWORK: ("echo 00",),
}
