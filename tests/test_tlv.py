"""Field 48 TLV (spec section 4) and EMV BER-TLV (field 55) helpers of native.iso8583."""
from __future__ import annotations

import random

import pytest

from native import emv
from native.iso8583 import DecodeError, EncodeError, build_tlv48, parse_tlv48
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
# Field 55: EMV BER-TLV, as native.emv reads it (its own error texts and
# hypothesis tests are in test_emv.py)


def test_emv_sample_request():
    data = samples.icc_request()
    tags = dict(emv.decode(data))
    assert tags[0x9F26] == bytes.fromhex("3C5F1A0B9E27D468")
    assert tags[0x95] == bytes.fromhex("0000008000")
    assert tags[0x5F2A] == bytes.fromhex("0978")
    assert tags[0x9F1E] == b"DEMO0001"
    assert [t for t, _ in emv.decode(data)][:3] == [0x9F26, 0x9F27, 0x9F10]
    assert emv.encode(emv.decode(data)) == data


def test_emv_constructed_tags_are_kept_whole():
    data = samples.icc_response()
    assert [t for t, _ in emv.objects(data)] == [0x91, 0x71, 0x72]
    script = dict(emv.decode(data))[0x71]
    assert script == [(0x9F18, bytes.fromhex("00000001")), (0x86, bytes.fromhex("8424000008A1B2C3D4E5F60718"))]
    assert b"".join(obj for _, obj in emv.objects(data)) == data


def test_emv_long_lengths():
    assert emv.encode([(0x9F10, b"\x01" * 127)])[:3] == b"\x9f\x10\x7f"
    assert emv.encode([(0x9F10, b"\x01" * 128)])[:4] == b"\x9f\x10\x81\x80"
    assert emv.encode([(0xC0, b"\x01" * 300)])[:4] == b"\xc0\x82\x01\x2c"
    for size in (0, 1, 127, 128, 255, 256, 1000):
        value = bytes(range(256)) * 4
        data = emv.encode([(0x9F4B, value[:size]), (0x5A, b"\x47\x61")])
        assert emv.decode(data) == [(0x9F4B, value[:size]), (0x5A, b"\x47\x61")]
    assert emv.decode(b"\xdf\x81\x01\x02\xaa\xbb") == [(0xDF8101, b"\xaa\xbb")]  # 3-byte tag
    assert emv.decode(bytearray(b"\x9a\x03\x25\x11\x24")) == [(0x9A, b"\x25\x11\x24")]


def test_emv_random_input_never_crashes():
    rnd = random.Random(55)
    good = samples.icc_request()
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[: rnd.randint(0, len(data))])
        try:
            emv.decode(data)
        except emv.BerError:
            pass
