"""native.fields in the shapes the request path uses: the digest's fifteen tags joined in
one pass, a text head, and several fields read at once (``values``), each the same as
reading and joining field by field."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import fields
from native.iso8583 import dialect
from switch.core import messages
from tests.test_native_fields import joined_by_get

TERM = dialect("terminal-87")

VALUES = {
    2: st.text("0123456789", min_size=13, max_size=19), 3: st.text("0123456789", min_size=6, max_size=6),
    4: st.text("0123456789", min_size=12, max_size=12), 7: st.text("0123456789", min_size=10, max_size=10),
    11: st.text("0123456789", min_size=6, max_size=6), 14: st.text("0123456789", min_size=4, max_size=4),
    22: st.text("0123456789", min_size=3, max_size=3), 41: st.text("ABCDEFGH0123456789", min_size=8, max_size=8),
    42: st.text("ABCDEFGH0123456789 ", min_size=15, max_size=15), 49: st.text("0123456789", min_size=3, max_size=3),
    55: st.binary(min_size=1, max_size=40),
}


@st.composite
def requests(draw):
    chosen = draw(st.sets(st.sampled_from(sorted(VALUES))))
    return {"mti": draw(st.sampled_from(("0200", "0100", "0400"))), **{n: draw(VALUES[n]) for n in chosen}}


@settings(max_examples=300, deadline=None)
@given(requests())
def test_the_digest_join_reads_what_get_reads(fields_in):
    msg = TERM.decode(TERM.encode(fields_in))
    plain = {n: v for n, v in fields_in.items() if n != "mti"}
    tags = messages._DIGEST_TAGS
    for source in (msg, plain):
        expected = joined_by_get(source, msg.mti.encode(), tags)
        assert fields.joined(source, msg.mti.encode(), tags) == expected
        assert fields.joined(source, msg.mti, tags) == expected  # a text head: UTF-8 encoded
        numbers = tuple(n for n, _ in tags)
        assert fields.values(source, numbers) == tuple(source.get(n) for n in numbers)


def test_text_outside_ascii_is_joined_utf8_encoded():
    msg = {42: "CAFÉ MÜNCHEN 01", 55: b"\x9f\x02"}
    assert fields.joined(msg, "0200", messages._DIGEST_TAGS) == "0200|42=CAFÉ MÜNCHEN 01|55=".encode() + b"\x9f\x02"


def test_a_value_neither_bytes_nor_text_is_refused_as_before():
    with pytest.raises(TypeError):
        fields.joined({3: 123}, b"0200", messages._DIGEST_TAGS)
    with pytest.raises(TypeError):
        fields.joined({3: "000000"}, 200, messages._DIGEST_TAGS)


def test_many_tags_and_odd_parts_take_the_general_way_with_the_same_result():
    tags = tuple((n, b"|%d=" % n) for n in range(1, 65))
    msg = TERM.decode(TERM.encode({"mti": "0200", 3: "000000", 11: "000001", 41: "DEMO0001"}))
    assert fields.joined(msg, b"0200", tags) == b"0200|3=000000|11=000001|41=DEMO0001"
    # A bytearray tag (a mapping's own business): joined as b"".join would.
    assert fields.joined({3: "000000"}, b"0200", ((3, bytearray(b"|3=")),)) == b"0200|3=000000"


def test_values_of_a_message_and_of_a_mapping():
    msg = TERM.decode(TERM.encode({"mti": "0200", 2: "4761739001010119", 41: "DEMO0001"}))
    assert fields.values(msg, (2, 3, 41)) == ("4761739001010119", None, "DEMO0001")
    assert fields.values({3: "000000"}, (2, 3)) == (None, "000000")
    assert fields.values(msg, ()) == ()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text("0123456789", max_size=25), st.text(max_size=8),
                 st.sampled_from([" 12", "12 ", "+7", "-0", "1_000", "٠١٢", "0x1F", "", "000000000000",
                                  "999999999999999999", "9999999999999999999"])))
def test_number_is_int_of_the_text(text):
    try:
        expected = int(text)
    except ValueError as e:
        expected = type(e)
    try:
        got = fields.number(text)
    except ValueError as e:
        got = type(e)
    assert got == expected and type(got) is type(expected)


def test_number_of_what_is_not_text_is_int_of_it():
    assert fields.number(b"12") == 12
    assert fields.number(7) == 7
    with pytest.raises(TypeError):
        fields.number(None)


@settings(max_examples=200, deadline=None)
@given(requests())
def test_answer_is_the_mti_and_the_echo_in_order(fields_in):
    msg = TERM.decode(TERM.encode(fields_in))
    plain = {n: v for n, v in fields_in.items() if n != "mti"}
    for source in (msg, plain):
        expected = {"mti": "0210"}
        fields.echo(source, expected, messages.ECHOED)
        got = fields.answer(source, "0210", messages.ECHOED)
        assert got == expected and list(got) == list(expected)
        got.update({37: "000000000001", 39: "00", 38: "000001", 48: "X", 55: b"\x91\x00"})  # room to grow
        assert len(got) == len(expected) + 5
