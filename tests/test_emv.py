"""EMV BER-TLV of field 55 (native/emv.pyx), against pyemv's decoder as the reference.

pyemv (test-only dependency) implements EMV Book 3 Annex B independently and
more leniently: it takes the indefinite length 0x80 as zero, any length of
length, padding bytes as tag 00, universal-class tags and repeated tags (the
last one wins).  So the differential properties are: on well-formed data both
give the same tree; and whatever we accept, pyemv accepts and reads the same.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyemv import tlv as reference

from native import emv
from native.emv import BerError
from tests import samples

# ---------------------------------------------------------------------------
# Known data


# A template with a two-byte constructed tag, a three-byte proprietary tag and
# a 0x81 length: the forms of Book 3 Annex B that samples.icc_request() lacks.
NESTED = bytes.fromhex(
    "9F2608C2C12B098F3DA6E3"  # application cryptogram
    "9F2701"  "80"
    "BF0C" "0C"  # FCI issuer discretionary data (constructed, 2-byte tag)
    "9F4D02" "0B0A"  # log entry
    "DF8101" "03" "010203"  # 3-byte proprietary tag
    "9F10" "8181" + "AB" * 0x81  # 0x81 length form
)


def test_sample_request_and_response_decode_to_their_tags():
    items = emv.decode(samples.icc_request())
    assert [t for t, _ in items][:4] == [0x9F26, 0x9F27, 0x9F10, 0x9F37]
    assert dict(items)[0x9F02] == bytes.fromhex("000000002500")
    assert emv.encode(items) == samples.icc_request()
    resp = emv.decode(samples.icc_response())
    assert resp[0] == (0x91, bytes.fromhex("8A1F4C2D9B0E77613030"))
    assert resp[1] == (0x71, [(0x9F18, bytes.fromhex("00000001")), (0x86, bytes.fromhex("8424000008A1B2C3D4E5F60718"))])
    assert resp[2][0] == 0x72 and len(resp[2][1]) == 2


def test_nested_templates_multi_byte_tags_and_long_lengths():
    items = emv.decode(NESTED)
    assert items[2] == (0xBF0C, [(0x9F4D, b"\x0b\x0a"), (0xDF8101, b"\x01\x02\x03")])
    assert items[3] == (0x9F10, b"\xab" * 0x81)
    assert emv.encode(items) == NESTED
    assert emv.decode(b"\x9f\x10\x82\x00\x02\xaa\xbb") == [(0x9F10, b"\xaa\xbb")]  # 0x82, not minimal: BER allows it
    assert emv.decode(b"\x70\x00") == [(0x70, [])]
    assert emv.decode(b"") == []


def test_objects_are_the_top_level_encodings_unchanged():
    data = b"\x91\x81\x02\xaa\xbb" + samples.icc_response()[12:]
    objs = emv.objects(data)
    assert [t for t, _ in objs] == [0x91, 0x71, 0x72]
    assert b"".join(raw for _, raw in objs) == data  # the 0x81 form is kept as it came
    assert objs[0][1] == b"\x91\x81\x02\xaa\xbb"


def test_templates_may_repeat_primitive_tags_may_not():
    scripts = b"\x71\x03\x86\x01\x00" * 2
    assert [t for t, _ in emv.decode(scripts)] == [0x71, 0x71]
    assert emv.decode(b"\x70\x03\x95\x01\x00\x95\x01\x00")  # same tag, different templates
    with pytest.raises(BerError, match=r"^tag 0x95 at offset 5 appears twice in its template$"):
        emv.decode(b"\x70\x06\x95\x01\x00\x95\x01\x00")


@pytest.mark.parametrize(
    "data, message, offset",
    [
        (b"\x9f", "the data ends at offset 1 inside the tag at offset 0", 0),
        (b"\x9f\x26", "tag 0x9F26 at offset 0 has no length", 0),
        (b"\x9f\x26\x08\x01\x02", "tag 0x9F26 at offset 0 declares 8 bytes but 2 remain", 0),
        (b"\x95\x01\x00\x9f\x26\x81", "the data ends at offset 6 inside the length of tag 0x9F26 at offset 3", 3),
        (b"\x9f\x26\x82\x01", "the data ends at offset 4 inside the length of tag 0x9F26 at offset 0", 0),
        (b"\x9f\x26\x80\x01\x00\x00", "tag 0x9F26 at offset 0 has the indefinite length 0x80, which EMV does not allow", 0),
        (b"\x70\x80\x9f\x26\x00\x00\x00", "tag 0x70 at offset 0 has the indefinite length 0x80, which EMV does not allow", 0),
        (b"\x9f\x26\x83\x00\x00\x01\x00", "tag 0x9F26 at offset 0 has a length byte over 0x82 at offset 2 (expected under 0x80, 0x81 or 0x82)", 0),
        (b"\x00\x01\x00", "byte 0x00 at offset 0 is padding, not a tag", 0),
        (b"\x95\x01\x00\xff", "byte 0xFF at offset 3 is padding, not a tag", 3),
        (b"\x04\x01\x00", "tag byte at offset 0 is of the universal class, its top two bits 0 (EMV tags are application, context-specific or private)", 0),
        (b"\x9f\x81\x81\x81\x01\x00", "tag at offset 0 is longer than 4 bytes", 0),
        (b"\x95\x01\x00\x95\x01\x00", "tag 0x95 at offset 3 appears twice in the data", 3),
        (b"\x70\x04\x9f\x26\x05\x00", "tag 0x9F26 at offset 2 declares 5 bytes but 1 remain in its template", 2),
        (b"\x70\x02\x9f\x26\x00", "tag 0x9F26 at offset 2 has no length", 2),
        (b"\x70\x03\x9f\x26\x81\x05", "its template ends at offset 5 inside the length of tag 0x9F26 at offset 2", 2),
        (b"\x70\x01\x9f\x26\x00", "its template ends at offset 3 inside the tag at offset 2", 2),
        (b"\x70\x0e" + b"\x70\x0c\x70\x0a\x70\x08\x70\x06\x70\x04\x70\x02\x70\x00",
         "template 0x70 at offset 14 is nested more than 7 deep", 14),
    ],
)
def test_malformed(data, message, offset):
    with pytest.raises(BerError) as e:
        emv.decode(data)
    assert (str(e.value), e.value.offset) == (message, offset)
    with pytest.raises(BerError) as again:
        emv.check(data)
    assert str(again.value) == message


def test_hex_text_is_named_as_such():
    text = samples.icc_request().hex().upper().encode()
    with pytest.raises(BerError, match=r"^294 bytes of ASCII hex digits at offset 0: expected binary BER-TLV, not hex text$"):
        emv.check(text)
    with pytest.raises(BerError, match="not hex text"):
        emv.check(text.lower())


def test_errors_never_quote_a_value():
    pan = b"4761739001010119"
    data = b"\x5a\x08" + bytes.fromhex(pan.decode()) + b"\x57\x13" + bytes.fromhex(pan.decode()) + b"\xd2\x51"
    with pytest.raises(BerError) as e:
        emv.decode(data)
    assert pan.decode() not in str(e.value) and "4761" not in str(e.value)
    assert str(e.value) == "tag 0x57 at offset 10 declares 19 bytes but 10 remain"


# Three ways (STYLE.md): whole, cut short at every byte, and with trailing bytes.


@pytest.mark.parametrize("data", [samples.icc_request(), samples.icc_response(), NESTED])
def test_every_prefix_is_refused_unless_it_ends_between_objects(data):
    objs = emv.objects(data)
    ends, pos = {}, 0
    for k, (_, raw) in enumerate(objs):
        pos += len(raw)
        ends[pos] = k + 1
    for cut in range(1, len(data)):
        if cut in ends:
            assert emv.objects(data[:cut]) == objs[: ends[cut]]
        else:
            with pytest.raises(BerError):
                emv.check(data[:cut])


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00", b"\x9f", b"\x9f\x26\x08\x01", b"\xff\xff\xff"])
def test_trailing_bytes_are_refused_at_their_offset(tail):
    data = samples.icc_request()
    with pytest.raises(BerError) as e:
        emv.check(data + tail)
    assert e.value.offset == len(data)


def test_bad_input_types_and_encodings():
    with pytest.raises(TypeError):
        emv.decode("9F2600")
    assert emv.decode(bytearray(b"\x9a\x03\x25\x11\x24")) == [(0x9A, b"\x25\x11\x24")]
    assert emv.decode(memoryview(b"\x9a\x00")) == [(0x9A, b"")]
    for tag in (0x1F, 0x9F9F, 0x04, 0, 0xFF, True, "9F26"):
        with pytest.raises(ValueError):
            emv.encode([(tag, b"")])
    with pytest.raises(ValueError, match="expected a list"):
        emv.encode([(0x70, b"")])
    with pytest.raises(ValueError, match="expected bytes"):
        emv.encode([(0x9F26, [])])


# ---------------------------------------------------------------------------
# Differential, against pyemv


def _tag(constructed: bool):
    klass = st.sampled_from([0x40, 0x80, 0xC0])
    single = st.integers(0, 30)
    two = st.integers(0, 0x7F)
    three = st.tuples(st.integers(0x81, 0xFF), st.integers(0, 0x7F))

    def build(args):
        k, form, number = args
        first = k | (0x20 if constructed else 0)
        if form == 1:
            return first | number[0]
        rest = bytes(number[1])
        return int.from_bytes(bytes([first | 0x1F]) + rest, "big")

    forms = st.one_of(
        single.map(lambda n: (1, (n,))),
        two.map(lambda b: (2, (None, [b]))),
        three.map(lambda t: (3, (None, list(t)))),
    )
    # 0xFF leads no tag: it is padding (and so the one constructed private
    # multi-byte tag form is not available).
    tags = st.tuples(klass, forms).map(lambda kf: build((kf[0], kf[1][0], kf[1][1])))
    return tags.filter(lambda t: t.to_bytes((t.bit_length() + 7) // 8, "big")[0] != 0xFF)


primitive = st.tuples(_tag(False), st.binary(max_size=40))


def _unique(items):
    """Drop repeated primitive tags within one template (we refuse them, pyemv keeps the last)."""
    seen, out = set(), []
    for tag, value in items:
        if isinstance(value, list):
            out.append((tag, _unique(value)))
        elif tag not in seen:
            seen.add(tag)
            out.append((tag, value))
    return out


items = st.recursive(
    st.lists(primitive, max_size=6),
    lambda children: st.lists(st.one_of(primitive, st.tuples(_tag(True), children)), max_size=5),
    max_leaves=20,
).map(_unique)


def as_reference(items) -> dict:
    """Our tree in pyemv's shape: {"9F26": bytes, "70": {...}}, templates unique by construction."""
    out = {}
    for tag, value in items:
        key = tag.to_bytes((tag.bit_length() + 7) // 8, "big").hex().upper()
        out[key] = as_reference(value) if isinstance(value, list) else value
    return out


def _templates_unique(items) -> bool:
    tags = [t for t, v in items if isinstance(v, list)]
    return len(tags) == len(set(tags)) and all(_templates_unique(v) for _, v in items if isinstance(v, list))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(items)
def test_well_formed_data_reads_the_same_as_the_reference(tree):
    data = emv.encode(tree)
    assert emv.decode(data) == tree
    emv.check(data)
    if _templates_unique(tree):
        assert reference.decode(data) == as_reference(tree)


def _mutations():
    base = st.sampled_from([samples.icc_request(), samples.icc_response(), NESTED])
    return st.tuples(base, st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3), st.integers(0, 400))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=80), _mutations()))
def test_whatever_we_accept_the_reference_reads_the_same(case):
    if isinstance(case, tuple):
        data = bytearray(case[0])
        for at, value in case[1]:
            data[at % len(data)] = value
        data = bytes(data[: case[2] % (len(data) + 1)])
    else:
        data = case
    try:
        tree = emv.decode(data)
    except BerError:
        return  # stricter than the reference is allowed: the cases are the test_malformed table
    assert emv.decode(emv.encode(tree)) == tree
    if _templates_unique(tree):
        assert reference.decode(data) == as_reference(tree)
    else:
        reference.decode(data)  # accepted all the same
