"""The clearing centre's ledger, as the bundled simulator keeps it (sans-I/O).

:meth:`Centre.handle` takes a decoded request (``protocol.py``) and returns the
response; nothing here touches a socket or a clock, so every rule can be unit
tested.  The rules are those of spec 4.1 and of the protocol docstring:

- checks, in order: duplicate ref, card range (14), blacklist (62), TAC or
  MAC1 (A0), counter replay (94), funds (51); a load must leave the balance
  within ``max_balance`` (13);
- a load is reversed only while the card's balance still holds its amount:
  a card that never got MAC2 was never credited and spent none of it, so a
  balance below the amount means the card did get it and spent it since
  (a terminal's 0400 after its top-up went through).  Refused 51, nothing
  booked, the switch hands it to an operator;
- a debit the card has also uploaded (an offline advice of the same card,
  counter and content) is not undone by a reversal: the upload proves the
  card paid, and uploads are never reversed (answered 00, nothing undone);
- the ledger is the authority; the balance a card reports is kept per card
  for reconciliation only;
- money is conserved: ``sum(balances) + debits - loads == issued`` at every
  step, where ``issued`` is the opening balance of every card opened.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec

from switch.core.messages import mask_pan

from . import crypto
from .protocol import (
    Balance,
    CentreRequest,
    Debit,
    Ledger,
    LedgerPage,
    Load,
    Offline,
    Response,
    Reverse,
)

__all__ = ["DEMO_MK", "OPENING_BALANCE", "MAX_BALANCE", "Account", "Booking", "Centre"]

log = logging.getLogger("payswitch.citycard.centre")

# Spec 4.1 demo MK: the public sandbox key.
DEMO_MK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
OPENING_BALANCE = 10_000  # spec 7: 100.00
# The most a card can hold: CC and CB carry a balance in 12 digits (spec 4).
MAX_BALANCE = 999_999_999_999


@dataclass
class Account:
    balance: int
    last_counter: int = -1  # highest counter accepted for the card (online or offline)
    reported_balance: int | None = None  # last balance the card reported (reconciliation)


@dataclass
class Booking:
    """One booking made under a ref: what a reversal undoes."""

    op: str  # "debit" | "offline" | "load"
    card: str
    counter: str
    amount: int
    reversed: bool = False
    uploaded: bool = False  # the card's own record of it came as an offline upload: it paid


@dataclass
class Centre:
    mk: bytes = field(default=DEMO_MK, repr=False)
    blacklist: frozenset[str] = field(default=frozenset(), repr=False)
    prefixes: tuple[str, ...] = ("8800",)  # card ranges of this issuer; () accepts all
    opening_balance: int = OPENING_BALANCE
    max_balance: int = MAX_BALANCE  # a load beyond it answers 13

    accounts: dict[str, Account] = field(default_factory=dict, init=False, repr=False)  # keyed by full card number
    issued: int = field(default=0, init=False)
    debits: int = field(default=0, init=False)  # net of reversals, offline advices included
    loads: int = field(default=0, init=False)  # net of reversals
    # ref -> (request with id 0, response with id 0): makes requests idempotent.
    _answers: dict[str, tuple[msgspec.Struct, Response]] = field(default_factory=dict, init=False, repr=False)
    _bookings: dict[str, Booking] = field(default_factory=dict, init=False, repr=False)
    # (card, counter) -> content of the purse transaction booked under it.
    _purse: dict[tuple[str, str], tuple[int, str, str, str]] = field(default_factory=dict, init=False, repr=False)
    # (card, counter) -> the authorization code of that booking: a duplicate
    # upload is answered 00 with it (spec 3: an approval carries field 38).
    _purse_auth: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)
    # (card, counter) -> the ref of the purse debit booked under it.
    _purse_ref: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)
    # refs reversed before they were seen: a late original is refused.
    _reversed_unseen: set[str] = field(default_factory=set, init=False, repr=False)
    _dk: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _auth_seq: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.blacklist = frozenset(self.blacklist)
        self.prefixes = tuple(self.prefixes)

    # -- entry point ---------------------------------------------------------

    def handle(self, request: CentreRequest) -> Response:
        """The response to one request (its ``id`` echoed)."""
        if isinstance(request, Ledger):
            response = self._ledger(request)
        elif isinstance(request, Balance):
            response = self._balance(request)
        elif isinstance(request, Reverse):
            response = self._reverse(request)
        else:
            response = self._once(request)
        response.id = request.id
        return response

    # -- idempotency by ref ------------------------------------------------------

    def _once(self, request: Debit | Offline | Load) -> Response:
        key = msgspec.structs.replace(request, id=0)
        seen = self._answers.get(request.ref)
        if seen is not None:
            first, answer = seen
            if first == key:
                return msgspec.structs.replace(answer)
            return self._reply("94", request.ref)
        if request.ref in self._reversed_unseen:
            log.info("ref %s arrived after its reversal: refused", request.ref)
            response = self._reply("94", request.ref)
        elif isinstance(request, Load):
            response = self._load(request)
        elif isinstance(request, Offline):
            response = self._offline(request)
        else:
            response = self._debit(request)
        self._answers[request.ref] = (key, msgspec.structs.replace(response, id=0))
        log.debug(
            "%s card %s counter %s amount %d ref %s -> %s",
            type(request).__name__.lower(), mask_pan(request.card) or "-", request.counter,
            request.amount, request.ref, response.code,
        )
        return response

    # -- operations ----------------------------------------------------------

    def _debit(self, r: Debit) -> Response:
        refused = self._screen(r.card)
        if refused:
            return self._reply(refused, r.ref)
        account = self._account(r.card)
        account.reported_balance = r.reported_balance
        expected = crypto.tac(self._key(r.card), r.card, r.counter, f"{r.amount:012d}", r.serial, r.terminal_id)
        if not crypto.verify(expected, r.tac):
            return self._reply("A0", r.ref)
        if int(r.counter) <= account.last_counter:
            return self._reply("94", r.ref)
        if account.balance < r.amount:
            return self._reply("51", r.ref, account.balance)
        account.balance -= r.amount
        account.last_counter = int(r.counter)
        self.debits += r.amount
        self._book(r.ref, Booking("debit", r.card, r.counter, r.amount))
        return self._purse_booked(r, (r.amount, r.serial, r.terminal_id, r.tac.upper()), account)

    def _offline(self, r: Offline) -> Response:
        # The card has already paid: no funds, replay or blacklist refusal, only
        # proof (TAC) and de-duplication on (card, counter).
        if self.prefixes and not r.card.startswith(self.prefixes):
            return self._reply("14", r.ref)
        account = self._account(r.card)
        account.reported_balance = r.reported_balance
        expected = crypto.tac(self._key(r.card), r.card, r.counter, f"{r.amount:012d}", r.serial, r.terminal_id)
        if not crypto.verify(expected, r.tac):
            return self._reply("A0", r.ref)
        content = (r.amount, r.serial, r.terminal_id, r.tac.upper())
        booked = self._purse.get((r.card, r.counter))
        if booked is not None:
            if booked != content:
                return self._reply("94", r.ref)
            # Uploaded (or debited online) before: counted once, the same authorization.
            # The upload proves the card paid: a reversal of that booking no longer undoes it.
            booking = self._bookings.get(self._purse_ref.get((r.card, r.counter), ""))
            if booking is not None:
                booking.uploaded = True
            return self._reply("00", r.ref, account.balance, auth=self._purse_auth.get((r.card, r.counter)))
        if r.card in self.blacklist:
            log.warning("offline advice from blacklisted card %s booked", mask_pan(r.card) or "-")
        account.balance -= r.amount
        account.last_counter = max(account.last_counter, int(r.counter))
        self.debits += r.amount
        self._book(r.ref, Booking("offline", r.card, r.counter, r.amount))
        return self._purse_booked(r, content, account)

    def _load(self, r: Load) -> Response:
        refused = self._screen(r.card)
        if refused:
            return self._reply(refused, r.ref)
        account = self._account(r.card)
        dk = self._key(r.card)
        fields = (r.card, r.counter, f"{r.amount:012d}", r.serial, r.terminal_id)
        if not crypto.verify(crypto.mac1(dk, *fields), r.mac1):
            return self._reply("A0", r.ref)
        if int(r.counter) <= account.last_counter:
            return self._reply("94", r.ref)
        if account.balance + r.amount > self.max_balance:
            return self._reply("13", r.ref, account.balance)
        account.balance += r.amount
        account.last_counter = int(r.counter)
        self.loads += r.amount
        self._book(r.ref, Booking("load", r.card, r.counter, r.amount))
        self._purse[(r.card, r.counter)] = (r.amount, r.serial, r.terminal_id, "LOAD")
        response = self._reply("00", r.ref, account.balance, auth=self._auth())
        response.mac2 = crypto.mac2(dk, *fields)
        return response

    def _balance(self, r: Balance) -> Response:
        refused = self._screen(r.card)
        if refused:
            return self._reply(refused)
        account = self.accounts.get(r.card)
        balance = account.balance if account else self.opening_balance
        return self._reply("00", None, balance, auth=self._auth())

    def _reverse(self, r: Reverse) -> Response:
        booking = self._bookings.get(r.ref)
        if booking is None:
            if r.ref not in self._answers:
                self._reversed_unseen.add(r.ref)
            return self._reply("00", r.ref)  # nothing to reverse
        account = self.accounts[booking.card]
        if not booking.reversed and booking.uploaded:
            # An online debit whose answer the terminal never got, reversed after the
            # card uploaded its own record of it: the card paid, the booking stands.
            log.info("reversal of ref %s: card %s uploaded that debit; it stands", r.ref,
                     mask_pan(booking.card) or "-")
            return self._reply("00", r.ref, account.balance)
        if not booking.reversed and booking.op == "load" and account.balance < booking.amount:
            log.warning("reversal of load ref %s refused: card %s holds %d of its %d", r.ref,
                        mask_pan(booking.card) or "-", account.balance, booking.amount)
            return self._reply("51", r.ref, account.balance)
        if not booking.reversed:
            booking.reversed = True
            if booking.op == "load":
                account.balance -= booking.amount
                self.loads -= booking.amount
            else:
                account.balance += booking.amount
                self.debits -= booking.amount
            # A reversed purse transaction no longer holds its (card, counter):
            # a later offline upload of it is booked again.  Counters stay spent.
            self._purse.pop((booking.card, booking.counter), None)
            self._purse_auth.pop((booking.card, booking.counter), None)
            self._purse_ref.pop((booking.card, booking.counter), None)
            log.debug("reversed %s of card %s ref %s", booking.op, mask_pan(booking.card) or "-", r.ref)
        return self._reply("00", r.ref, account.balance)

    def _ledger(self, r: Ledger) -> Response:
        cards = sorted(card for card in self.accounts if card > r.after)
        page = cards[: r.limit]
        return self._reply(
            "00",
            ledger=LedgerPage(
                balances={card: self.accounts[card].balance for card in page},
                more=len(cards) > len(page),
                issued=self.issued,
                debits=self.debits,
                loads=self.loads,
                balance_total=sum(a.balance for a in self.accounts.values()),
            ),
        )

    # -- parts -----------------------------------------------------------------

    def conserved(self) -> bool:
        total = sum(a.balance for a in self.accounts.values())
        return total + self.debits - self.loads == self.issued

    def _screen(self, card: str) -> str | None:
        if self.prefixes and not card.startswith(self.prefixes):
            return "14"
        if card in self.blacklist:
            return "62"
        return None

    def _account(self, card: str) -> Account:
        account = self.accounts.get(card)
        if account is None:
            account = self.accounts[card] = Account(self.opening_balance)
            self.issued += self.opening_balance
        return account

    def _key(self, card: str) -> bytes:
        dk = self._dk.get(card)
        if dk is None:
            dk = self._dk[card] = crypto.derive_dk(self.mk, card)
        return dk

    def _book(self, ref: str, booking: Booking) -> None:
        self._bookings[ref] = booking

    def _purse_booked(self, r: Debit | Offline, content: tuple[int, str, str, str], account: Account) -> Response:
        """Hold (card, counter) for the purse debit just booked, and its approval."""
        auth = self._auth()
        self._purse[(r.card, r.counter)] = content
        self._purse_auth[(r.card, r.counter)] = auth
        self._purse_ref[(r.card, r.counter)] = r.ref
        return self._reply("00", r.ref, account.balance, auth=auth)

    def _auth(self) -> str:
        self._auth_seq += 1
        return f"{self._auth_seq % 1_000_000:06d}"

    @staticmethod
    def _reply(
        code: str,
        ref: str | None = None,
        balance: int | None = None,
        *,
        auth: str | None = None,
        ledger: LedgerPage | None = None,
    ) -> Response:
        return Response(id=0, code=code, balance=balance, auth=auth, ref=ref, ledger=ledger)
