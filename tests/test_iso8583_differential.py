"""Differential tests of native.iso8583 against pyiso8583, an independent implementation.

terminal-87 must be field-for-field pyiso8583's ``default`` spec (spec section 2)
and iso87-ascii its ``default_ascii``. For each dialect, hypothesis checks that:

- valid messages (any MTI, any subset of fields 2..128 with values of the
  field's ISO 8583:1987 type and length) encoded by either codec decode to the
  same MTI and values in the other, and both encode them to the same bytes;
- malformed messages (valid encodings truncated, with bits flipped in a
  bitmap, corrupted length prefixes, non-digits in numeric fields, non-ASCII
  bytes in text, trailing bytes, random bytes written over them) rejected by
  pyiso8583 are rejected by ours with ``DecodeError``; those pyiso8583
  accepts, ours either accepts with the same values or rejects (it may be
  stricter, never looser). Which of the two it did is recorded as a
  hypothesis event (``pytest --hypothesis-show-statistics``) and pinned for
  the known cases by ``test_stricter_than_pyiso8583``;
- any bytes at all either decode or raise ``DecodeError``.

"Decode" means decode and read every field: the codec may decode fields
lazily, so an error can surface on first access, and it must be a
``DecodeError`` there too.
"""
from __future__ import annotations

import string

import iso8583
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from iso8583.specs import default as PYISO_DEFAULT
from iso8583.specs import default_ascii as PYISO_DEFAULT_ASCII

from native import iso8583 as codec
from tests import samples

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DIALECTS = {"terminal-87": PYISO_DEFAULT, "iso87-ascii": PYISO_DEFAULT_ASCII}

ISO87_CLASS = samples.ISO87_CLASS
DATA_FIELDS = sorted(ISO87_CLASS)
assert DATA_FIELDS == [n for n in range(2, 129) if n != 65]

ALPHABET = {
    "n": string.digits,
    "an": string.ascii_letters + string.digits,
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
    "z": string.digits + "=",
}


# ---------------------------------------------------------------------------
# The two codecs behind one face: (mti, {field: value}) in our value types.


def is_binary(spec: dict, n: int) -> bool:
    return spec[str(n)]["data_enc"] == "b"


def pyiso_decode(data: bytes, spec: dict) -> tuple[str, dict]:
    doc_dec, doc_enc = iso8583.decode(data, spec)
    fields = {}
    for key, value in doc_dec.items():
        if not key.isdigit() or key == "1":
            continue
        n = int(key)
        fields[n] = doc_enc[key]["data"] if is_binary(spec, n) else value
    return doc_dec["t"], fields


def pyiso_encode(mti: str, fields: dict, spec: dict) -> bytes:
    doc = samples.pyiso8583_doc({"mti": mti, **fields}, spec)
    data, _ = iso8583.encode(doc, spec)
    return bytes(data)


def ours_decode(dialect, data: bytes) -> tuple[str, dict]:
    msg = dialect.decode(data)
    fields = msg.fields()
    for n, value in fields.items():  # every field through __getitem__ too
        assert msg[n] == value
    return msg.mti, fields


def ours_encode(dialect, mti: str, fields: dict) -> bytes:
    return bytes(dialect.encode({"mti": mti, **fields}))


# ---------------------------------------------------------------------------
# Strategies, derived from the pyiso8583 spec so that all 128 fields are covered.


def lengths(max_len: int, fixed: bool) -> st.SearchStrategy[int]:
    if fixed:
        return st.just(max_len)
    # Mostly short values, but the bounds (0 and max_len) come up often.
    return st.one_of(st.integers(0, min(max_len, 24)), st.sampled_from([0, 1, max_len]), st.integers(0, max_len))


def field_value(spec: dict, n: int) -> st.SearchStrategy:
    field = spec[str(n)]
    fixed = field["len_type"] == 0
    cls = ISO87_CLASS[n]
    if cls == "b":
        if field["data_enc"] == "b":  # raw bytes, max_len counts bytes
            return lengths(field["max_len"], fixed).flatmap(lambda k: st.binary(min_size=k, max_size=k))
        # default_ascii carries binary fields as hex text, max_len counts hex digits
        return lengths(field["max_len"] // 2, fixed).flatmap(
            lambda k: st.binary(min_size=k, max_size=k).map(lambda b: b.hex().upper())
        )
    if cls == "xn":
        return st.tuples(st.sampled_from("CD"), st.text(string.digits, min_size=field["max_len"] - 1, max_size=field["max_len"] - 1)).map("".join)
    alphabet = ALPHABET[cls]
    return lengths(field["max_len"], fixed).flatmap(lambda k: st.text(alphabet, min_size=k, max_size=k))


MTIS = st.text(string.digits, min_size=4, max_size=4)


@st.composite
def valid_messages(draw, spec: dict) -> tuple[str, dict]:
    mti = draw(MTIS)
    numbers = draw(
        st.one_of(
            st.sets(st.sampled_from(DATA_FIELDS), max_size=12),
            st.sets(st.sampled_from([n for n in DATA_FIELDS if n < 65]), max_size=20),
            st.sets(st.sampled_from(DATA_FIELDS), min_size=30, max_size=60),
        )
    )
    return mti, {n: draw(field_value(spec, n)) for n in sorted(numbers)}


def layout(data: bytes, spec: dict) -> list[tuple[str, int, int, int]]:
    """(key, offset, prefix length, data length) of each part of a valid encoding."""
    _, doc_enc = iso8583.decode(data, spec)
    parts, offset = [], 0
    for key in ["t", "p", "1"] + sorted((k for k in doc_enc if k.isdigit() and k != "1"), key=int):
        if key in doc_enc:
            prefix, body = doc_enc[key]["len"], doc_enc[key]["data"]
            parts.append((key, offset, len(prefix), len(body)))
            offset += len(prefix) + len(body)
    assert offset == len(data)
    return parts


MUTATIONS = [
    "truncate",
    "flip-bitmap-bit",
    "corrupt-length-prefix",
    "non-digit-in-n-field",
    "non-ascii-in-text",
    "trailing-bytes",
    "overwrite-byte",
]


@st.composite
def malformed_messages(draw, spec: dict) -> tuple[str, bytes]:
    mti, fields = draw(valid_messages(spec))
    data = bytearray(pyiso_encode(mti, fields, spec))
    parts = layout(bytes(data), spec)
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "truncate":
        return kind, bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip-bitmap-bit":
        bitmaps = [p for p in parts if p[0] in ("p", "1")]
        _, offset, _, size = draw(st.sampled_from(bitmaps))
        pos = offset + draw(st.integers(0, size - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))
        return kind, bytes(data)
    if kind == "corrupt-length-prefix":
        prefixed = [p for p in parts if p[2]]
        if not prefixed:
            return kind + " (none: overwrite MTI)", bytes(draw(st.binary(min_size=4, max_size=4))) + bytes(data[4:])
        _, offset, width, _ = draw(st.sampled_from(prefixed))
        pos = offset + draw(st.integers(0, width - 1))
        data[pos] = draw(st.one_of(st.sampled_from(b"0123456789 +-_:/A\x00\xff"), st.integers(0, 255)))
        return kind, bytes(data)
    if kind == "non-digit-in-n-field":
        numeric = [p for p in parts if p[0].isdigit() and p[0] != "1" and ISO87_CLASS[int(p[0])] == "n" and p[3]]
        numeric += [p for p in parts if p[0] == "t"]
        _, offset, width, size = draw(st.sampled_from(numeric))
        pos = offset + width + draw(st.integers(0, size - 1))
        data[pos] = draw(st.sampled_from(b" AZaz:/=+-.\x00\x7f"))
        return kind, bytes(data)
    if kind == "non-ascii-in-text":
        text = [p for p in parts if (p[0] == "t" or (p[0].isdigit() and p[0] != "1" and not is_binary(spec, int(p[0])))) and p[3]]
        _, offset, width, size = draw(st.sampled_from(text))
        pos = offset + width + draw(st.integers(0, size - 1))
        data[pos] = draw(st.integers(0x80, 0xFF))
        return kind, bytes(data)
    if kind == "trailing-bytes":
        return kind, bytes(data) + draw(st.binary(min_size=1, max_size=12))
    pos = draw(st.integers(0, len(data) - 1))
    data[pos] = draw(st.integers(0, 255))
    return kind, bytes(data)


# ---------------------------------------------------------------------------
# Valid messages: both directions agree, byte for byte.


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_valid_messages_agree(name, data):
    spec = DIALECTS[name]
    dialect = codec.dialect(name)
    mti, fields = data.draw(valid_messages(spec), label="message")
    theirs = pyiso_encode(mti, fields, spec)
    # pyiso8583 -> ours, and ours re-encodes what it decoded to the same bytes
    assert ours_decode(dialect, theirs) == (mti, fields)
    assert bytes(dialect.encode(dialect.decode(theirs))) == theirs
    # ours -> pyiso8583, and the same bytes
    mine = ours_encode(dialect, mti, fields)
    assert mine == theirs
    assert pyiso_decode(mine, spec) == (mti, fields)


# ---------------------------------------------------------------------------
# Malformed input: rejected whenever pyiso8583 rejects it.


def compare_on(dialect, spec: dict, data: bytes, label: str) -> str:
    """Check ours against pyiso8583 on ``data``; say which of the two accepted it."""
    try:
        expected = pyiso_decode(data, spec)
    except iso8583.DecodeError:
        expected = None
    except KeyError:
        # Bit 65 set and then a field of 129..192 in the tertiary bitmap: the
        # spec has no such field; pyiso8583 fails with a KeyError, ours must reject.
        expected = None
    try:
        got = ours_decode(dialect, data)
    except codec.DecodeError:
        got = None
    if expected is None:
        assert got is None, f"{label}: pyiso8583 rejects {data!r}, ours decoded {got!r}"
        return f"{label}: both reject"
    if got is None:
        return f"{label}: ours stricter"
    assert got == expected, f"{label}: {data!r}"
    return f"{label}: both accept"


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_malformed_rejected_like_pyiso8583(name, data):
    spec = DIALECTS[name]
    kind, mutated = data.draw(malformed_messages(spec), label="mutated")
    event(compare_on(codec.dialect(name), spec, mutated, kind))


def junk(spec: dict) -> st.SearchStrategy[bytes]:
    bitmap = 8 if spec["p"]["data_enc"] == "b" else 16
    return st.one_of(
        st.binary(max_size=64),
        # past the MTI and bitmap, so that the field parsers see the junk
        st.tuples(MTIS.map(str.encode), st.binary(min_size=bitmap, max_size=bitmap), st.binary(max_size=300)).map(b"".join),
        st.tuples(MTIS.map(str.encode), st.text("0123456789ABCDEF", min_size=bitmap, max_size=bitmap).map(str.encode), st.binary(max_size=300)).map(b"".join),
    )


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_any_bytes_decode_or_raise_decode_error(name, data):
    spec = DIALECTS[name]
    event(compare_on(codec.dialect(name), spec, data.draw(junk(spec), label="bytes"), "random bytes"))


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("data", [b"", b"0", b"0200", b"0200" + bytes(7), b"0200" + bytes(8), b"\xff" * 40])
def test_short_inputs(name, data):
    compare_on(codec.dialect(name), DIALECTS[name], data, "short")


# ---------------------------------------------------------------------------
# Malformed messages to encode: whatever pyiso8583 refuses to encode, ours refuses.


@st.composite
def bad_values(draw, spec: dict) -> tuple[str, dict]:
    mti, fields = draw(valid_messages(spec))
    n = draw(st.sampled_from(DATA_FIELDS))
    field = spec[str(n)]
    size = field["max_len"] // (2 if ISO87_CLASS[n] == "b" and field["data_enc"] != "b" else 1)
    if field["len_type"] == 0:
        k = draw(st.integers(0, size * 2).filter(lambda k: k != size))
    else:
        k = draw(st.integers(size + 1, size + 20))
    if ISO87_CLASS[n] == "b":
        value = bytes(k) if field["data_enc"] == "b" else "00" * k
    else:
        value = "1" * k
    fields[n] = value
    return mti, fields


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_encode_rejects_what_pyiso8583_rejects(name, data):
    spec = DIALECTS[name]
    mti, fields = data.draw(bad_values(spec), label="message")
    with pytest.raises(iso8583.EncodeError):
        pyiso_encode(mti, fields, spec)
    with pytest.raises(codec.EncodeError):
        ours_encode(codec.dialect(name), mti, fields)


# ---------------------------------------------------------------------------
# Inputs pyiso8583 accepts although they break the terminal interface
# (section 2: MTI of 4 digits, n fields of digits, decimal length prefixes,
# printable ans fields). Ours must reject these; the rest it may accept.


def bitmap(*numbers: int) -> bytes:
    bits = 0
    for n in numbers:
        bits |= 1 << (64 - n)
    return bits.to_bytes(8, "big")


BREAK_THE_SPEC: dict[str, bytes] = {
    "non-digit in n field 3": b"0200" + bitmap(3) + b"00A000",
    "space in n field 3": b"0200" + bitmap(3) + b" 00000",
    "non-digit in MTI": b"02X0" + bitmap(3) + b"000000",
    "plus sign in LL prefix": b"0200" + bitmap(2) + b"+5" + b"12345",
    "space in LL prefix": b"0200" + bitmap(2) + b" 5" + b"12345",
    "underscore in LLL prefix": b"0200" + bitmap(48) + b"1_0" + b"ABCDEFGHIJ",
    "letter in z field 35": b"0200" + bitmap(35) + b"05" + b"12X45",
    "control byte in ans field 41": b"0200" + bitmap(41) + b"DEMO\x00001",
}
MAY_ACCEPT: dict[str, bytes] = {
    "all-zero secondary bitmap": b"0200" + bitmap(1, 3) + bytes(8) + b"000000",
    "bit 65 with all-zero tertiary bitmap": b"0200" + bitmap(1, 3) + bitmap(1) + bytes(8) + b"000000",
}


@pytest.mark.parametrize("case", BREAK_THE_SPEC)
def test_stricter_than_pyiso8583_where_the_spec_is(case):
    data = BREAK_THE_SPEC[case]
    pyiso_decode(data, PYISO_DEFAULT)  # pyiso8583 accepts every one of these
    with pytest.raises(codec.DecodeError):
        ours_decode(codec.dialect("terminal-87"), data)


@pytest.mark.parametrize("case", MAY_ACCEPT)
def test_harmless_oddities_accepted_alike_or_rejected(case):
    compare_on(codec.dialect("terminal-87"), PYISO_DEFAULT, MAY_ACCEPT[case], case)


# ---------------------------------------------------------------------------
# The shared sample messages


def test_sample_terminal_messages_agree():
    dialect = codec.dialect("terminal-87")
    for mapping in (samples.terminal_0200(), samples.terminal_0210()):
        fields = {k: v for k, v in mapping.items() if k != "mti"}
        theirs = pyiso_encode(mapping["mti"], fields, PYISO_DEFAULT)
        assert bytes(dialect.encode(mapping)) == theirs
        assert ours_decode(dialect, theirs) == (mapping["mti"], fields)
