"""A decode error names the field, the offset and what was expected, never the bytes found.

Through a damaged bitmap any field may start on another field's bytes: with
the packed-BCD host dialect a text field may read the PAN or track 2 as BCD,
which no run-of-digits check sees.  So no DecodeError (nor FrameError) text
quotes what it found, in any dialect: the messages reach the acquirer link's
log and the engine's ``format error`` line.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from native.framing import FrameError, Framer
from native.iso8583 import DecodeError, dialect

PAN = "4761739001010119"  # Luhn-valid
TRACK2 = PAN + "=2512101123456789"
DIALECTS = ["host-87-bcd", "terminal-87", "iso87-ascii"]
REQUEST = {"mti": "0200", 2: PAN, 3: "000000", 4: "000000001000", 7: "1124120001", 11: "000002",
           12: "120001", 13: "1124", 22: "051", 32: "10000000042", 35: TRACK2, 37: "000000000002",
           41: "DEMO0001", 42: "DEMO00000000001", 49: "840"}


def assert_quotes_no_data(text: str) -> None:
    assert "b'" not in text and 'b"' not in text and "\\x" not in text, text
    digits = TRACK2.replace("=", "")
    for i in range(len(digits) - 5):
        assert digits[i:i + 6] not in text, (digits[i:i + 6], text)
    for i in range(len(PAN) - 5):  # also as hex text of packed BCD
        assert PAN[i:i + 6] not in text.replace(" ", ""), text


def bitmap_at(name: str) -> tuple[int, int]:
    """Offset and width of the primary bitmap in ``name``'s encoding."""
    return (2, 8) if name == "host-87-bcd" else (4, 16 if name == "iso87-ascii" else 8)


def damaged(name: str, flips: list[int]) -> bytes:
    wire = bytearray(dialect(name).encode(REQUEST))
    at, width = bitmap_at(name)
    for bit in flips:
        if width == 8:
            wire[at + bit // 8 % 8] ^= 0x80 >> (bit % 8)
        else:  # hex bitmap: change one hex digit to another (or to a non-hex character)
            i = at + bit % 16
            digits = b"0123456789ABCDEFG"
            wire[i] = digits[(digits.index(bytes(wire[i:i + 1]).upper()) + 1 + bit) % 17]
    return bytes(wire)


def test_host_field_37_reading_the_packed_bcd_track_2_quotes_none_of_it():
    host = dialect("host-87-bcd")
    wire = host.encode(REQUEST)
    bad = bytes([*wire[:2], wire[2] ^ 0x01, *wire[3:]])  # field 8 said present: every field after it moves
    with pytest.raises(DecodeError) as e:
        host.decode(bad)
    assert (e.value.field, e.value.offset) == (37, 49)
    assert f"field {e.value.field}" in str(e.value) and f"offset {e.value.offset}" in str(e.value)
    assert_quotes_no_data(str(e.value))


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("bit", range(64))
def test_every_single_flipped_bitmap_bit_gives_an_error_that_quotes_no_card_data(name, bit):
    try:
        dialect(name).decode(damaged(name, [bit]))
    except DecodeError as e:
        assert_quotes_no_data(str(e))


@pytest.mark.parametrize("name", DIALECTS)
def test_a_bad_byte_in_a_field_is_named_by_offset_not_by_value(name):
    d = dialect(name)
    wire = bytearray(d.encode({"mti": "0200", 37: "ABC123456789", 41: "DEMO0001"}))
    rrn = wire.index(b"ABC123456789")
    wire[rrn + 3] = 0x01
    with pytest.raises(DecodeError) as e:
        d.decode(bytes(wire))
    text = str(e.value)
    assert (e.value.field, e.value.offset) == (37, rrn)
    assert text.startswith(f"field 37: expected 12 alphanumeric characters at offset {rrn}, found "), text
    assert f"offset {rrn + 3}" in text and "ABC" not in text and "123456789" not in text, text


def test_a_bcd_mti_and_length_prefix_are_not_quoted():
    host = dialect("host-87-bcd")
    with pytest.raises(DecodeError) as e:
        host.decode(b"\x47\x6a" + bytes(8))
    assert "476" not in str(e.value) and "\\x" not in str(e.value)
    wire = host.encode({"mti": "0200", 2: PAN})
    with pytest.raises(DecodeError) as e:
        host.decode(wire[:10] + b"\x4a" + wire[11:])
    assert (e.value.field, e.value.offset) == (2, 10)
    assert_quotes_no_data(str(e.value))
    assert "4a" not in str(e.value).lower()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(DIALECTS), flips=st.lists(st.integers(0, 63), min_size=1, max_size=4),
       cut=st.integers(0, 8))
def test_random_damaged_messages_never_quote_card_data(name, flips, cut):
    wire = damaged(name, flips)
    try:
        dialect(name).decode(wire[:len(wire) - cut] if cut else wire)
    except DecodeError as e:
        assert_quotes_no_data(str(e))


@pytest.mark.parametrize("kind,header", [("ascii4", b"4761"[:3] + b"\x90"), ("bcd2", b"\x47\x6a")])
def test_a_bad_length_header_is_not_quoted(kind, header):
    with pytest.raises(FrameError) as e:
        Framer(kind, max_frame=8192).feed(header + bytes.fromhex(PAN))
    text = str(e.value)
    assert "476" not in text and "\\x" not in text and "b'" not in text and "6a" not in text.lower(), text
    assert "stream offset 0" in text


def test_an_emv_error_names_no_byte_read_from_inside_a_value():
    from native import emv

    pan = bytes.fromhex(PAN)
    for data in (b"\x5a\x02" + pan[:2] + b"\x19\x01\x00",  # a tag byte of the universal class: 0x19, PAN digits
                 b"\x5a\x02" + pan[:2] + b"\x9f\x26\x90" + pan):  # a length byte over 0x82: 0x90
        with pytest.raises(emv.BerError) as e:
            emv.check(data)
        assert "0x19" not in str(e.value) and "0x90" not in str(e.value), str(e.value)
        assert f"offset {e.value.offset}" in str(e.value)
