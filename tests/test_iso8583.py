"""Unit tests of native.iso8583: dialect files, every format and encoding, lazy decoding, errors.

Every decode test feeds the parser three ways: the whole message, the message
followed by extra bytes (an error naming them) and every truncation of it (a
DecodeError, never a crash).
"""
from __future__ import annotations

import pickle
import random
import textwrap

import iso8583 as pyiso
import pytest
from iso8583.specs import default as PYISO_DEFAULT
from iso8583.specs import default_ascii as PYISO_DEFAULT_ASCII

import native.iso8583
from native.iso8583 import DecodeError, EncodeError, dialect
from tests import samples

TERMINAL = dialect("terminal-87")
ASCII = dialect("iso87-ascii")
HOST = dialect("host-87-bcd")


def bitmap(*numbers: int) -> bytes:
    """Binary bitmap(s) with the given fields set (bit 1 / 65 added when needed)."""
    nums = set(numbers)
    if any(n > 128 for n in nums):
        nums.add(65)
    if any(n > 64 for n in nums):
        nums.add(1)
    out = b""
    for base in (0, 64, 128):
        if base and not any(base < n <= base + 64 for n in nums):
            break
        bits = 0
        for n in nums:
            if base < n <= base + 64:
                bits |= 1 << (64 - (n - base))
        out += bits.to_bytes(8, "big")
    return out


def fed_three_ways(d, data: bytes) -> native.iso8583.Message:
    """Decode ``data`` whole; check extra bytes and every truncation are DecodeErrors."""
    msg = d.decode(data)
    msg.fields()
    with pytest.raises(DecodeError, match=r"^3 extra bytes after (field \d+|the bitmap) at offset %d$" % len(data)) as e:
        d.decode(data + b"\x00AB")
    assert e.value.offset == len(data)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            d.decode(data[:cut])
    return msg


def write_dialect(tmp_path, text: str, name: str = "test.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------------------
# The build


def test_compiled_module_is_loaded():
    # setup.py has no pure-Python fallback; a build that silently fell back must fail here.
    assert native.iso8583.__file__.endswith(".so")
    assert type(TERMINAL).__module__ == "native.iso8583"


# ---------------------------------------------------------------------------
# Dialects


def test_dialects_are_cached_and_named():
    assert dialect("terminal-87") is TERMINAL
    assert TERMINAL.name == "terminal-87"
    assert dialect(TERMINAL.path) is TERMINAL
    assert set(native.iso8583.available_dialects()) >= {"terminal-87", "iso87-ascii", "host-87-bcd"}
    assert repr(TERMINAL).startswith("<Dialect 'terminal-87'")


def test_unknown_dialect():
    with pytest.raises(ValueError, match=r"unknown dialect 'nope': expected one of .*terminal-87"):
        dialect("nope")
    with pytest.raises(ValueError, match=r"/nonexistent/x\.toml: cannot read dialect"):
        dialect("/nonexistent/x.toml")


def test_dialect_cannot_be_instantiated_directly():
    with pytest.raises(TypeError):
        native.iso8583.Dialect()
    with pytest.raises(TypeError):
        native.iso8583.Message()


@pytest.mark.parametrize(
    "name, spec",
    [("terminal-87", PYISO_DEFAULT), ("iso87-ascii", PYISO_DEFAULT_ASCII)],
)
def test_dialect_is_field_for_field_pyiso8583(name, spec):
    d = dialect(name)
    assert d.defined_fields == tuple(n for n in range(2, 129) if n != 65)
    for n in d.defined_fields:
        ours, theirs = d.field_spec(n), spec[str(n)]
        if theirs["len_type"] == 0:
            assert ours["fixed"] == theirs["max_len"], n
        else:
            assert ours["var"] == "L" * theirs["len_type"] and ours["max"] == theirs["max_len"], n
            assert ours["prefix_encoding"] == "ascii"
        assert (ours["format"] == "b") == (theirs["data_enc"] == "b"), n
    assert d.field_spec(1) == {"format": "bitmap", "name": "Bitmap, Secondary"}
    assert d.field_spec(129) is None


def test_terminal_field_formats_follow_the_spec():
    # docs/terminal-interface.md section 2
    expect = {2: ("n", "LL", 19), 35: ("z", "LL", 37), 48: ("ans", "LLL", 999), 55: ("b", "LLL", 255)}
    for n, (fmt, var, mx) in expect.items():
        s = TERMINAL.field_spec(n)
        assert (s["format"], s["var"], s["max"]) == (fmt, var, mx)
    fixed = {3: "n", 4: "n", 7: "n", 11: "n", 37: "an", 38: "an", 39: "an", 41: "ans", 42: "ans", 52: "b", 64: "b",
             70: "n", 90: "n", 128: "b"}
    for n, fmt in fixed.items():
        assert TERMINAL.field_spec(n)["format"] == fmt


# ---------------------------------------------------------------------------
# terminal-87 (pyiso8583 default): ASCII, binary bitmaps, ASCII LL/LLL


def test_terminal_sample_matches_pyiso8583_both_ways():
    request = samples.terminal_0200()
    theirs = bytes(pyiso.encode(samples.pyiso8583_doc(request), PYISO_DEFAULT)[0])
    assert TERMINAL.encode(request) == theirs
    msg = fed_three_ways(TERMINAL, theirs)
    assert msg.mti == "0200"
    assert msg.fields() == {k: v for k, v in request.items() if k != "mti"}
    assert list(msg) == list(samples.TERMINAL_0200_FIELDS)
    assert isinstance(msg[52], bytes) and isinstance(msg[2], str)


def test_terminal_layout_by_hand():
    data = b"0200" + bitmap(2, 4, 52, 55) + b"16" + b"4111111111111111" + b"000000001000" + bytes(range(8)) + b"003" + b"\x9f\x26\x00"
    msg = fed_three_ways(TERMINAL, data)
    assert msg.fields() == {2: "4111111111111111", 4: "000000001000", 52: bytes(range(8)), 55: b"\x9f\x26\x00"}
    assert TERMINAL.encode(msg.fields() | {"mti": "0200"}) == data


def test_secondary_bitmap():
    data = b"0800" + bitmap(7, 11, 70) + b"1124065412" + b"000001" + b"301"
    msg = fed_three_ways(TERMINAL, data)
    assert msg.fields() == {7: "1124065412", 11: "000001", 70: "301"}
    assert 1 not in msg and 65 not in msg and len(msg) == 3
    assert TERMINAL.encode({"t": "0800", "7": "1124065412", "11": "000001", "70": "301"}) == data
    # dropping field 70 drops the secondary bitmap
    del msg[70]
    assert TERMINAL.encode(msg) == b"0800" + bitmap(7, 11) + b"1124065412" + b"000001"


def test_field_128_and_all_zero_secondary_bitmap():
    data = b"0200" + bitmap(3, 128) + b"000000" + bytes(8)
    assert fed_three_ways(TERMINAL, data).fields() == {3: "000000", 128: bytes(8)}
    # bit 1 with an empty secondary bitmap is accepted (pyiso8583 does too); untouched, the bytes are kept
    empty = b"0200" + (bitmap(3)[0] | 0x80).to_bytes(1, "big") + bitmap(3)[1:] + bytes(8) + b"000000"
    msg = TERMINAL.decode(empty)
    assert msg.fields() == {3: "000000"} and TERMINAL.encode(msg) == empty


def test_tertiary_bitmap_rejected_without_fields_129_192():
    data = b"0200" + bitmap(3, 150)[:16] + bytes(8) + b"000000"
    with pytest.raises(DecodeError) as e:
        TERMINAL.decode(data)
    assert str(e.value) == (
        "bitmap has field 65 set (a tertiary bitmap follows) but dialect terminal-87 does not define fields 129-192"
    )
    assert e.value.field == 65


def test_every_field_of_terminal_87_round_trips():
    rnd = random.Random(87)
    for n in TERMINAL.defined_fields:
        s = TERMINAL.field_spec(n)
        size = s.get("fixed") or rnd.randint(0, s["max"])
        value = {
            "n": lambda k: "".join(rnd.choice("0123456789") for _ in range(k)),
            "an": lambda k: "".join(rnd.choice("AZaz09 ") for _ in range(k)),
            "ans": lambda k: "".join(chr(rnd.randint(0x20, 0x7E)) for _ in range(k)),
            "z": lambda k: "".join(rnd.choice("0123456789=") for _ in range(k)),
            "x+n": lambda k: rnd.choice("CD") + "".join(rnd.choice("0123456789") for _ in range(k - 1)),
            "b": lambda k: rnd.randbytes(k),
        }[s["format"]](size)
        data = TERMINAL.encode({"mti": "0100", n: value})
        doc = samples.pyiso8583_doc({"mti": "0100", n: value})
        assert data == bytes(pyiso.encode(doc, PYISO_DEFAULT)[0]), n
        assert TERMINAL.decode(data)[n] == value


# ---------------------------------------------------------------------------
# iso87-ascii (pyiso8583 default_ascii): hex bitmaps, binary fields as hex text


def test_ascii_dialect_hex_bitmaps_and_hex_fields():
    mapping = {"mti": "0200", 3: "000000", 52: "0123456789ABCDEF", 55: "9F2608AABBCCDDEEFF0011", 70: "001"}
    data = ASCII.encode(mapping)
    assert data == bytes(pyiso.encode({"t": "0200", "3": "000000", "52": "0123456789ABCDEF",
                                       "55": "9F2608AABBCCDDEEFF0011", "70": "001"}, PYISO_DEFAULT_ASCII)[0])
    assert data[4:36] == b"A000000000001200" + b"0400000000000000"
    msg = fed_three_ways(ASCII, data)
    assert msg.fields() == {k: v for k, v in mapping.items() if k != "mti"}


def test_ascii_dialect_lowercase_hex_bitmap_is_accepted():
    body = b"0400000000000000" + b"1124065412000001301"
    assert ASCII.decode(b"0800" + b"8220000000000000" + body).fields() == {7: "1124065412", 11: "000001", 70: "301"}
    fields = {3: "000000", 5: "000000000100", 7: "1124065412"}
    data = ASCII.encode({"mti": "0200", **fields})
    assert data[4:20] == b"2A00000000000000"
    lower = data[:4] + data[4:20].lower() + data[20:]
    assert ASCII.decode(lower).fields() == fields
    assert ASCII.decode(lower).encode() == lower  # untouched: the very bytes
    with pytest.raises(DecodeError) as e:
        ASCII.decode(b"0800" + b"82200000000000G0" + body)
    assert str(e.value) == "primary bitmap at offset 4: expected 16 hex digits, found a byte that is not a hex digit at offset 18"
    with pytest.raises(DecodeError) as e:
        ASCII.decode(b"0800" + b"8220000000000000" + b"04000000000000 0" + body[16:])
    assert str(e.value) == (
        "secondary bitmap at offset 20: expected 16 hex digits, found a byte that is not a hex digit at offset 34"
    )
    with pytest.raises(DecodeError) as e:
        ASCII.decode(b"0800" + b"8220000000000000" + b"0400 000 000 000" + body[16:])
    # Digits in groups, as a card number is often written: never quoted either.
    assert str(e.value) == (
        "secondary bitmap at offset 20: expected 16 hex digits, found a byte that is not a hex digit at offset 24"
    )


def test_ascii_dialect_hex_field_errors():
    with pytest.raises(DecodeError, match=r"^field 52: expected 16 hex digits at offset 20, found a byte that is not an ASCII hex digit at offset 35$"):
        ASCII.decode(b"0200" + b"0000000000001000" + b"0123456789ABCDEZ")
    with pytest.raises(EncodeError, match=r"^field 64: expected 16 hex digits, found '0123456789ABCDEX'$"):
        ASCII.encode({"mti": "0200", 64: "0123456789ABCDEX"})


# ---------------------------------------------------------------------------
# host-87-bcd: BCD MTI, numerics, prefixes; binary b; ASCII text


def test_host_sample_matches_pyiso8583_host_spec():
    request = samples.host_0200()
    spec = samples.pyiso8583_host_spec()
    doc = samples.pyiso8583_doc(request, spec)
    theirs = bytes(pyiso.encode(doc, spec)[0])
    assert HOST.encode(request) == theirs
    msg = fed_three_ways(HOST, theirs)
    assert msg.fields() == {k: v for k, v in request.items() if k != "mti"}


def test_host_layout_by_hand():
    mapping = {"mti": "0210", 2: "476173900101011", 3: "000000", 22: "051", 35: "4761739001010119=2812201",
               39: "00", 48: "BC0051234567", 52: b"\x01" * 8, 55: b"\x91\x02\x00\x00"}
    data = HOST.encode(mapping)
    expected = (
        b"\x02\x10" + bitmap(2, 3, 22, 35, 39, 48, 52, 55)
        + b"\x15" + bytes.fromhex("0476173900101011")  # 15 digits, left-padded with a 0 nibble
        + bytes.fromhex("000000")
        + bytes.fromhex("0051")  # n3 -> 2 bytes
        + b"\x24" + bytes.fromhex("4761739001010119D2812201")  # z: '=' is the nibble D
        + b"00"
        + b"\x00\x12" + b"BC0051234567"  # LLL BCD prefix (2 bytes), ASCII data
        + b"\x01" * 8
        + b"\x00\x04" + b"\x91\x02\x00\x00"
    )
    assert data == expected
    msg = fed_three_ways(HOST, data)
    assert msg.mti == "0210"
    assert msg.fields() == {k: v for k, v in mapping.items() if k != "mti"}


def test_host_bcd_errors():
    with pytest.raises(DecodeError) as e:
        HOST.decode(b"\x02\x1a" + bitmap(3) + b"\x00\x00\x00")
    assert str(e.value) == "MTI at offset 0: expected 4 BCD digits, found a byte that is not two BCD digits at offset 1"
    with pytest.raises(DecodeError) as e:
        HOST.decode(b"\x02\x00" + bitmap(3) + b"\x00\x0a\x00")
    assert str(e.value) == "field 3: expected 6 BCD digits at offset 10, found a byte that is not two BCD digits at offset 11"
    with pytest.raises(DecodeError) as e:  # the pad nibble must be 0
        HOST.decode(b"\x02\x00" + bitmap(22) + b"\x10\x51")
    assert str(e.value) == (
        "field 22: expected 3 BCD digits at offset 10, found a byte that is not a BCD digit and the pad nibble 0 at offset 10"
    )
    with pytest.raises(DecodeError) as e:
        HOST.decode(b"\x02\x00" + bitmap(2) + b"\x1a" + bytes(13))
    assert str(e.value) == "field 2: length prefix at offset 10 is not 2 BCD digits (1 byte, not shown)"
    with pytest.raises(DecodeError) as e:
        HOST.decode(b"\x02\x00" + bitmap(35) + b"\x38" + bytes(19))
    assert str(e.value) == "field 35: declared length 38 exceeds maximum 37"
    assert (e.value.field, e.value.offset) == (35, 10)
    with pytest.raises(DecodeError) as e:  # PAN digits are never quoted
        HOST.decode(b"\x02\x00" + bitmap(2) + b"\x16" + bytes.fromhex("411111111111111A"))
    assert str(e.value) == "field 2: expected 16 BCD digits at offset 11, found a byte that is not two BCD digits at offset 18"


def test_terminal_to_host_and_back():
    """The switch's job: a terminal message re-encoded for the host and the answer for the terminal."""
    term = TERMINAL.decode(TERMINAL.encode(samples.terminal_0200()))
    host_bytes = HOST.encode(term)  # a Message of another dialect
    assert HOST.decode(host_bytes).fields() == term.fields()
    back = HOST.decode(host_bytes)
    back.mti = "0210"
    del back[2], back[35], back[52]
    back[39] = "00"
    out = TERMINAL.decode(TERMINAL.encode(back))
    assert out.mti == "0210" and out[39] == "00" and 2 not in out and out[55] == term[55]


# ---------------------------------------------------------------------------
# A dialect of our own: EBCDIC, binary and EBCDIC prefixes, LLLL, right-padded
# BCD, x+n, a, tertiary bitmap


CUSTOM = """
    name = "custom"
    mti = "ebcdic"
    bitmap = "binary"
    text_encoding = "ebcdic"
    prefix_encoding = "ebcdic"

    [fields]
    2 = { format = "n", var = "LL", max = 19, encoding = "bcd", prefix_encoding = "binary" }
    3 = { format = "n", fixed = 5, encoding = "bcd", pad = "right", pad_digit = "F" }
    4 = { format = "n", fixed = 4 }
    5 = { format = "a", fixed = 3 }
    6 = { format = "x+n", fixed = 5, encoding = "ascii" }
    7 = { format = "ans", var = "LLLL", max = 2000, encoding = "ascii", prefix_encoding = "ascii" }
    8 = { format = "b", var = "LLL", max = 300, prefix_encoding = "binary" }
    9 = { format = "b", var = "LL", max = 70000, prefix_encoding = "binary", prefix_bytes = 2 }
    10 = { format = "z", var = "LL", max = 9, encoding = "bcd", prefix_encoding = "bcd", pad = "right", pad_digit = "F" }
    11 = { format = "ans", var = "L", max = 9 }
    12 = { format = "an", var = "LLL", max = 999, prefix_encoding = "bcd", encoding = "cp500" }
    70 = { format = "n", fixed = 3 }
    130 = { format = "n", fixed = 2, encoding = "ascii" }
    192 = { format = "b", fixed = 1 }
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    path = tmp_path_factory.mktemp("dialects") / "custom.toml"
    path.write_text(textwrap.dedent(CUSTOM).replace("max = 70000", "max = 600"))
    return dialect(str(path))


def test_custom_dialect_every_encoding(custom):
    mapping = {"mti": "0200", 2: "12345", 3: "12345", 4: "0042", 5: "ABC", 6: "D0001", 7: "hello ~",
               8: b"\x00\xff", 9: b"\x01" * 300, 10: "12=45", 11: "Ab!", 12: "Hi 5", 70: "301", 130: "07", 192: b"\x80"}
    data = custom.encode(mapping)
    expected = (
        b"\xf0\xf2\xf0\xf0"  # EBCDIC MTI
        + bitmap(2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 70, 130, 192)  # primary, secondary, tertiary
        + b"\x05" + bytes.fromhex("012345")  # binary prefix (digits), BCD left-padded
        + bytes.fromhex("12345F")  # BCD right-padded with F
        + b"\xf0\xf0\xf4\xf2"  # EBCDIC digits
        + "ABC".encode("cp037")
        + b"D0001"  # x+n, ASCII
        + b"0007hello ~"  # LLLL ASCII
        + b"\x00\x02\x00\xff"  # LLL binary prefix: 2 bytes
        + b"\x01\x2c" + b"\x01" * 300  # 2-byte binary prefix
        + b"\x05" + bytes.fromhex("12D45F")  # BCD prefix, z with D, right pad F
        + b"\xf3" + "Ab!".encode("cp037")  # L EBCDIC prefix
        + b"\x00\x04" + "Hi 5".encode("cp500")
        + b"\xf3\xf0\xf1"
        + b"07"
        + b"\x80"
    )
    assert data == expected
    msg = fed_three_ways(custom, data)
    assert msg.mti == "0200"
    assert msg.fields() == {k: v for k, v in mapping.items() if k != "mti"}
    assert custom.encode(msg) is data
    msg[7] = "changed"
    assert custom.decode(custom.encode(msg))[7] == "changed"


def test_custom_dialect_errors(custom):
    head = b"\xf0\xf2\xf0\xf0"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(4) + b"\xf0\xf0\xf4\x42")
    assert str(e.value) == "field 4: expected 4 digits (EBCDIC) at offset 12, found a byte that is not an EBCDIC digit at offset 15"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(6) + b"X0001")
    assert str(e.value) == "field 6: expected 'C' or 'D' and 4 digits at offset 12, found a first byte that is not ASCII 'C' or 'D' at offset 12"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(3) + bytes.fromhex("1A345F"))
    assert str(e.value) == "field 3: expected 5 BCD digits at offset 12, found a byte that is not two BCD digits at offset 12"
    with pytest.raises(DecodeError) as e:  # right-padded with F, not 0; six digits in a row, never quoted
        custom.decode(head + bitmap(3) + bytes.fromhex("123450"))
    assert str(e.value) == "field 3: expected 5 BCD digits at offset 12, found a byte that is not a BCD digit and the pad nibble F at offset 14"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(11) + b"\x33abc")
    assert str(e.value) == "field 11: length prefix at offset 12 is not 1 EBCDIC digit (1 byte, not shown)"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(9) + b"\x02\x59" + bytes(601))
    assert str(e.value) == "field 9: declared length 601 exceeds maximum 600"
    with pytest.raises(DecodeError) as e:
        custom.decode(head + bitmap(130)[:16] + (1 << 63).to_bytes(8, "big"))
    assert str(e.value) == "bitmap has field 129 set but dialect custom does not define it"
    with pytest.raises(EncodeError) as e:
        custom.encode({"mti": "0200", 6: "C12a4"})
    assert str(e.value) == "field 6: expected 'C' or 'D' and 4 digits, found 'C12a4'"
    with pytest.raises(EncodeError) as e:
        custom.encode({"mti": "0200", 5: "AB1"})
    assert str(e.value) == "field 5: expected 3 alphabetic characters (EBCDIC), found 'AB1'"


def test_custom_dialect_random_bytes_never_crash(custom):
    rnd = random.Random(1)
    good = custom.encode({"mti": "0200", 2: "12345", 7: "x" * 40, 9: b"\x01" * 50, 12: "Hi", 130: "07"})
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[: rnd.randint(0, len(data) + 2)])
        try:
            msg = custom.decode(data)
        except DecodeError:
            continue
        msg.fields()
        assert custom.encode(msg) == data


# ---------------------------------------------------------------------------
# Bad dialect files


BAD_FIELDS = [
    ('2 = { format = "q", fixed = 2 }', r"\[fields\] 2: format 'q' is not one of"),
    ('2 = { format = "n" }', r"\[fields\] 2: give exactly one of 'fixed'"),
    ('2 = { format = "n", fixed = 2, var = "LL", max = 3 }', r"\[fields\] 2: give exactly one of 'fixed'"),
    ('2 = { format = "n", var = "LLLLL", max = 3 }', r"\[fields\] 2: var 'LLLLL' is not one of L, LL, LLL, LLLL"),
    ('2 = { format = "n", var = "LL", max = 100 }', r"\[fields\] 2: max 100 is not a length 1-99 \(a LL ascii prefix\)"),
    ('2 = { format = "n", var = "LL" }', r"\[fields\] 2: max None is not a length"),
    ('2 = { format = "n", fixed = 0 }', r"\[fields\] 2: fixed 0 is not a length 1-9999"),
    ('2 = { format = "an", fixed = 2, encoding = "bcd" }', r"\[fields\] 2: encoding 'bcd' needs format n or z, not 'an'"),
    ('2 = { format = "b", fixed = 2, encoding = "ascii" }', r"\[fields\] 2: encoding 'ascii': format b is carried as binary"),
    ('2 = { format = "n", fixed = 2, encoding = "utf-8" }', r"\[fields\] 2: encoding 'utf-8' is not one of"),
    ('2 = { format = "n", fixed = 2, colour = "red" }', r"\[fields\] 2: unknown key 'colour'"),
    ('2 = { format = "n", fixed = 2, pad = "left" }', r"\[fields\] 2: 'pad' and 'pad_digit' apply only to encoding 'bcd'"),
    ('2 = { format = "n", fixed = 3, encoding = "bcd", pad = "middle" }', r"\[fields\] 2: pad 'middle' is not 'left' or 'right'"),
    ('2 = { format = "n", fixed = 2, max = 5 }', r"\[fields\] 2: 'max', 'prefix_encoding' and 'prefix_bytes' apply only"),
    ('2 = { format = "n", var = "LL", max = 5, prefix_encoding = "morse" }', r"\[fields\] 2: prefix_encoding 'morse'"),
    ('2 = { format = "n", var = "LL", max = 5, prefix_bytes = 2 }', r"\[fields\] 2: 'prefix_bytes' applies only"),
    ('2 = { format = "hex", fixed = 3 }', r"\[fields\] 2: fixed 3 is odd"),
    ('1 = { format = "n", fixed = 3 }', r"\[fields\] 1: field 1 and 65 are bitmaps"),
    ('3 = { format = "bitmap" }', r"\[fields\] 3: only fields 1 and 65 can be bitmaps"),
    ('193 = { format = "n", fixed = 3 }', r"\[fields\] '193': is not a field number 1-192"),
    ('x = { format = "n", fixed = 3 }', r"\[fields\] 'x': is not a field number 1-192"),
    ('2 = "n6"', r"\[fields\] 2: must be a table"),
    ('2 = { format = "n", fixed = 3, sensitive = "yes" }', r"\[fields\] 2: sensitive 'yes' is not true or false"),
]


@pytest.mark.parametrize("line, message", BAD_FIELDS)
def test_bad_dialect_field(tmp_path, line, message):
    path = write_dialect(tmp_path, f"[fields]\n{line}\n", "bad.toml")
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        dialect(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('mti = "hex"\n[fields]\n2 = { format = "n", fixed = 2 }\n', r"mti: 'hex' is not one of ascii, bcd, ebcdic"),
        ('bitmap = "x"\n[fields]\n2 = { format = "n", fixed = 2 }\n', r"bitmap: 'x' is not one of binary, hex"),
        ('colour = 1\n[fields]\n2 = { format = "n", fixed = 2 }\n', r"key 'colour': unknown"),
        ('name = "x"\n', r"\[fields\]: missing or empty"),
        ("[fields\n", r"not valid TOML"),
    ],
)
def test_bad_dialect_file(tmp_path, text, message):
    path = write_dialect(tmp_path, text, "bad.toml")
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        dialect(path)


# ---------------------------------------------------------------------------
# Lazy decoding, mutation, copies


def test_untouched_message_reencodes_to_the_same_bytes():
    data = TERMINAL.encode(samples.terminal_0200())
    msg = TERMINAL.decode(data)
    assert TERMINAL.encode(msg) is data
    assert msg.encode() is data
    msg[4]  # reading does not modify
    assert TERMINAL.encode(msg) is data
    msg.mti = "0200"  # same value: still untouched
    assert TERMINAL.encode(msg) is data
    assert TERMINAL.decode(bytearray(data)).encode() == data
    assert TERMINAL.decode(memoryview(data)).encode() == data


def test_mutate_delete_add_and_reencode():
    request = samples.terminal_0200()
    msg = TERMINAL.decode(TERMINAL.encode(request))
    msg[4] = "000000009999"
    del msg[52]
    msg[48] = "BC0051234567"
    msg[64] = bytearray(b"\x01" * 8)
    msg.mti = "0220"
    expected = {k: v for k, v in request.items() if k not in ("mti", 52)}
    expected.update({4: "000000009999", 48: "BC0051234567", 64: b"\x01" * 8})
    out = TERMINAL.decode(TERMINAL.encode(msg))
    assert out.mti == "0220"
    assert out.fields() == dict(sorted(expected.items()))
    assert TERMINAL.encode(msg) == TERMINAL.encode({"mti": "0220", **expected})


def test_copy_is_independent():
    msg = TERMINAL.decode(TERMINAL.encode(samples.terminal_0200()))
    msg[4]
    twin = msg.copy()
    twin[4] = "000000000001"
    del twin[2]
    assert msg[4] == "000000002500" and 2 in msg
    assert twin[4] == "000000000001" and 2 not in twin
    assert twin == TERMINAL.decode(TERMINAL.encode(twin))
    assert msg != twin


def test_mapping_interface():
    msg = TERMINAL.new("0800", {7: "1124065412", "11": "000001", 70: "301"})
    assert msg.mti == "0800" and msg.dialect is TERMINAL
    assert len(msg) == 3 and list(msg) == [7, 11, 70] and msg.keys() == [7, 11, 70]
    assert msg.get(7) == "1124065412" and msg.get(8) is None and msg.get(8, "x") == "x"
    assert 7 in msg and 8 not in msg and "7" not in msg and 1 not in msg
    assert msg.items() == [(7, "1124065412"), (11, "000001"), (70, "301")]
    with pytest.raises(KeyError):
        msg[8]
    with pytest.raises(KeyError):
        msg["7"]
    with pytest.raises(KeyError):
        del msg[8]
    assert "1124065412" not in repr(msg) and repr(msg) == "<Message 0800 (terminal-87) fields [7, 11, 70]>"
    assert pickle.loads(pickle.dumps(msg)) == msg


def test_set_checks_types_and_fields():
    msg = TERMINAL.new("0200")
    with pytest.raises(EncodeError, match=r"^field 52: expected bytes, got str$"):
        msg[52] = "0123456789ABCDEF"
    with pytest.raises(EncodeError, match=r"^field 4: expected str, got int$"):
        msg[4] = 100
    with pytest.raises(EncodeError, match=r"^field 1 is a bitmap: it is set from the fields present$"):
        msg[1] = b"\x00" * 8
    with pytest.raises(EncodeError, match=r"^field 150 is not defined in dialect terminal-87$"):
        msg[150] = "1"
    with pytest.raises(KeyError):
        msg[0] = "1"
    with pytest.raises(EncodeError, match=r"^MTI: expected 4 digits, got '02000'$"):
        msg.mti = "02000"
    with pytest.raises(EncodeError, match=r"^MTI: expected str, got int$"):
        msg.mti = 200


def test_mapping_keys_like_pyiso8583():
    expected = TERMINAL.encode({"mti": "0200", 3: "000000", 4: "000000000100"})
    assert TERMINAL.encode({"t": "0200", "3": "000000", "4": "000000000100", "p": "ignored", "1": "x"}) == expected

    class Mapping:
        def items(self):
            return [("mti", "0200"), (3, "000000"), (4, "000000000100")]

    assert TERMINAL.encode(Mapping()) == expected
    with pytest.raises(EncodeError, match=r"^MTI is missing \(key 'mti' or 't'\)$"):
        TERMINAL.encode({3: "000000"})
    with pytest.raises(EncodeError, match=r"^MTI given twice"):
        TERMINAL.encode({"mti": "0200", "t": "0200"})
    with pytest.raises(EncodeError, match=r"^field 3 given twice$"):
        TERMINAL.encode({"mti": "0200", 3: "000000", "3": "000000"})
    with pytest.raises(EncodeError, match=r"^unknown key 'amount': expected a field number 1-192, 'mti' or 't'$"):
        TERMINAL.encode({"mti": "0200", "amount": "1"})
    with pytest.raises(EncodeError, match=r"^unknown key 0"):
        TERMINAL.encode({"mti": "0200", 0: "1"})
    with pytest.raises(EncodeError, match=r"^field 129 is not defined in dialect terminal-87$"):
        TERMINAL.encode({"mti": "0200", 129: "1"})
    with pytest.raises(TypeError):
        TERMINAL.encode(42)


def test_encode_errors():
    base = {"mti": "0200"}
    cases = [
        ({4: "1000"}, "field 4: expected 12 digits, got 4"),
        ({4: "00000000100A"}, "field 4: expected 12 digits, found '00000000100A'"),
        ({2: "4111111111111111111111"}, "field 2: length 22 exceeds maximum 19"),
        ({2: "41111111X1111111"}, "field 2: expected 16 digits, found an invalid character at index 8 (value not shown)"),
        ({35: "4111é"}, "field 35: expected 5 track data characters (digits, '=', 'D'), found an invalid character at index 4 (value not shown)"),
        ({41: "TERMé001"}, "field 41: expected 8 printable characters, found 'TERMé001'"),
        ({43: "X" * 41}, "field 43: expected 40 characters, got 41"),
        ({52: b"\x00" * 7}, "field 52: expected 8 bytes, got 7"),
        ({55: b"\x00" * 256}, "field 55: length 256 exceeds maximum 255"),
        ({48: None}, "field 48: expected str, got NoneType"),
        ({"mti": "02X0"}, "MTI: expected 4 digits, got '02X0'"),
    ]
    for fields, message in cases:
        with pytest.raises(EncodeError) as e:
            TERMINAL.encode(base | fields)
        assert str(e.value) == message
        assert e.value.field == next((k for k in fields if isinstance(k, int)), None)


# ---------------------------------------------------------------------------
# Decode errors: exact texts, offsets, nothing secret quoted


def test_decode_error_texts():
    head = b"0200" + bitmap(2, 4, 35, 41)
    good = head + b"16" + b"4111111111111111" + b"000000001000" + b"21" + b"4111111111111111=2512" + b"TERM0001"
    assert TERMINAL.decode(good)[41] == "TERM0001"
    cases = [
        (good.replace(b"000000001000", b"0000 100 00A"), "field 4: expected 12 digits at offset 30, found a byte that is not an ASCII digit at offset 34", 4, 30),
        (
            good.replace(b"000000001000", b"00000001000A"),
            "field 4: expected 12 digits at offset 30, found a byte that is not an ASCII digit at offset 41",
            4,
            30,
        ),
        (head + b"2X" + good[14:], "field 2: length prefix at offset 12 is not 2 ASCII digits (2 bytes, not shown)", 2, 12),
        (good[:-3], "message ends at offset 70 inside field 41 (needs 8 bytes)", 41, 70),
        (head[:10], "message ends at offset 10 inside the primary bitmap (needs 8 bytes)", None, 10),
        (b"02", "message ends at offset 2 inside the MTI (needs 4 bytes)", None, 2),
        (head + b"1", "message ends at offset 13 inside the length prefix of field 2 (needs 2 bytes)", 2, 13),
        (good.replace(b"21" + b"4111", b"40" + b"4111"), "field 35: declared length 40 exceeds maximum 37", 35, 42),
        (b"02 0" + good[4:], "MTI at offset 0: expected 4 digits, found a byte that is not a digit at offset 2", None, 0),
        (good + b"\x00\x00", "2 extra bytes after field 41 at offset 73", None, 73),
    ]
    for data, message, field, offset in cases:
        with pytest.raises(DecodeError) as e:
            TERMINAL.decode(data)
        assert (str(e.value), e.value.field, e.value.offset) == (message, field, offset)
    assert TERMINAL.decode(b"0200" + bytes(8)).fields() == {}
    with pytest.raises(DecodeError, match=r"^1 extra bytes after the bitmap at offset 12$"):
        TERMINAL.decode(b"0200" + bytes(8) + b"x")


def test_decode_errors_never_quote_card_data():
    pan, track = b"4111111111111111", b"4111111111111111=2512101"
    cases = [
        (b"0200" + bitmap(2) + b"16" + pan[:15] + b"X", "field 2: expected 16 digits at offset 14, found a byte that is not an ASCII digit at offset 29"),
        (b"0200" + bitmap(35) + b"24" + track[:-1] + b"?", "field 35: expected 24 track data characters (digits, '=', 'D') at offset 14, found a byte that is not an ASCII track data character (digits, '=', 'D') at offset 37"),
        (b"0200" + bitmap(45) + b"20" + b"B4111111111111111^X\x01", "field 45: expected 20 printable characters at offset 14, found a byte that is not an ASCII printable character at offset 33"),
    ]
    for data, message in cases:
        with pytest.raises(DecodeError) as e:
            TERMINAL.decode(data)
        assert str(e.value) == message
        assert b"4111" not in str(e.value).encode()


def test_a_field_that_is_not_sensitive_is_not_quoted_either():
    data = b"0200" + bitmap(43) + b"A" * 39 + b"\x01"
    with pytest.raises(DecodeError) as e:
        TERMINAL.decode(data)
    assert str(e.value) == "field 43: expected 40 printable characters at offset 12, found a byte that is not an ASCII printable character at offset 51"


def test_non_ascii_bytes_in_text_fields():
    for n, body in ((41, b"TERM\xc3\xa901"), (3, b"00\x8000" + b"0"), (37, b"ABC\xff00000000")):
        with pytest.raises(DecodeError, match=rf"^field {n}: expected"):
            TERMINAL.decode(b"0200" + bitmap(n) + body)


def test_decode_rejects_non_bytes_and_huge_messages():
    with pytest.raises(TypeError):
        TERMINAL.decode("0200")
    with pytest.raises(DecodeError, match=r"^message is 65536 bytes, more than the 65535 this codec decodes$"):
        TERMINAL.decode(b"0" * 65536)


def test_errors_pickle():
    e = pickle.loads(pickle.dumps(DecodeError("x", 4, 30)))
    assert (str(e), e.field, e.offset) == ("x", 4, 30)
    e = pickle.loads(pickle.dumps(EncodeError("y", 4)))
    assert (str(e), e.field) == ("y", 4)


def test_random_mutations_of_every_dialect_decode_or_raise():
    rnd = random.Random(8583)
    for d, good in (
        (TERMINAL, TERMINAL.encode(samples.terminal_0200())),
        (ASCII, ASCII.encode({"mti": "0800", 7: "1124065412", 52: "00" * 8, 55: "AB" * 20, 70: "301", 127: "x" * 20})),
        (HOST, HOST.encode(samples.host_0200())),
    ):
        for _ in range(1500):
            data = bytearray(good)
            for _ in range(rnd.randint(1, 3)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            data = bytes(data[: rnd.randint(0, len(data) + 2)])
            try:
                msg = d.decode(data)
            except DecodeError:
                continue
            fields = msg.fields()
            assert d.decode(d.encode({"mti": msg.mti, **fields})).fields() == fields


def test_binary_fields_convert_between_bytes_and_hex_text_across_dialects():
    term = TERMINAL.decode(TERMINAL.encode({"mti": "0200", 3: "000000", 52: bytes.fromhex("7a3c1e9b2d4f6081")}))
    as_ascii = ASCII.decode(ASCII.encode(term))
    assert as_ascii[52] == "7A3C1E9B2D4F6081"
    assert TERMINAL.decode(TERMINAL.encode(as_ascii))[52] == bytes.fromhex("7a3c1e9b2d4f6081")


def test_dialect_pickles_to_the_cached_instance():
    assert pickle.loads(pickle.dumps(HOST)) is HOST
