"""Terminal messages in, terminal messages out: checks, classification, responses.

Sans-I/O: every function here takes decoded values and returns values, so each
rule of the terminal interface (``docs/terminal-interface.md``) is a unit test
away.  Section references below are to that document.
"""
from __future__ import annotations

from typing import Callable, Mapping

from native import emv, fields
from native.fields import answer as _answer, joined as _joined, number as _number, values as _values
from native.clock import impossible_clock
from native.iso8583 import DecodeError
from native.panguard import mask_pan, mask_pans  # noqa: F401  (the one PAN masker; the journal imports it from native)

from switch.core.acquirer import Original, Request
from switch.core.currencies import is_currency
from switch.keyed_hash import keyed

# Section 3: fields every request must carry, by MTI.
_COMMON = (3, 7, 11, 41, 42)
_AUTH = _COMMON + (4, 12, 13, 22, 49)
MANDATORY: dict[str, tuple[int, ...]] = {
    "0100": _AUTH,
    "0200": _AUTH,
    "0220": _COMMON + (4, 49),
    "0400": _COMMON + (90,),
    "0500": _COMMON + (74, 76, 86, 88),
    "0800": (7, 11, 41, 70),
}

# Section 5: every response code a terminal may get in field 39.
RESPONSE_CODES = frozenset(
    {"00", "03", "05", "12", "13", "14", "25", "30", "51", "55", "58", "62", "68", "91", "94", "95", "96", "A0"}
)

# Section 3: fields a response echoes from its request when present.
ECHOED = (3, 4, 7, 11, 12, 13, 41, 42, 49)

# Processing code transaction types (first two digits of field 3).
PURCHASE, REFUND, BALANCE, TOPUP = "00", "20", "31", "21"
_FINANCIAL_TYPES = {"0100": (PURCHASE,), "0200": (PURCHASE, REFUND, BALANCE, TOPUP), "0220": (PURCHASE,)}

NETWORK_CODES = ("001", "002", "301", "101")  # sign-on, sign-off, echo, key exchange (spec 8)

# Field 22 (POS entry mode): its first two digits 03 mean a scanned bar code
# (section 3: a wallet).  Any other entry mode with a card number is a card:
# section 3 names 01, 02/90, 05 and 07, and third-party clients also send 91,
# 95, 81 (e-commerce) or 10 (credential on file), which the card's route takes.
BARCODE_ENTRY = "03"


class Rejection(Exception):
    """A request the switch answers itself with ``code`` (no acquirer involved)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def is_request(mti: str) -> bool:
    """Whether ``mti`` asks for an answer: its third digit (message function) is
    even -- request 0, advice 2, ... -- as every MTI of section 3 is.

    An odd one (1 request response, 3 advice response, ... 9) answers
    something.  ISO 8583 never answers it, and MTI + 10 would make a request
    of it (0210 -> 0220, 0190 -> 0200) or no MTI at all (9999): the switch
    sends nothing back (docs/terminal-interface.md, section 3).
    """
    return len(mti) == 4 and mti[2] in "02468"


def response_mti(mti: str, keep_origin: bool = False) -> str:
    """The MTI that answers ``mti``: its message function (third digit) + 1.

    ``0200`` → ``0210``, and a repeat is answered as its first send: ``0201``
    → ``0210`` (sections 3 and 6.1).  With ``keep_origin`` the last digit
    (message origin, 1 for a repeat) is the request's: ``0421`` → ``0431``,
    as an acquirer may answer a repeated reversal on the host link.  A 9
    wraps to 0 so that the result is always four digits (``0190`` → ``0100``;
    :func:`is_request` says which MTIs are answered at all).
    """
    if not keep_origin:
        answer = _ANSWER_MTIS.get(mti)  # the common case, every request the switch answers: looked up
        if answer is not None:
            return answer
    return mti[:2] + str((int(mti[2]) + 1) % 10) + (mti[3] if keep_origin else "0")


# Section 6.1: an MTI ending in 1 is the terminal's repeat of the one ending in 0.
REPEATS = frozenset({"0101", "0201", "0221", "0401"})

# response_mti of the requests of section 3 and their repeats, worked out once.
_ANSWER_MTIS = {m: m[:2] + str(int(m[2]) + 1) + "0" for m in (*MANDATORY, *REPEATS)}


def base_mti(mti: str) -> str:
    """The request a repeat stands for: ``0201`` → ``0200``; others unchanged."""
    return mti[:3] + "0" if mti in REPEATS else mti


def check_request(msg, mti: str | None = None) -> None:
    """Raise :class:`Rejection` (30 format error / 12 / 13) for a malformed request.

    Field formats (digits, lengths) were already checked by the codec; these are
    the rules the codec can't know.  ``mti``: the request a repeat stands for.
    """
    mti = mti or msg.mti
    # Tables read by "in" and [] (a dict's own operations, compiled), not by a .get method call.
    mandatory = MANDATORY[mti] if mti in MANDATORY else None
    if mandatory is None:
        raise Rejection("12", f"unsupported MTI {mti}")
    missing = [n for n in mandatory if n not in msg]
    if missing:
        raise Rejection("30", f"{mti} without field(s) {', '.join(map(str, missing))}")
    if mti == "0800":
        if msg[70] not in NETWORK_CODES:
            raise Rejection("12", f"unsupported network management code {msg[70]}")
        if impossible_clock(msg[7], None, None):  # section 2, as for every request: 7 is MMDDhhmmss
            raise Rejection("30", f"field 7 is not a possible {_CLOCK_NAMES[7]}")
        return
    # Read at once (native/fields.pyx); 3 is present (_COMMON), 4 and 90 where they are "in msg".
    sent, time, date, expiry, code, amount, f90, pan, track2 = _values(msg, _CHECKED)
    bad = impossible_clock(sent, time, date)  # native/clock.pyx: on every request
    if bad:
        raise Rejection("30", f"field {bad} is not a possible {_CLOCK_NAMES[bad]}")
    if expiry is not None and mti != "0400" and not "01" <= expiry[2:] <= "12":
        # Section 2: YYMM (the codec checked the digits).  The acquirer would
        # decline it at best; an 0400 is never refused for it, as for field 49.
        raise Rejection("30", "field 14 is not a possible expiry date YYMM: its month is not 01 to 12")
    tx_type = code[:2]
    allowed = _FINANCIAL_TYPES[mti] if mti in _FINANCIAL_TYPES else None
    if allowed is not None and tx_type not in allowed:
        raise Rejection("12", f"processing code {tx_type}xxxx not allowed in {mti}")
    if 4 in msg and mti in ("0100", "0200", "0220"):
        amount = _number(amount)  # int(amount), read in C (native/fields.pyx)
        # A completion's 13 comes after its 25 and 94 (section 6.1: switch.core.completion).
        if amount == 0 and tx_type != BALANCE and not (mti == "0220" and 90 in msg):
            raise Rejection("13", "zero amount")
    if mti == "0400" and len(f90) != 42:
        raise Rejection("30", "field 90 must be 42 digits")
    if mti == "0220" and 90 in msg and len(f90) != 42:
        raise Rejection("30", "field 90 must be 42 digits")
    if pan and track2 and track_pan(track2) != pan:
        # Routing would use one card and the acquirer see another's track.
        raise Rejection("30", "field 2 and the card number in field 35 differ")


# What check_request reads of a request (after its mandatory fields): 7, 12, 13, 14, 3, 4, 90, 2, 35.
_CHECKED = (7, 12, 13, 14, 3, 4, 90, 2, 35)

# Section 2: the terminal's clock fields (an offline upload's record dates included).
_CLOCK_NAMES = {7: "date and time MMDDhhmmss", 12: "time hhmmss", 13: "date MMDD"}


def original_key(field90: str) -> tuple[str, str, str]:
    """Section 3: field 90 = original MTI (4) + STAN (6) + field 7 (10) + zeros."""
    return field90[0:4], field90[4:10], field90[10:20]


def check_original(field90: str) -> None:
    """Raise :class:`Rejection` 30 unless the original field 7 that field 90 names
    is a possible date and time (section 2, as the request's own 7 is).

    No request with that field 7 can have been answered but 30, so an 0400 or
    0220 naming one names nothing the switch could reverse or complete.
    """
    if impossible_clock(original_key(field90)[2], None, None):
        raise Rejection("30", f"field 90: the original's field 7 is not a possible {_CLOCK_NAMES[7]}")


def pan_of(msg) -> str | None:
    """The PAN from field 2, else from track 2 (field 35) up to the separator."""
    pan = msg.get(2)
    if pan:
        return pan
    track2 = msg.get(35)
    return track_pan(track2) if track2 else None


def token_pan(code: str) -> str:
    """A card-scheme QR payment code (field 48 tag BC) as the token PAN its card network
    gets in field 2 (section 3): digits (30 otherwise), 8 to 19 of them, as field 2 holds
    (14 otherwise, as a card number of another length)."""
    if not (code.isascii() and code.isdigit()):
        raise Rejection("30", "field 48 tag BC: a payment code is digits")
    if not 8 <= len(code) <= 19:
        raise Rejection("14", f"a card-scheme QR code goes as a card number of 8 to 19 digits, got {len(code)}")
    return code


def track_pan(track2: str) -> str | None:
    """The card number of track 2 data: the digits before the separator."""
    for sep in ("=", "D", "d"):
        idx = track2.find(sep)
        if idx > 0:
            return track2[:idx]
    return None


def payment_kind(msg, pan: str | None, tlv: Mapping[str, str]) -> str:
    """Section 3, "which payment it is": ``wallet`` (bar code) or ``pan`` (card or city card).

    Card versus city card is decided by the route the PAN falls in.
    """
    entry = msg.get(22) or ""
    if entry.startswith(BARCODE_ENTRY):
        if 2 in msg or 35 in msg:
            raise Rejection("30", "bar-code payment must not carry field 2 or 35")
        if not tlv.get("BC"):
            raise Rejection("30", "bar-code payment without field 48 tag BC")
        if not tlv["BC"].isdigit():
            raise Rejection("30", "payment code in tag BC is not digits")
        return "wallet"
    if not pan:
        raise Rejection("30", "no card number in field 2 or 35")
    return "pan"


def check_topup(msg, kind: str) -> None:
    """Raise :class:`Rejection` 12 for a top-up (21xxxx) of anything but a city card.

    Section 3 gives a financial 0200 three kinds, purchase, refund and
    balance inquiry; section 4.1 adds the top-up, which loads cash onto a
    city card with the card's MAC1.  Forwarded to a bank card's acquirer, a
    21 would credit the card (a deposit) beside the merchant's refund
    limits (section 6.1) and outside its 0500 totals (section 3).
    """
    if msg[3][:2] == TOPUP and kind != "citycard":
        raise Rejection("12", f"processing code 21xxxx (a city-card top-up) for a {kind} payment")


def check_currency(msg, mti: str) -> None:
    """Raise :class:`Rejection` 30 when field 49 names no currency of ISO 4217
    (:mod:`switch.core.currencies`): section 2 makes it "Currency code, ISO 4217
    numeric", and 000, 999 (no currency) or unassigned digits are not one.

    Absent, the merchant's currency applies.  An 0400 is never refused for it:
    a reversal must always be able to undo money, and field 90 names what.
    """
    if mti != "0400" and 49 in msg and not is_currency(msg[49]):
        raise Rejection("30", f"field 49 {msg[49]!r} is not an ISO 4217 currency code")


# Fields whose value decides "same content" for a retransmission (section 6).
# 55 is the card's own data for this transaction (its cryptogram, its
# counter): other ICC data under a key already used is another card
# transaction (94), never to be given the first one's answer.
# 74, 76, 86 and 88 are an 0500's totals: a corrected 0500 under the key of
# one already answered is other content (94), not a retransmission to be
# given the first one's 95 again.
_DIGEST_FIELDS = (2, 3, 4, 14, 22, 35, 42, 48, 49, 55, 74, 76, 86, 88, 90)
_DIGEST_TAGS = tuple((n, b"|%d=" % n) for n in _DIGEST_FIELDS)


def content_digest(msg, key: bytes, mti: str | None = None) -> str:
    """Keyed digest of a request's content: equal for a retransmission, never reversible to the PAN.

    ``mti``: the request a repeat stands for (a repeat has its original's content).
    """
    # One HMAC over the joined parts (the MTI's text UTF-8 encoded, as the fields'): what
    # updating with each in turn would give.
    return keyed(key).hexdigest(_joined(msg, mti or msg.mti, _DIGEST_TAGS), 32)


def build_request(
    msg,
    *,
    txn_id: int,
    kind: str,
    rrn: str,
    pan: str | None,
    tlv: dict[str, str],
    original: Original | None = None,
    mti: str | None = None,
) -> Request:
    """The acquirer-neutral request for an adapter, from the terminal's message."""
    # Read at once (native/fields.pyx); 41, 11 and 7 are required as msg[n] requires them.
    (amount, code, currency, tid, mid, stan, sent, time, date, expiry, entry, condition, track2, pin_block,
     icc) = _values(msg, _REQUEST_FIELDS)
    return Request(
        txn_id=txn_id,
        kind=kind,
        mti=mti or msg.mti,
        processing_code=code or "000000",
        amount=_number(amount) if amount is not None else None,  # int(amount), read in C
        currency=currency,
        terminal_id=tid if tid is not None else msg[41],
        merchant_id=mid or "",
        stan=stan if stan is not None else msg[11],
        transmission_time=sent if sent is not None else msg[7],
        rrn=rrn,
        local_time=time,
        local_date=date,
        pan=pan,
        expiry=expiry,
        entry_mode=entry,
        pos_condition=condition,
        track2=track2,
        pin_block=pin_block,
        icc=icc,
        tlv=tlv,
        original=original,
    )


# What build_request reads of the terminal's message, in the order it unpacks them.
_REQUEST_FIELDS = (4, 3, 49, 41, 42, 11, 7, 12, 13, 14, 22, 25, 35, 52, 55)


def build_response(
    msg,
    code: str,
    rrn: str,
    *,
    auth_code: str | None = None,
    tlv: Mapping[str, str] | None = None,
    icc: bytes | None = None,
    build_tlv48=None,
) -> dict:
    """The response mapping for the terminal dialect (section 3).

    Never carries fields 2, 35 or 52: only the echoed fields and what the switch
    or the acquirer adds.
    """
    mti = msg.mti
    # {"mti": ...} and the echoed fields, in a dict with room for what is added below.
    out: dict = _answer(msg, _ANSWER_MTIS[mti] if mti in _ANSWER_MTIS else response_mti(mti), ECHOED)
    if 70 in msg and mti[:3] == "080":
        # An 0800 without 70 is answered 30 like any request missing a field.
        out[70] = msg[70]
    out[37] = rrn
    out[39] = code
    if code == "00":
        # Section 3: an approved response carries 38.  One no acquirer gave an
        # approval code for (an 0410, 0510 or 0810, a completion or a wallet
        # or city-card payment answered without one) carries the last six
        # digits of its RRN: unique within the switch, and journaled with the
        # response, so a retransmission gets the same.
        out[38] = (auth_code or rrn[-6:])[:6].ljust(6)
    if tlv and build_tlv48 is not None:
        out[48] = build_tlv48(tlv)
    if icc:
        out[55] = icc
    return out


# Section 3 (v1.1): the issuer's own EMV data, the only tags a response's field
# 55 carries: issuer authentication data (91), issuer scripts processed before
# (71) and after (72) the final GENERATE AC, and the authorisation response code
# (8A) the issuer may send for the card.  Everything else an acquirer might
# echo (the card's cryptogram, 5A the PAN, 57 track 2 ...) stays out.
ISSUER_TAGS = frozenset((0x91, 0x71, 0x72, 0x8A))


def check_icc(value: bytes) -> None:
    """Raise :class:`Rejection` 30 unless field 55 is well-formed EMV BER-TLV (section 3, v1.1).

    The reason names the tag and offset, never the data.
    """
    if not value:
        raise Rejection("30", "field 55 is empty")
    try:
        emv.check(value)
    except emv.BerError as e:
        raise Rejection("30", f"field 55: {e}") from None


def issuer_icc(value: bytes) -> bytes | None:
    """The acquirer's field 55 cut down to the issuer's tags (``ISSUER_TAGS``), each as it came.

    None when it holds none of them.  Malformed data raises ValueError (the
    acquirer's fault, not the terminal's): the caller answers without field 55
    and logs it, since an approval stands without issuer data (EMV terminals
    then treat issuer authentication as not performed).
    """
    try:
        kept = [raw for tag, raw in emv.objects(value) if tag in ISSUER_TAGS]
    except emv.BerError as e:
        raise ValueError(f"field 55 from the acquirer: {e}") from None
    return b"".join(kept) or None


def salvage_echo(body: bytes, codec, terminals) -> dict | None:
    """What a 30 answer to an undecodable message echoes (sections 1 and 5).

    The response MTI, 11 and 41 when they can still be read in front of the
    first malformed field and 41 is one of ``terminals`` (the configured
    terminal IDs), so that a host multiplexing lanes can match the answer;
    ``0810`` when not even the MTI is readable; None (no answer) when the
    MTI is a response's (:func:`is_request`).  Nothing else: the rest of a
    malformed message is not trusted (and may hold card data).  A damaged
    bitmap shifts every field after it, so "field 41" may then be eight bytes
    of the PAN or of track 2: only a known terminal ID shows that 41, and 11
    before it, were read where they belong.
    """
    try:
        msg = codec.salvage(body)
    except DecodeError:
        return {"mti": "0810"}
    if not is_request(msg.mti):
        return None  # a damaged response is not answered either (is_request)
    out: dict = {"mti": response_mti(msg.mti)}
    if 11 in msg and 41 in msg and msg[41] in terminals:
        out[11] = msg[11]
        out[41] = msg[41]
    return out


class RRNs:
    """RRNs for answers the journal never saw (undecodable requests, 0810, 94).

    Journaled transactions get ``%012d`` of their journal id; these start with
    ``N`` so the two can never collide (field 37 is an12).
    """

    def __init__(self, clock: Callable[[], float]):
        self._n = int(clock() * 1000) % 10**11

    def next(self) -> str:
        self._n = (self._n + 1) % 10**11
        return "N%011d" % self._n
