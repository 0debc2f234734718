"""What the switch hands to an acquirer adapter, and what it gets back.

Every adapter (bank-card host link, barcode wallet, city-card clearing centre)
takes a protocol-neutral :class:`Request` built from the terminal's message and
returns a :class:`Result`.  The adapter owns its protocol, its connections and
its own deadline; the switch owns the journal, the terminal's STAN/RRN mapping
and the decision to reverse.

An adapter never raises for an acquirer's behaviour (timeouts, refusals,
garbage): it returns a Result.  ``uncertain=True`` means the acquirer may have
approved but we cannot tell (no answer, connection lost after sending, late
answer): the switch answers the terminal and then reverses through
:meth:`Acquirer.reverse` until it is acknowledged.
"""
from __future__ import annotations

from typing import Protocol

import msgspec

from native.panguard import mask_pan


class Original(msgspec.Struct, kw_only=True, frozen=True):
    """The journaled transaction a reversal (0400) or completion (0220) refers to."""

    txn_id: int
    mti: str
    processing_code: str
    amount: int | None
    currency: str | None
    stan: str
    transmission_time: str
    rrn: str
    auth_code: str | None = None
    # Opaque to the switch: whatever the adapter returned in Result.acquirer_ref
    # for the original (acquirer STAN/RRN, wallet trade number, ...).
    acquirer_ref: str | None = None
    # The STAN and field 7 the switch assigned to the original on the acquirer
    # link, journaled before it left: a reversal names its original with them
    # (field 90) even when no answer ever came back.
    host_stan: str | None = None
    host_time: str | None = None
    # What a host may want repeated in a reversal (fields 2, 12, 13, 22).  The
    # PAN is in memory, and in the journal only sealed, while the reversal
    # waits (switch.journal.reversal_card).
    pan: str | None = None
    local_time: str | None = None
    local_date: str | None = None
    entry_mode: str | None = None


def order_number(terminal_id: str, transmission_time: str, stan: str) -> str:
    """The wallet order number of a terminal request: terminal ID + field 7 + STAN.

    Field 41, 7 and 11 are the terminal's retransmission key (spec 6), so a
    repeated request can never become a second wallet payment.  The switch
    journals it with the request (unique), the wallet adapters send it.
    """
    return f"{order_prefix(terminal_id)}{transmission_time}{stan}"


def order_prefix(terminal_id: str) -> str:
    """The terminal's part of its wallet order numbers: field 41 without its
    padding, every character but a letter or digit as ``_`` (what the wallets
    take in an order number: trade.pay letters, digits and ``_``, micropay
    also ``-|*``).  At most 8 characters (field 41 is ans8), so an order number
    is at most 24, within both wallets' limits (64 and 32).

    Two terminal IDs with the same prefix would share order numbers: the
    configuration refuses them (:mod:`switch.config_terminals`).
    """
    return "".join(c if c.isalnum() else "_" for c in terminal_id.strip())


# gc=False (Request, Result): built for every payment; their fields are
# strings, numbers, bytes, an Original and dicts of strings, none of which can
# lead back to them, so they are never part of a reference cycle and the
# collector need not track them.
class Request(msgspec.Struct, kw_only=True, gc=False):
    txn_id: int
    kind: str  # "card" | "wallet" | "citycard"
    mti: str  # the terminal's MTI: 0100, 0200, 0220, 0400
    processing_code: str
    amount: int | None
    currency: str | None
    terminal_id: str
    merchant_id: str
    stan: str  # the terminal's STAN (field 11)
    transmission_time: str  # field 7, MMDDhhmmss
    rrn: str  # the switch's RRN for this transaction (field 37 to the terminal)
    local_time: str | None = None  # field 12
    local_date: str | None = None  # field 13
    pan: str | None = None  # field 2 (or from track 2)
    expiry: str | None = None  # field 14
    entry_mode: str | None = None  # field 22
    pos_condition: str | None = None  # field 25
    track2: str | None = None  # field 35
    pin_block: bytes | None = None  # field 52
    icc: bytes | None = None  # field 55
    tlv: dict[str, str] = {}  # field 48 tags (BC, CC, M1, ...)
    original: Original | None = None
    # The STAN (field 11) and field 7 the switch assigned on the acquirer link,
    # from a per-acquirer sequence that survives restarts, journaled before the
    # message leaves.  For a reversal they are the reversal's own, the same on
    # every repeat.  None: the adapter picks its own (adapters without STANs).
    host_stan: str | None = None
    host_time: str | None = None
    # Reversals: 0 for the first attempt (0420), n > 0 for the n-th repeat (0421).
    attempt: int = 0

    def __repr__(self) -> str:
        """Every field, but card data shown masked or by length only (issue 8): a
        Request in a log line or a traceback never carries PAN, track 2, PIN
        block, EMV data or field 48 values."""
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _HIDDEN:
                parts.append(f"{name}=<{len(value)} {'bytes' if isinstance(value, bytes) else 'characters'}>")
                continue
            if name == "pan":
                value = mask_pan(value)
            elif name == "tlv":
                value = {tag: "..." for tag in value}
            parts.append(f"{name}={value!r}")
        return f"Request({', '.join(parts)})"


_HIDDEN = ("track2", "pin_block", "icc")


class Result(msgspec.Struct, kw_only=True, gc=False):
    response_code: str
    auth_code: str | None = None
    # Whatever the adapter needs later to reverse/complete/query this transaction
    # (for example "acquirer STAN|acquirer RRN" or a wallet trade number).  Journaled.
    acquirer_ref: str | None = None
    tlv: dict[str, str] = {}  # field 48 tags for the terminal (WT, CB, M2, LY)
    icc: bytes | None = None  # issuer EMV data for field 55 of the response
    uncertain: bool = False  # may have been approved: the switch must reverse
    # Wallets: the payer's id at the wallet (buyer id, open id), only ever
    # turned into a customer token (switch.core.vas); never journaled as it is.
    buyer_id: str | None = None
    # The acquirer's own response code when the terminal is answered another
    # (spec section 5 has not got it: adapters.card.response_codes), and what
    # it meant; the switch logs them with the transaction.
    acquirer_code: str | None = None
    acquirer_reason: str | None = None


# What Acquirer.reverse() reports.
REVERSED = "reversed"  # the acquirer acknowledged the reversal (0430 39=00, wallet closed/refunded)
NOT_FOUND = "not_found"  # the acquirer knows no such original (39=25): may have overtaken it
RETRY = "retry"  # no acknowledgement (timeout, lost link, a transient answer): try again later
REFUSED = "refused"  # the acquirer refused it for good (see Refused): not retried, an operator's


class Refused(str):
    """:data:`REFUSED` as an adapter's reverse() returns it, with the acquirer's code and
    what it means: an answer that repeating the reversal cannot change (0430 39=12,
    30, 64...).  Compares equal to REFUSED.

    ``held_unknown``: the acquirer refused the reversal's amount, and the switch never
    had the original's answer to know the amount it holds (it gave up on it): a late
    answer may still tell it, so the switch repeats the reversal for a while, as it
    does one whose original the acquirer does not know yet (25)."""

    code: str
    reason: str
    held_unknown: bool

    def __new__(cls, code: str, reason: str, held_unknown: bool = False) -> "Refused":
        self = super().__new__(cls, REFUSED)
        self.code, self.reason, self.held_unknown = code, reason, held_unknown
        return self

    def __repr__(self) -> str:
        held = ", held_unknown=True" if self.held_unknown else ""
        return f"Refused({self.code!r}, {self.reason!r}{held})"


def reversal_outcome(answer: "str | bool") -> str:
    """Normalise what an adapter's reverse() returned (older adapters return a bool);
    a :class:`Refused` stays itself, so the switch can log the acquirer's code."""
    if answer is True:
        return REVERSED
    if answer is False or answer is None:
        return RETRY
    if isinstance(answer, Refused):
        return answer
    if answer in (REVERSED, NOT_FOUND, RETRY):
        return answer
    raise ValueError(f"reverse() returned {answer!r}")


class Acquirer(Protocol):
    """An acquirer adapter as the switch's I/O layer drives it (on asyncio)."""

    name: str

    async def start(self) -> None:
        """Open connections, sign on; return once ready (or keep trying in the background)."""

    async def close(self) -> None:
        """Sign off and close; pending calls get a Result with uncertain=True."""

    async def authorize(self, request: Request, timeout: float) -> Result:
        """Send the request and return the outcome within ``timeout`` seconds."""

    async def reverse(self, request: Request, timeout: float) -> str:
        """Reverse/cancel ``request.original`` at the acquirer.

        ``request`` is the reversal (terminal 0400, or one the switch raised
        itself after an uncertain outcome) with ``original`` set and
        ``attempt`` counting earlier tries.  Returns :data:`REVERSED`,
        :data:`NOT_FOUND` (the acquirer does not know the original; the switch
        decides how long to keep trying), :data:`RETRY`, or a :class:`Refused`
        (a refusal no repeat can change: the switch stops and flags it for an
        operator).  A bool is taken as REVERSED / RETRY.  Must be idempotent.
        """

    def healthy(self) -> bool:
        """True when at least one connection is signed on / the endpoint answers."""
