"""Realistic sample messages shared by the tests and the benchmarks.

A chip-and-PIN purchase as a terminal sends it (0200, dialect terminal-87),
the same purchase as the switch forwards it to a bank acquirer (dialect
host-87-bcd), the acquirer's 0210 and the 0210 the terminal gets back.

Every message exists in two shapes:

- a mapping for our codec: ``{"mti": "0200", 2: "4761...", 52: b"..."}``,
  text fields as ``str`` and binary (``b``) fields as ``bytes``;
- a pyiso8583 document (``pyiso8583_doc``): keys ``"t"``, ``"2"`` ...,
  binary fields as upper-case hex, which is what ``iso8583.encode`` takes.

All card data is test data: PAN 4761739001010119 is a published Visa test
card, the PIN block, cryptograms and MACs are made up.
"""
from __future__ import annotations

import copy
from typing import Mapping, Union

from iso8583.specs import default as PYISO_TERMINAL_SPEC

Value = Union[str, bytes]

PAN = "4761739001010119"
EXPIRY = "2812"  # YYMM
TRACK2 = PAN + "=" + EXPIRY + "201" + "1234567890"  # ASCII z: "=" separates PAN and expiry
TERMINAL_ID = "DEMO0001"
MERCHANT_ID = "DEMO00000000001"
CURRENCY = "978"
ACQUIRER_ID = "476173"  # field 32 as the switch identifies itself to the acquirer
RRN = "532806000123"
AUTH_CODE = "A1B2C3"

# Fields of each message, in order; the benchmarks read exactly these.
TERMINAL_0200_FIELDS = (2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 35, 41, 42, 49, 52, 55)
TERMINAL_0210_FIELDS = (3, 4, 7, 11, 12, 13, 37, 38, 39, 41, 42, 49, 55)
HOST_0200_FIELDS = (2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 32, 35, 37, 41, 42, 49, 52, 55)
HOST_0210_FIELDS = (3, 4, 7, 11, 12, 13, 32, 37, 38, 39, 41, 42, 49, 55)


def ber_tlv(*items: tuple[str, bytes]) -> bytes:
    """BER-TLV (EMV Book 3 annex B) of (tag as hex, value) pairs, short-form lengths."""
    out = bytearray()
    for tag, value in items:
        if len(value) > 127:
            raise ValueError(f"tag {tag}: {len(value)} bytes needs a long-form length")
        out += bytes.fromhex(tag) + bytes([len(value)]) + value
    return bytes(out)


def icc_request(amount: str = "000000002500", date: str = "251124", atc: str = "0123") -> bytes:
    """Field 55 of a contact chip purchase with an ARQC: 147 bytes of EMV tags."""
    return ber_tlv(
        ("9F26", bytes.fromhex("3C5F1A0B9E27D468")),  # application cryptogram (ARQC)
        ("9F27", bytes.fromhex("80")),  # cryptogram information data: ARQC
        ("9F10", bytes.fromhex("06011203A0B8000F0A0000000000000012AB")),  # issuer application data
        ("9F37", bytes.fromhex("9A4B2C7D")),  # unpredictable number
        ("9F36", bytes.fromhex(atc)),  # application transaction counter
        ("95", bytes.fromhex("0000008000")),  # TVR
        ("9A", bytes.fromhex(date)),  # transaction date YYMMDD
        ("9C", bytes.fromhex("00")),  # transaction type: purchase
        ("9F02", bytes.fromhex(amount)),  # amount, authorised
        ("5F2A", bytes.fromhex("0" + CURRENCY)),  # transaction currency code
        ("82", bytes.fromhex("3C00")),  # application interchange profile
        ("9F1A", bytes.fromhex("0250")),  # terminal country code
        ("9F03", bytes.fromhex("000000000000")),  # amount, other
        ("9F33", bytes.fromhex("E0F8C8")),  # terminal capabilities
        ("9F34", bytes.fromhex("420300")),  # CVM results: online PIN
        ("9F35", bytes.fromhex("22")),  # terminal type: attended, merchant, online
        ("84", bytes.fromhex("A0000000031010")),  # dedicated file name (Visa credit/debit)
        ("9F09", bytes.fromhex("0096")),  # application version number
        ("9F1E", TERMINAL_ID.encode("ascii")),  # IFD serial number
        ("9F41", bytes.fromhex("00000123")),  # transaction sequence counter
        ("5F34", bytes.fromhex("01")),  # PAN sequence number
    )


def icc_response() -> bytes:
    """Field 55 of an approval: issuer authentication data and two small scripts."""
    return ber_tlv(
        ("91", bytes.fromhex("8A1F4C2D9B0E77613030")),  # ARPC + ARC "00"
        ("71", ber_tlv(("9F18", bytes.fromhex("00000001")), ("86", bytes.fromhex("8424000008A1B2C3D4E5F60718")))),
        ("72", ber_tlv(("9F18", bytes.fromhex("00000002")), ("86", bytes.fromhex("841E000008F1E2D3C4B5A69788")))),
    )


def terminal_0200(stan: str = "000123", amount: str = "000000002500") -> dict:
    """A chip-and-PIN purchase as a terminal sends it (terminal-87), for our codec."""
    return {
        "mti": "0200",
        2: PAN,
        3: "000000",
        4: amount,
        7: "1124065412",
        11: stan,
        12: "075412",
        13: "1124",
        14: EXPIRY,
        22: "051",  # chip, PIN entry capability
        25: "00",
        35: TRACK2,
        41: TERMINAL_ID,
        42: MERCHANT_ID,
        49: CURRENCY,
        52: bytes.fromhex("7A3C1E9B2D4F6081"),  # ISO 9564 format 0 PIN block, encrypted
        55: icc_request(amount),
    }


def terminal_0210(request: Mapping | None = None, response_code: str = "00") -> dict:
    """The switch's approval of ``request`` (default: ``terminal_0200()``), terminal-87."""
    req = request if request is not None else terminal_0200()
    resp = {"mti": "0210"}
    for n in (3, 4, 7, 11, 12, 13):
        resp[n] = req[n]
    resp[37] = RRN
    resp[38] = AUTH_CODE
    resp[39] = response_code
    for n in (41, 42, 49):
        resp[n] = req[n]
    resp[55] = icc_response()
    return resp


def host_0200(terminal_request: Mapping | None = None) -> dict:
    """The purchase as the switch forwards it to a bank acquirer (host-87-bcd)."""
    req = terminal_request if terminal_request is not None else terminal_0200()
    host = {"mti": "0200"}
    for n in (2, 3, 4, 7, 11, 12, 13, 14, 22, 25):
        host[n] = req[n]
    host[32] = ACQUIRER_ID
    host[35] = req[35]
    host[37] = RRN
    for n in (41, 42, 49, 52, 55):
        host[n] = req[n]
    return host


def host_0210(host_request: Mapping | None = None, response_code: str = "00") -> dict:
    """The acquirer's approval of ``host_request`` (host-87-bcd)."""
    req = host_request if host_request is not None else host_0200()
    resp = {"mti": "0210"}
    for n in (3, 4, 7, 11, 12, 13, 32, 37):
        resp[n] = req[n]
    resp[38] = AUTH_CODE
    resp[39] = response_code
    for n in (41, 42, 49):
        resp[n] = req[n]
    resp[55] = icc_response()
    return resp


def pyiso8583_doc(mapping: Mapping, spec: Mapping = PYISO_TERMINAL_SPEC) -> dict:
    """The pyiso8583 document of one of our mappings: ``"t"``, ``"2"``..., binary fields as hex.

    ``spec`` decides which fields are binary: with ``pyiso8583_host_spec()``
    that includes the BCD ones.
    """
    doc = {"t": mapping["mti"]}
    for key, value in mapping.items():
        if key == "mti":
            continue
        if spec[str(key)]["data_enc"] == "b":
            if isinstance(value, (bytes, bytearray)):
                doc[str(key)] = value.hex().upper()
            else:  # digits packed as BCD: pyiso8583 takes them as hex
                doc[str(key)] = host_track2(value) if ISO87_CLASS.get(key) == "z" else value
        else:
            doc[str(key)] = value
    return doc


# Content class of each data field in ISO 8583:1987, which a pyiso8583 spec
# does not carry (it only knows "ascii" or "b"). n: digits; an: letters and
# digits; ans: printable ASCII; z: track 2 (digits and "="); xn: "C" or "D"
# then digits; b: binary. Field 65 is left out: pyiso8583 reads bit 65 as
# "a tertiary bitmap follows", so it is no data field there.
ISO87_CLASS: dict[int, str] = {
    **{n: "n" for n in range(2, 28)},
    **{n: "xn" for n in range(28, 32)},
    32: "n", 33: "n", 34: "ans", 35: "z", 36: "n",
    37: "an", 38: "an", 39: "an", 40: "an", 41: "ans", 42: "ans", 43: "ans",
    44: "an", 45: "ans", 46: "ans", 47: "ans", 48: "ans",
    49: "n", 50: "n", 51: "n", 52: "b", 53: "n", 54: "an", 55: "b",
    **{n: "ans" for n in range(56, 64)},
    64: "b",
    **{n: "n" for n in range(66, 91)},
    91: "an", 92: "an", 93: "an", 94: "an", 95: "an", 96: "b", 97: "xn", 98: "ans",
    99: "n", 100: "n", 101: "ans", 102: "ans", 103: "ans", 104: "ans",
    **{n: "ans" for n in range(105, 128)},
    128: "b",
}


def host_track2(track2: str) -> str:
    """Track 2 as pyiso8583 takes it in a BCD field: the separator is the nibble D."""
    return track2.replace("=", "D")


def pyiso8583_host_spec() -> dict:
    """host-87-bcd as a pyiso8583 spec: BCD MTI and numerics, binary bitmaps, BCD length prefixes.

    Numeric (n) and track 2 (z) fields are packed two digits a byte, an odd
    count left-padded with a 0 nibble; LL and LLL prefixes are 1 and 2 bytes
    of BCD counting digits for those fields and bytes for the others; text
    stays ASCII.
    """
    spec = copy.deepcopy(PYISO_TERMINAL_SPEC)
    spec["t"]["data_enc"] = "b"
    for n, cls in ISO87_CLASS.items():
        field = spec[str(n)]
        if field["len_type"]:
            field["len_enc"] = "bcd"
            field["len_type"] = 1 if field["len_type"] == 2 else 2
        if cls in ("n", "z"):
            field["data_enc"] = "b"
            field["len_count"] = "nibbles"
            field["left_pad"] = "0"
    return spec
