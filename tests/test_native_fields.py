"""native.fields reads several fields of a decoded message at once: the same result as
``msg.get`` field by field, for messages of any content, and for a plain mapping."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from native import fields
from native.iso8583 import dialect
from switch.core import messages

TERM = dialect("terminal-87")

DIGITS = st.text("0123456789", min_size=1, max_size=12)
# Field number → a strategy for a value the terminal dialect carries there.
VALUES = {
    2: st.text("0123456789", min_size=13, max_size=19), 3: st.text("0123456789", min_size=6, max_size=6),
    4: st.text("0123456789", min_size=12, max_size=12), 7: st.text("0123456789", min_size=10, max_size=10),
    11: st.text("0123456789", min_size=6, max_size=6), 12: st.text("0123456789", min_size=6, max_size=6),
    13: st.text("0123456789", min_size=4, max_size=4), 22: st.text("0123456789", min_size=3, max_size=3),
    41: st.text("ABCDEFGH0123456789", min_size=8, max_size=8),
    42: st.text("ABCDEFGH0123456789 ", min_size=15, max_size=15),
    49: st.text("0123456789", min_size=3, max_size=3), 55: st.binary(min_size=1, max_size=40),
}


@st.composite
def requests(draw):
    chosen = draw(st.sets(st.sampled_from(sorted(VALUES))))
    return {"mti": "0200", **{n: draw(VALUES[n]) for n in chosen}}


def by_get(msg, numbers):
    return {n: msg.get(n) for n in numbers if msg.get(n) is not None}


def joined_by_get(msg, head, tags):
    out = [head]
    for n, tag in tags:
        v = msg.get(n)
        if v is not None:
            out += [tag, v if type(v) is bytes else v.encode()]
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(requests())
def test_echo_and_joined_read_what_get_reads(fields_in):
    msg = TERM.decode(TERM.encode(fields_in))
    numbers = tuple(range(1, 65))
    tags = tuple((n, b"|%d=" % n) for n in numbers)
    for source in (msg, {n: v for n, v in fields_in.items() if n != "mti"}):
        out = {"mti": "0210"}
        fields.echo(source, out, numbers)
        assert out == {"mti": "0210", **by_get(source, numbers)}
        assert fields.joined(source, b"0200", tags) == joined_by_get(source, b"0200", tags)


def test_the_digest_and_the_echo_of_a_request_are_unchanged():
    """The retransmission digest journaled before stays the digest (a retransmission across an
    upgrade is still recognised): the same as the field-by-field join it replaced."""
    msg = TERM.decode(TERM.encode({"mti": "0200", 3: "000000", 4: "000000002500", 7: "1124065401",
                                   11: "000001", 41: "DEMO0001", 42: "DEMOMERCHANT001", 49: "978"}))
    key = bytes(range(32))
    assert messages.content_digest(msg, key) == joined_digest(msg, key)
    resp = messages.build_response(msg, "00", "000000000001", auth_code="A1B2C3")
    assert resp == {"mti": "0210", 3: "000000", 4: "000000002500", 7: "1124065401", 11: "000001", 41: "DEMO0001",
                    42: "DEMOMERCHANT001", 49: "978", 37: "000000000001", 39: "00", 38: "A1B2C3"}


def joined_digest(msg, key):
    from switch.keyed_hash import keyed

    return keyed(key).hexdigest(joined_by_get(msg, msg.mti.encode(), messages._DIGEST_TAGS), 32)
