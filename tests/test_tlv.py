"""Field 48 TLV (spec section 4) and EMV BER-TLV (field 55) helpers of native.iso8583."""
from __future__ import annotations

import random

import pytest

from native.iso8583 import DecodeError, EncodeError, build_emv, build_tlv48, parse_emv, parse_tlv48
from tests import samples

# ---------------------------------------------------------------------------
# Field 48: TT LLL VALUE


def test_tlv48_round_trip_keeps_order_and_unknown_tags():
    value = "BC018" + "281234567890123456" + "ZZ000" + "CC035" + "00001000000002500000000000169C169C3"
    parsed = parse_tlv48(value)
    assert parsed == {"BC": "281234567890123456", "ZZ": "", "CC": "00001000000002500000000000169C169C3"}
    assert list(parsed) == ["BC", "ZZ", "CC"]
    assert build_tlv48(parsed) == value
    assert parse_tlv48("") == {} and build_tlv48({}) == ""


def test_tlv48_long_values():
    text = "x" * 994
    assert build_tlv48({"LY": text}) == "LY994" + text
    assert parse_tlv48("LY994" + text) == {"LY": text}


@pytest.mark.parametrize(
    "value, message, offset",
    [
        ("BC0", "field 48 TLV: 3 characters at offset 0 are too few for a tag and a 3-digit length", 0),
        ("BC001123", "field 48 TLV: 2 characters at offset 6 are too few for a tag and a 3-digit length", 6),
        ("BC0X1A", "field 48 TLV: tag at offset 0 has a length that is not 3 digits", 0),
        ("BC+1 A", "field 48 TLV: tag at offset 0 has a length that is not 3 digits", 0),
        ("BC010123", "field 48 TLV: the tag at offset 0 declares 10 characters but 3 remain", 0),
        ("B 0011", "field 48 TLV: the tag at offset 0 is not 2 letters or digits", 0),
        ("BC0011BC0012", "field 48 TLV: the tag at offset 6 appears a second time", 6),
        ("BC\u0663\u0660\u06601", "field 48 TLV: tag at offset 0 has a length that is not 3 digits", 0),
        # issue 8: wallet codes and city-card data are never quoted
        ("28x61739001010119", "field 48 TLV: tag at offset 0 has a length that is not 3 digits", 0),
        ("BC018287617390010101", "field 48 TLV: the tag at offset 0 declares 18 characters but 15 remain", 0),
    ],
)
def test_tlv48_malformed(value, message, offset):
    with pytest.raises(DecodeError) as e:
        parse_tlv48(value)
    assert (str(e.value), e.value.field, e.value.offset) == (message, 48, offset)


def test_tlv48_bad_build():
    with pytest.raises(EncodeError, match=r"^field 48 TLV: tag 'B' is not 2 letters or digits$"):
        build_tlv48({"B": "1"})
    with pytest.raises(EncodeError, match=r"^field 48 TLV: tag BC: expected str, got int$"):
        build_tlv48({"BC": 1})
    with pytest.raises(EncodeError, match=r"^field 48 TLV: tag LY: length 1000 exceeds maximum 999$"):
        build_tlv48({"LY": "x" * 1000})
    with pytest.raises(TypeError):
        parse_tlv48(b"BC0011")


def test_tlv48_random_input_never_crashes():
    rnd = random.Random(48)
    for _ in range(3000):
        text = "".join(rnd.choice("BC0123456789 xZ") for _ in range(rnd.randint(0, 30)))
        try:
            parsed = parse_tlv48(text)
        except DecodeError:
            continue
        assert build_tlv48(parsed) == text


# ---------------------------------------------------------------------------
# Field 55: EMV BER-TLV


def test_emv_sample_request():
    data = samples.icc_request()
    tags = parse_emv(data)
    assert tags[0x9F26] == bytes.fromhex("3C5F1A0B9E27D468")
    assert tags[0x95] == bytes.fromhex("0000008000")
    assert tags[0x5F2A] == bytes.fromhex("0978")
    assert tags[0x9F1E] == b"DEMO0001"
    assert list(tags)[:3] == [0x9F26, 0x9F27, 0x9F10]
    assert build_emv(tags) == data


def test_emv_constructed_tags_are_kept_whole():
    data = samples.icc_response()
    tags = parse_emv(data)
    assert list(tags) == [0x91, 0x71, 0x72]
    assert parse_emv(tags[0x71]) == {0x9F18: bytes.fromhex("00000001"), 0x86: bytes.fromhex("8424000008A1B2C3D4E5F60718")}
    assert build_emv(tags) == data


def test_emv_long_lengths():
    assert build_emv({0x9F10: b"\x01" * 127})[:3] == b"\x9f\x10\x7f"
    assert build_emv({0x9F10: b"\x01" * 128})[:4] == b"\x9f\x10\x81\x80"
    assert build_emv({0x70: b"\x01" * 300})[:4] == b"\x70\x82\x01\x2c"
    for size in (0, 1, 127, 128, 255, 256, 1000):
        value = bytes(range(256)) * 4
        data = build_emv({0x9F4B: value[:size], 0x5A: b"\x47\x61"})
        assert parse_emv(data) == {0x9F4B: value[:size], 0x5A: b"\x47\x61"}
    # 3-byte tag (DF8101-style), non-minimal long-form length accepted
    assert parse_emv(b"\xdf\x81\x01\x81\x02\xaa\xbb") == {0xDF8101: b"\xaa\xbb"}
    assert parse_emv(bytearray(b"\x9a\x03\x25\x11\x24")) == {0x9A: b"\x25\x11\x24"}


@pytest.mark.parametrize(
    "data, message, offset",
    [
        (b"\x9f", "field 55 EMV: data ends at offset 1 inside the tag at offset 0", 0),
        (b"\x9f\x26", "field 55 EMV: tag 0x9F26 at offset 0 has no length", 0),
        (b"\x9f\x26\x08\x01\x02", "field 55 EMV: tag 0x9F26 at offset 0 declares 8 bytes but 2 remain", 0),
        (b"\x95\x01\x00\x9f\x26\x81", "field 55 EMV: data ends at offset 6 inside the length of tag 0x9F26 at offset 3", 3),
        (b"\x9f\x26\x82\x01", "field 55 EMV: data ends at offset 4 inside the length of tag 0x9F26 at offset 0", 0),
        (b"\x9f\x26\x80", "field 55 EMV: tag 0x9F26 at offset 0 has length byte 0x80 (expected under 0x80, 0x81 or 0x82)", 0),
        (b"\x9f\x26\x83\x00\x00\x01\x00", "field 55 EMV: tag 0x9F26 at offset 0 has length byte 0x83 (expected under 0x80, 0x81 or 0x82)", 0),
        (b"\x00\x01\x00", "field 55 EMV: byte 0x00 at offset 0 is not a tag", 0),
        (b"\xff\x01\x00", "field 55 EMV: byte 0xFF at offset 0 is not a tag", 0),
        (b"\x9f\x81\x81\x81\x01\x00", "field 55 EMV: tag at offset 0 is longer than 4 bytes", 0),
        (b"\x95\x01\x00\x95\x01\x00", "field 55 EMV: tag 0x95 at offset 3 appears twice", 3),
    ],
)
def test_emv_malformed(data, message, offset):
    with pytest.raises(DecodeError) as e:
        parse_emv(data)
    assert (str(e.value), e.value.field, e.value.offset) == (message, 55, offset)


def test_emv_bad_build():
    for tag in (0x1F, 0x9F9F, 0x9F26 << 8 | 0x80, 0, -1, 0x1_0000_0000, "9F26", True):
        with pytest.raises(EncodeError, match=r"^field 55 EMV: "):
            build_emv({tag: b""})
    with pytest.raises(EncodeError, match=r"^field 55 EMV: tag 0x9F26: expected bytes, got str$"):
        build_emv({0x9F26: "00"})
    with pytest.raises(EncodeError, match=r"^field 55 EMV: tag 0x70: 65536 bytes is more than 65535$"):
        build_emv({0x70: bytes(65536)})
    with pytest.raises(TypeError):
        parse_emv("9F2600")


def test_emv_random_input_never_crashes():
    rnd = random.Random(55)
    good = samples.icc_request()
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[: rnd.randint(0, len(data))])
        try:
            parse_emv(data)
        except DecodeError:
            pass
