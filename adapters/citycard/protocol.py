"""The wire protocol between payswitch and a city-card clearing centre (sans-I/O).

Transport
---------
TCP.  Every message is a 2-byte unsigned big-endian length (of what follows,
1..65535) and one UTF-8 JSON object.  A zero length, a body that is not a JSON
object, or one without an integer ``id`` is a protocol violation: the peer
closes the connection.

Many requests may be in flight on one connection; responses come back in any
order and carry the ``id`` of their request (chosen by the client, unique
among its requests in flight on that connection).

Requests (``op`` tells which; unknown fields are refused)
---------------------------------------------------------
========  =================================================================
op        fields
========  =================================================================
debit     id, card, counter, amount, serial, terminal_id, merchant_id,
          reported_balance, tac, ref
offline   the fields of debit: an advice of a debit the terminal already
          made offline (0220 upload)
load      id, card, counter, amount, serial, terminal_id, mac1, ref
balance   id, card
reverse   id, ref  (the ref of an earlier debit, offline or load)
ledger    id, after (card number, "" for the first page), limit
========  =================================================================

- ``card``: 1..19 digits; ``counter``: the card's transaction counter, 5
  digits; ``serial``: the terminal's transaction serial, 10 digits;
  ``terminal_id``: 8 characters (field 41); ``amount`` and
  ``reported_balance``: integers, minor units; ``tac`` / ``mac1``: 8 hex
  digits (spec 4.1).
- ``ref``: the client's reference of the transaction, 1..64 characters,
  unique per transaction.  It makes requests idempotent: the same ref with
  the same content gets the first answer again without a second booking; the
  same ref with other content gets 94.  Every answer to a debit, offline,
  load or reverse echoes it: an approval (or a reverse's 00) that names
  another ref, or none, is no answer to the request.

Response (one type for all requests)
------------------------------------
``id``, ``code`` (spec section 5: 00 approved, 14 card outside the centre's
ranges, 30 format error, 51 insufficient funds, 62 restricted (blacklisted)
card, 94 replayed counter / duplicate ref with other content, 96 system
malfunction, A0 TAC or MAC1 wrong), and where they apply: ``balance`` (the
centre's balance for the card after the request, minor units), ``mac2`` (load
approved), ``auth`` (6 digits, approvals), ``ref`` (echoed), ``ledger``
(:class:`LedgerPage`, answer to ``ledger``).

A request that is a JSON object with an integer ``id`` but otherwise
malformed (unknown op, missing or badly formatted field) is answered with
code 30 and the connection lives on.

Semantics (what the bundled simulator does; see ``centre.py``)
--------------------------------------------------------------
- debit: TAC checked (A0); counter must be greater than the last accepted
  for the card (94, a replay); balance must cover the amount (51).
- offline: the card already paid, so the advice is booked even if the ledger
  goes below zero or the card has since been blacklisted (logged), and
  whatever the order of counters (uploads come late); the TAC is still checked
  (A0) and the card's last counter moves up to it.  De-duplicated on (card, counter):
  an upload of a (card, counter) already booked answers 00 and is not booked
  again (terminals re-upload until they get an answer, so this is not a
  replay); the same (card, counter) with other content answers 94.
- load: MAC1 checked (A0), counter rule as debit, balance credited, MAC2
  returned.
- reverse: undoes the booking made under ``ref`` once (idempotent); an unknown
  ref answers 00 and is remembered, so that a late original under that ref is
  refused (94) instead of booked after its reversal.  A debit the card has
  also uploaded (offline, same card, counter and content) stands: 00, nothing
  undone.  A load the card's balance no longer holds is refused (51).
- ledger: balances per card (paged by card number), and the totals issued,
  debited and loaded, for the money-conservation check
  ``balance_total + debits - loads == issued``.
"""
from __future__ import annotations

import re
from typing import Annotated, Union

import msgspec

from switch.core.messages import mask_pan

__all__ = [
    "MAX_FRAME",
    "ProtocolError",
    "Debit",
    "Offline",
    "Load",
    "Balance",
    "Reverse",
    "Ledger",
    "LedgerPage",
    "Response",
    "CentreRequest",
    "FrameBuffer",
    "encode",
    "decode_request",
    "decode_response",
    "request_id",
    "masked",
]

MAX_FRAME = 0xFFFF

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Card = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,19}$")]
Counter = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5}$")]
Serial = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{10}$")]
TerminalId = Annotated[str, msgspec.Meta(min_length=8, max_length=8, pattern=r"^[ -~]{8}$")]
MerchantId = Annotated[str, msgspec.Meta(max_length=15)]
Hex8 = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{8}$")]
Amount = Annotated[int, msgspec.Meta(ge=1, le=999_999_999_999)]
Minor = Annotated[int, msgspec.Meta(ge=0, le=999_999_999_999)]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ProtocolError(Exception):
    """The peer broke the framing or sent a message we cannot read."""


class _Message(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    id: RequestId


class _Purse(_Message):
    """Fields shared by an online debit and an offline advice."""

    card: Card
    counter: Counter
    amount: Amount
    serial: Serial
    terminal_id: TerminalId
    merchant_id: MerchantId
    reported_balance: Minor
    tac: Hex8
    ref: Ref


class Debit(_Purse, tag="debit"):
    pass


class Offline(_Purse, tag="offline"):
    pass


class Load(_Message, tag="load"):
    card: Card
    counter: Counter
    amount: Amount
    serial: Serial
    terminal_id: TerminalId
    mac1: Hex8
    ref: Ref


class Balance(_Message, tag="balance"):
    card: Card


class Reverse(_Message, tag="reverse"):
    ref: Ref


class Ledger(_Message, tag="ledger"):
    after: str = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 500


CentreRequest = Union[Debit, Offline, Load, Balance, Reverse, Ledger]


class LedgerPage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    balances: dict[str, int]  # card -> balance, cards after ``Ledger.after``, sorted
    more: bool  # further pages after the last card of this one
    issued: int  # opening balances of every card the centre knows
    debits: int  # net of reversals, offline advices included
    loads: int  # net of reversals
    balance_total: int  # sum of all balances (not only this page)


class Response(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    id: RequestId
    code: str
    balance: int | None = None
    mac2: str | None = None
    auth: str | None = None
    ref: str | None = None
    ledger: LedgerPage | None = None


class _Envelope(msgspec.Struct):
    id: RequestId


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(CentreRequest)
_response_decoder = msgspec.json.Decoder(Response)
_envelope_decoder = msgspec.json.Decoder(_Envelope)


def encode(message: msgspec.Struct) -> bytes:
    """One framed message: length prefix + JSON."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return len(body).to_bytes(2, "big") + body


def decode_request(payload: bytes) -> CentreRequest:
    """A request from one frame's payload; raises ``msgspec.ValidationError`` /
    ``msgspec.DecodeError`` with the path of the bad value."""
    return _request_decoder.decode(payload)


def decode_response(payload: bytes) -> Response:
    try:
        return _response_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        raise ProtocolError(f"bad response from the centre: {masked(str(exc))}") from None


_DIGIT_RUN = re.compile(r"[0-9]{7,}")


def masked(text: str) -> str:
    """``text`` with every run of 7 or more digits masked as a card number.

    A decoder's error names what it could not read (an unknown field's
    name, say), which a peer chooses: it may be a card number, and a
    city-card number passes no Luhn check that a log filter could find it by.
    """
    return _DIGIT_RUN.sub(lambda m: mask_pan(m.group()) or "", text)


def request_id(payload: bytes) -> int | None:
    """The ``id`` of a request that did not decode, to answer it with 30; None
    when there is none (then the connection is beyond saving)."""
    try:
        return _envelope_decoder.decode(payload).id
    except msgspec.MsgspecError:
        return None


class FrameBuffer:
    """Cuts a byte stream into frame payloads: ``feed()`` bytes, get payloads back."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= 2:
            size = int.from_bytes(buffer[start : start + 2], "big")
            if size == 0:
                raise ProtocolError(f"empty frame at stream offset +{start}")
            end = start + 2 + size
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[start + 2 : end]))
            start = end
        if start:
            del buffer[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buffer)
