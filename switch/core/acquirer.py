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


class Request(msgspec.Struct, kw_only=True):
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


class Result(msgspec.Struct, kw_only=True):
    response_code: str
    auth_code: str | None = None
    # Whatever the adapter needs later to reverse/complete/query this transaction
    # (for example "acquirer STAN|acquirer RRN" or a wallet trade number).  Journaled.
    acquirer_ref: str | None = None
    tlv: dict[str, str] = {}  # field 48 tags for the terminal (WT, CB, M2, LY)
    icc: bytes | None = None  # issuer EMV data for field 55 of the response
    uncertain: bool = False  # may have been approved: the switch must reverse


class Acquirer(Protocol):
    """An acquirer adapter as the switch's I/O layer drives it (on asyncio)."""

    name: str

    async def start(self) -> None:
        """Open connections, sign on; return once ready (or keep trying in the background)."""

    async def close(self) -> None:
        """Sign off and close; pending calls get a Result with uncertain=True."""

    async def authorize(self, request: Request, timeout: float) -> Result:
        """Send the request and return the outcome within ``timeout`` seconds."""

    async def reverse(self, request: Request, timeout: float) -> bool:
        """Reverse/cancel ``request.original`` at the acquirer.

        ``request`` is the reversal (terminal 0400, or one the switch raised
        itself after an uncertain outcome) with ``original`` set.  Returns True
        once the acquirer acknowledged (including "nothing to reverse"), False
        when it should be retried later.  Must be idempotent.
        """

    def healthy(self) -> bool:
        """True when at least one connection is signed on / the endpoint answers."""
