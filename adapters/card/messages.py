"""Host-link messages built from the switch's requests, and the field formats
they use (host-87-bcd dialect).

Pure functions: no clock, no STAN counter.  :mod:`adapters.card.hostlink`
decides the STAN and field 7 and calls these; the simulator uses the same
formats to read what it receives.

Messages go out as plain dicts (``{"mti": "0200", 2: "...", 52: b"..."}``)
that the dialect encodes.
"""
from __future__ import annotations

import re
import time
from typing import Any, Mapping

import cython
import msgspec
from msgspec.structs import astuple

from switch.core.acquirer import Original, Request
from switch.core.messages import mask_pan, mask_pans, response_mti

# Network management information codes (field 70).
SIGN_ON = "001"
SIGN_OFF = "002"
ECHO = "301"
# Key exchange: 101 (key change, ISO 8583:1987), 160-164 (ANSI X9 / ISO 11568
# practice: new key, key request, key verification).  The new key travels under
# the zone master key in field 48 or 53/96; it is never logged.
KEY_CHANGE = frozenset({"101", "160", "161", "162", "163", "164"})

# Answer codes for an 0800 the acquirer sent us.
RC_APPROVED = "00"
RC_INVALID = "12"  # an unknown network management code
RC_SYSTEM = "96"  # a key change nobody could install


# --------------------------------------------------------------------------
# Masking: never a full PAN, track 2 or PIN block in a log line or exception.
# One rule for the whole switch: switch.core.messages.mask_pan.

_LONG_DIGITS = re.compile(r"\d{12,19}")


def scrub(text: str) -> str:
    """Mask every run of 12..19 digits in ``text``, and every card number written
    in groups (``4761 7390 0101 0119``), for codec error messages."""
    return mask_pans(_LONG_DIGITS.sub(lambda match: mask_pan(match.group(0)), text))


# --------------------------------------------------------------------------
# Field formats.

_f7_cache: tuple[int, str] = (-1, "")


def transmission_time(wall: float) -> str:
    """Field 7: UTC MMDDhhmmss of ``wall`` (Unix time)."""
    global _f7_cache
    second = int(wall)
    if _f7_cache[0] != second:
        _f7_cache = (second, time.strftime("%m%d%H%M%S", time.gmtime(second)))
    return _f7_cache[1]


@cython.ccall
def valid_stan(stan: str | None) -> bool:
    return stan is not None and len(stan) == 6 and isdigit(stan)


@cython.ccall
def valid_f7(f7: str | None) -> bool:
    return f7 is not None and len(f7) == 10 and isdigit(f7)


@cython.ccall
def isdigit(text: Any) -> bool:
    """``text.isdigit()``: for a str, in C when every character is 0-9 (see :func:`_digits`)."""
    if type(text) is str:
        return _digits(text)
    return text.isdigit()


@cython.cfunc
@cython.locals(text=str, ch=cython.Py_UCS4)
def _digits(text: str) -> bool:
    """``text.isdigit()``, read a character at a time in C when every one is 0-9 (a STAN, a field
    7: a method call less each); any other character, and the answer is isdigit()'s own."""
    for ch in text:
        if ch < "0" or ch > "9":
            return text.isdigit()
    return len(text) > 0


@cython.ccall
def acquirer_ref(stan: str, f7: str, rrn: str, host_code: str | None = None, approved: int | None = None,
                 currency: str | None = None) -> str:
    """What a later reversal or completion needs: the STAN and field 7 as sent
    to the acquirer and the RRN of the transaction there: ``stan|f7|rrn``;
    ``stan|f7|rrn|host_code`` when the terminal was answered another code
    than the acquirer's (:mod:`adapters.card.response_codes`), so that the
    journal keeps the acquirer's own for reconciliation;
    ``stan|f7|rrn|host_code|approved`` when the acquirer approved another
    amount than requested (its field 4, minor units), and
    ``stan|f7|rrn|host_code|approved|currency`` when it approved in another
    currency (its field 49): what the reversal carries, since the journal's
    amount and currency are the terminal's."""
    if host_code is None:
        return f"{stan}|{f7}|{rrn}"
    if approved is None:
        return f"{stan}|{f7}|{rrn}|{host_code}"
    if currency is None:
        return f"{stan}|{f7}|{rrn}|{host_code}|{approved}"
    return f"{stan}|{f7}|{rrn}|{host_code}|{approved}|{currency}"


class Ref(msgspec.Struct, frozen=True):
    stan: str
    f7: str
    rrn: str
    host_code: str | None = None
    approved: int | None = None  # the amount the acquirer approved, when not the one requested
    currency: str | None = None  # the currency it approved in, when not the one requested


def parse_ref(ref: str | None) -> Ref | None:
    """The inverse of :func:`acquirer_ref`; None when absent or malformed."""
    if not ref:
        return None
    parts = ref.split("|")
    if len(parts) not in (3, 4, 5, 6):
        return None
    stan, f7, rrn = parts[:3]
    if not valid_stan(stan) or not valid_f7(f7):
        return None
    if len(parts) >= 5:
        if not parts[4].isdigit():
            return None
        currency = None
        if len(parts) == 6:
            currency = parts[5]
            if not (len(currency) == 3 and currency.isdigit()):
                return None
        return Ref(stan, f7, rrn, parts[3], int(parts[4]), currency)
    return Ref(stan, f7, rrn, parts[3] if len(parts) == 4 else None)


_answers: dict[str, tuple[str, ...]] = {}  # a C dict once compiled (messages.pxd)


@cython.ccall
def answers(mti: str) -> tuple[str, ...]:
    """The answer MTIs that fit a request: a repeat (xxx1) may be answered
    as a repeat or as its first send (0421 -> 0431 or 0430).  Kept per MTI:
    every answer asks, and the requests' MTIs are a handful."""
    fit = _answers.get(mti)
    if fit is None:
        if mti[3] == "1":
            fit = (response_mti(mti, keep_origin=True), response_mti(mti))
        else:
            fit = (response_mti(mti, keep_origin=True),)
        if len(_answers) < 64:
            _answers[mti] = fit
    return fit


# --------------------------------------------------------------------------
# Requests.

def original_data(original: Original, acquirer_id: str) -> str:
    """Field 90 naming ``original`` at the acquirer (n42).

    Original MTI (4) + the acquirer-side STAN (6) + the acquirer-side field 7
    (10) + our field 32 right-justified, zero-padded to 11 + 11 zeros.

    The STAN and field 7 are the ones the switch assigned and journaled before
    the original left (``host_stan`` / ``host_time``), so they are known even
    when no answer came back; failing those, what the adapter returned in
    ``acquirer_ref``; failing that, zeros (the original is then named by its
    RRN in field 37 only, which a strict host will not accept).  The terminal's
    own STAN and field 7 never stand in: they come from another counter and
    could name another customer's authorization.
    """
    if valid_stan(original.host_stan) and valid_f7(original.host_time):
        stan, f7 = original.host_stan, original.host_time
    else:
        ref = parse_ref(original.acquirer_ref)
        if ref is not None:
            stan, f7 = ref.stan, ref.f7
        else:
            stan, f7 = "0" * 6, "0" * 10
    return f"{original.mti}{stan}{f7}{acquirer_id.rjust(11, '0')}{'0' * 11}"


# The order of Request's fields, which request_fields unpacks: checked here, so that a field
# added to Request or moved fails the import instead of shifting every field after it.
_REQUEST_FIELDS = ("txn_id", "kind", "mti", "processing_code", "amount", "currency", "terminal_id",
                   "merchant_id", "stan", "transmission_time", "rrn", "local_time", "local_date", "pan",
                   "expiry", "entry_mode", "pos_condition", "track2", "pin_block", "icc", "tlv", "original",
                   "host_stan", "host_time", "attempt")
if Request.__struct_fields__ != _REQUEST_FIELDS:
    raise ImportError(f"adapters.card.messages: Request's fields are {Request.__struct_fields__}, "
                      "request_fields unpacks them in another order")


@cython.ccall
@cython.locals(msg=dict, cents=cython.longlong)
def request_fields(request: Request, stan: str, f7: str, acquirer_id: str) -> dict:
    """The host message (0100/0200/0220) for a terminal's request."""
    # Every field read in one call (one request a purchase: an attribute read is a lookup each).
    (_, _, mti, processing_code, amount, currency, terminal_id, merchant_id, _, _, rrn, local_time,
     local_date, pan, expiry, entry_mode, pos_condition, track2, pin_block, icc, _, original,
     _, _, _) = astuple(request)
    # Sized for every field it may take (21): a dict from {} grows twice on the way to 14.
    msg = _PyDict_NewPresized(21) if cython.compiled else {}  # noqa: F821  (messages.pxd)
    msg["mti"] = mti
    if pan:
        msg[2] = pan
    msg[3] = processing_code
    if amount is not None:
        # What f"{amount:012d}" writes for an int, without parsing a format spec per request.
        if type(amount) is int and 0 <= amount <= 999_999_999_999:
            cents = amount  # a C integer once compiled: formatted in C (messages.pxd)
            msg[4] = f"{cents:012d}"
        else:
            msg[4] = str(amount).zfill(12) if type(amount) is int else f"{amount:012d}"
    msg[7] = f7
    msg[11] = stan
    if local_time:
        msg[12] = local_time
    if local_date:
        msg[13] = local_date
    if expiry:
        msg[14] = expiry
    if entry_mode:
        msg[22] = entry_mode
    if pos_condition:
        msg[25] = pos_condition
    msg[32] = acquirer_id
    if track2:
        msg[35] = track2
    msg[37] = rrn
    msg[41] = terminal_id
    msg[42] = merchant_id
    if currency:
        msg[49] = currency
    if pin_block:
        msg[52] = pin_block
    if icc:
        msg[55] = icc
    if original is not None:
        # A completion (0220) names the pre-authorization it completes.
        if original.auth_code:
            msg[38] = original.auth_code
        msg[90] = original_data(original, acquirer_id)
    return msg


def reversal_mti(request: Request) -> str:
    """A reversal goes as an advice: 0420 first, 0421 for every repeat."""
    return "0420" if request.attempt == 0 else "0421"


def reversal_fields(request: Request, *, stan: str, f7: str, acquirer_id: str) -> dict:
    """The 0420/0421 reversing ``request.original``.

    Everything but the MTI comes from the original or from the reversal's own
    journaled STAN and field 7 (which the caller passes as ``stan``/``f7``), so
    every repeat carries the same content: the card (2), processing code (3),
    amount (4), local time and date (12/13), entry mode (22), authorization
    code (38), RRN (37) and currency (49) of the original, and field 90 naming
    it.  No track 2, PIN block or chip data: a reversal authorizes nothing.

    Fields 4 and 49 are the amount and currency the acquirer holds: the
    original's, or what it approved instead (a partial approval, an approval
    in another currency: kept in ``acquirer_ref``).  A strict host refuses a
    reversal of another amount than it approved.
    """
    original = request.original
    if original is None:
        raise ValueError("a reversal needs request.original")
    ref = parse_ref(original.acquirer_ref)
    msg: dict[Any, Any] = {"mti": reversal_mti(request)}
    pan = original.pan or request.pan
    if pan:
        msg[2] = pan
    msg[3] = original.processing_code
    amount = original.amount if original.amount is not None else request.amount
    if ref is not None and ref.approved is not None:
        amount = ref.approved
    if amount is not None:
        msg[4] = f"{amount:012d}"
    msg[7] = f7
    msg[11] = stan
    local_time = original.local_time or request.local_time
    if local_time:
        msg[12] = local_time
    local_date = original.local_date or request.local_date
    if local_date:
        msg[13] = local_date
    entry_mode = original.entry_mode or request.entry_mode
    if entry_mode:
        msg[22] = entry_mode
    if request.pos_condition:
        msg[25] = request.pos_condition
    msg[32] = acquirer_id
    msg[37] = ref.rrn if ref is not None and ref.rrn else original.rrn
    if original.auth_code:
        msg[38] = original.auth_code
    msg[41] = request.terminal_id
    msg[42] = request.merchant_id
    currency = original.currency or request.currency
    if ref is not None and ref.currency is not None:
        currency = ref.currency
    if currency:
        msg[49] = currency
    msg[90] = original_data(original, acquirer_id)
    return msg


def network_fields(code: str, *, stan: str, f7: str) -> dict:
    """0800 network management: sign-on (001), sign-off (002), echo (301)."""
    return {"mti": "0800", 7: f7, 11: stan, 70: code}


def network_answer(msg: Any, response_code: str = RC_APPROVED) -> dict:
    """0810 for an 0800 the acquirer sent us."""
    answer: dict[Any, Any] = {"mti": "0810"}
    for field in (7, 11, 70):
        value = msg.get(field)
        if value is not None:
            answer[field] = value
    answer[39] = response_code
    return answer


# --------------------------------------------------------------------------
# Received messages.

def fields_view(message: Mapping) -> "FieldsView":
    """Wrap a dict like ``{"mti": ..., 11: ...}`` in the received-message interface."""
    return FieldsView(message)


class FieldsView:
    """A dict as a received message (``.mti``, ``.get(n)``, ``n in msg``): for tests
    and for the simulator's pure decision functions."""

    __slots__ = ("_fields", "mti")

    def __init__(self, message: Mapping) -> None:
        self._fields = message
        self.mti = message["mti"]

    def get(self, field: int, default: Any = None) -> Any:
        return self._fields.get(field, default)

    def __contains__(self, field: int) -> bool:
        return field in self._fields

    def __getitem__(self, field: int) -> Any:
        return self._fields[field]

    def fields(self) -> dict:
        return {k: v for k, v in self._fields.items() if k != "mti"}
