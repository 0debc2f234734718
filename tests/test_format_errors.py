"""Format errors (30) a terminal can act on: field 55 checks, issuer EMV data, echoes of undecodable messages.

Spec section 3 (v1.1: field 55 must be well-formed BER-TLV; a response's 55
carries only the issuer's data) and section 1 (a host multiplexing lanes
matches answers by 41 + 11, so a 30 echoes them when they can be read).
"""
from __future__ import annotations

import pathlib
import re

import pytest

from native import emv
from native.iso8583 import DecodeError, dialect
from switch.core import messages as m
from tests import samples

T87 = dialect("terminal-87")
ASCII = dialect("iso87-ascii")
BCD = dialect("host-87-bcd")
KNOWN = frozenset({samples.TERMINAL_ID})  # the configured terminal IDs salvage_echo is given

# ---------------------------------------------------------------------------
# check_icc


def test_a_well_formed_field_55_passes():
    m.check_icc(samples.icc_request())
    m.check_icc(samples.icc_response())


@pytest.mark.parametrize(
    "value, reason",
    [
        (samples.icc_request().hex().upper().encode(),
         "field 55: 294 bytes of ASCII hex digits at offset 0: expected binary BER-TLV, not hex text"),
        (samples.icc_request()[:26], "field 55: tag 0x9F10 at offset 15 declares 18 bytes but 8 remain"),
        (b"\x9f\x26\x09" + bytes(8), "field 55: tag 0x9F26 at offset 0 declares 9 bytes but 8 remain"),
        (samples.icc_request() + b"\x00\x00", "field 55: byte 0x00 at offset 147 is padding, not a tag"),
        (b"\x9f\x26\x80" + bytes(10), "field 55: tag 0x9F26 at offset 0 has the indefinite length 0x80, which EMV does not allow"),
        (b"", "field 55 is empty"),
    ],
    ids=["hex-text", "truncated", "bad-length", "trailing-garbage", "indefinite", "empty"],
)
def test_a_malformed_field_55_is_30_naming_tag_and_offset(value, reason):
    with pytest.raises(m.Rejection) as e:
        m.check_icc(value)
    assert (e.value.code, e.value.reason) == ("30", reason)


def test_the_reason_never_quotes_card_data():
    pan = bytes.fromhex("4761739001010119")
    value = b"\x5a\x08" + pan + b"\x57\x10" + pan + bytes.fromhex("D2512201")
    with pytest.raises(m.Rejection) as e:
        m.check_icc(value)
    assert pan.hex() not in e.value.reason.lower() and "4761" not in e.value.reason


# ---------------------------------------------------------------------------
# issuer_icc


def test_issuer_icc_keeps_only_the_issuers_tags_byte_for_byte():
    issuer = samples.icc_response()
    echoed = emv.encode([(0x9F26, bytes(8)), (0x5A, bytes.fromhex("4761739001010119")), (0x9F36, b"\x00\x01")])
    arc = b"\x8a\x02\x30\x30"
    mixed = echoed[:11] + issuer[:12] + echoed[11:] + arc + issuer[12:]
    assert m.issuer_icc(mixed) == issuer[:12] + arc + issuer[12:]
    assert m.issuer_icc(issuer) == issuer
    long_form = b"\x91\x81\x02\xaa\xbb"
    assert m.issuer_icc(long_form) == long_form  # as it came, not re-encoded


def test_issuer_icc_none_without_issuer_tags_and_an_error_for_malformed_data():
    assert m.issuer_icc(emv.encode([(0x9F26, bytes(8))])) is None
    assert m.issuer_icc(b"") is None
    with pytest.raises(ValueError, match=r"^field 55 from the acquirer: tag 0x91 at offset 0 declares 10 bytes but 2 remain$"):
        m.issuer_icc(b"\x91\x0a\x01\x02")


def test_build_response_with_issuer_icc_never_carries_the_card_data():
    req = T87.decode(T87.encode(samples.terminal_0200()))
    acquirer_55 = samples.icc_request() + samples.icc_response()
    resp = m.build_response(req, "00", "000000000001", auth_code="A1B2C3", icc=m.issuer_icc(acquirer_55))
    assert resp[55] == samples.icc_response()
    assert not {2, 35, 52} & set(resp)


# ---------------------------------------------------------------------------
# Dialect.salvage and salvage_echo


def _as(codec, fields: dict) -> dict:
    """iso87-ascii carries binary fields as hex text."""
    if codec is not ASCII:
        return fields
    return {k: v.hex().upper() if isinstance(v, bytes) else v for k, v in fields.items()}


def _request(codec):
    return codec.encode(_as(codec, samples.terminal_0200()))


@pytest.mark.parametrize("codec", [T87, ASCII], ids=lambda d: d.name)
def test_salvage_of_a_good_message_is_the_message(codec):
    body = _request(codec)
    assert codec.salvage(body).fields() == codec.decode(body).fields()


@pytest.mark.parametrize("codec", [T87, ASCII], ids=lambda d: d.name)
def test_salvage_of_every_prefix_keeps_whole_fields_only(codec):
    """Cut after every byte: what is salvaged is always a leading run of the real fields."""
    body = _request(codec)
    full = codec.decode(body).fields()
    order = sorted(full)
    for cut in range(4, len(body)):
        try:
            got = codec.salvage(body[:cut]).fields()
        except DecodeError:
            raise AssertionError(f"the MTI is readable at cut {cut}")
        assert list(got) == order[: len(got)], cut
        assert all(full[n] == v for n, v in got.items()), cut


@pytest.mark.parametrize("codec", [T87, ASCII, BCD], ids=lambda d: d.name)
def test_salvage_with_trailing_bytes_reads_all_fields(codec):
    fields = {"mti": "0200", 3: "000000", 4: "000000002500", 7: "1124065412", 11: "000123", 41: "DEMO0001"}
    body = codec.encode(fields)
    with pytest.raises(DecodeError):
        codec.decode(body + b"\x00\x01")
    got = codec.salvage(body + b"\x00\x01")
    assert got.fields() == {k: v for k, v in fields.items() if k != "mti"} and got.mti == "0200"


def test_salvage_raises_only_without_an_mti():
    with pytest.raises(DecodeError, match="MTI"):
        T87.salvage(b"02")
    with pytest.raises(DecodeError, match="MTI"):
        T87.salvage(b"02X0" + bytes(8))
    assert T87.salvage(b"0200").mti == "0200" and len(T87.salvage(b"0200")) == 0
    assert len(ASCII.salvage(b"0200ZZZZ")) == 0


def test_salvage_stops_at_a_field_the_dialect_does_not_define(tmp_path):
    text = pathlib.Path(T87.path).read_text()
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(re.sub(r"(?m)^20 = .*\n", "", text).replace('name = "terminal-87"', 'name = "narrow"'))
    codec = dialect(str(narrow))
    assert codec.field_spec(20) is None
    body = bytearray(codec.encode({"mti": "0200", 3: "000000", 11: "000001", 41: "DEMO0001"}))
    body[4 + 19 // 8] |= 0x80 >> (19 % 8)  # field 20
    with pytest.raises(DecodeError, match="field 20 set but dialect narrow does not define it"):
        codec.decode(bytes(body))
    got = codec.salvage(bytes(body))
    assert got.keys() == [3, 11]


def test_salvage_echo_for_a_malformed_field_after_41():
    fields = samples.terminal_0200()
    body = T87.encode(fields)
    broken = body[:-3]  # field 55 cut short
    assert m.salvage_echo(broken, T87, KNOWN) == {"mti": "0210", 11: fields[11], 41: fields[41]}


def test_salvage_echo_in_the_ascii_dialect():
    fields = samples.terminal_0200()
    body = ASCII.encode(_as(ASCII, fields))
    bad = body.replace(b"DEMO00000000001", b"DEMO0000000000\x01")  # field 42 holds a control byte
    with pytest.raises(DecodeError, match="field 42"):
        ASCII.decode(bad)
    assert m.salvage_echo(bad, ASCII, KNOWN) == {"mti": "0210", 11: fields[11], 41: fields[41]}


def test_salvage_echo_of_a_response_mti_is_no_answer():
    fields = {**samples.terminal_0200(), "mti": "0210"}
    broken = T87.encode(fields)[:-3]
    assert m.salvage_echo(broken, T87, KNOWN) is None


def test_salvage_echo_of_an_unknown_terminal_is_the_mti_alone():
    fields = samples.terminal_0200()
    broken = T87.encode(fields)[:-3]
    assert m.salvage_echo(broken, T87, frozenset({"DEMO0002"})) == {"mti": "0210"}


def test_salvage_echo_never_returns_card_data_read_through_a_damaged_bitmap():
    fields = samples.terminal_0200()
    body = bytearray(T87.encode(fields))
    body[4 + 34 // 8] &= ~(0x80 >> (34 % 8))  # field 35 present but no longer announced
    # Every field after 25 is read one field early: "41" is track 2's length and card number.
    assert T87.salvage(bytes(body))[41] == "34" + samples.PAN[:6]
    assert m.salvage_echo(bytes(body), T87, KNOWN) == {"mti": "0210"}


def test_salvage_echo_of_a_message_broken_before_11():
    body = T87.encode({"mti": "0400", 3: "000000", 7: "1124065412", 11: "000123", 41: "DEMO0001"})
    broken = body[:12] + b"X" + body[13:]  # inside field 3
    assert m.salvage_echo(broken, T87, KNOWN) == {"mti": "0410"}
    assert m.salvage_echo(b"\x01\x02", T87, KNOWN) == {"mti": "0810"}
