"""host-87-bcd against pyiso8583 configured the same way (samples.pyiso8583_host_spec).

Random valid messages over every field 2..128 encode to the same bytes in both
codecs and decode to the same values; random corruptions of them either
decode or raise DecodeError, and anything pyiso8583 rejects ours rejects too.
"""
from __future__ import annotations

import string

import iso8583 as pyiso
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from native.iso8583 import DecodeError, dialect
from tests import samples

HOST = dialect("host-87-bcd")
SPEC = samples.pyiso8583_host_spec()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALPHABETS = {
    "n": string.digits,
    "z": string.digits + "=",
    "an": string.ascii_letters + string.digits + " ",
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
}


def value_of(n: int) -> st.SearchStrategy:
    spec = HOST.field_spec(n)
    fmt = spec["format"]
    if n == 36:  # z in our dialect, n in the pyiso8583 reference: digits fit both
        fmt = "n"
    sizes = st.just(spec["fixed"]) if "fixed" in spec else st.integers(0, min(spec["max"], 40))
    if fmt == "b":
        return sizes.flatmap(lambda k: st.binary(min_size=k, max_size=k))
    if fmt == "x+n":
        return st.tuples(st.sampled_from("CD"), st.text(string.digits, min_size=spec["fixed"] - 1, max_size=spec["fixed"] - 1)).map("".join)
    return sizes.flatmap(lambda k: st.text(ALPHABETS[fmt], min_size=k, max_size=k))


@st.composite
def messages(draw):
    numbers = draw(st.sets(st.sampled_from(HOST.defined_fields), max_size=25))
    return draw(st.text(string.digits, min_size=4, max_size=4)), {n: draw(value_of(n)) for n in sorted(numbers)}


def pyiso_fields(data: bytes) -> tuple[str, dict]:
    doc, enc = pyiso.decode(data, SPEC)
    out = {}
    for key, value in doc.items():
        if key.isdigit() and key != "1":
            n = int(key)
            fmt = HOST.field_spec(n)["format"]
            out[n] = enc[key]["data"] if fmt == "b" else value.replace("D", "=") if fmt == "z" else value
    return doc["t"], out


@SETTINGS
@given(messages())
def test_valid_messages_agree_with_pyiso8583(message):
    mti, fields = message
    ours = HOST.encode({"mti": mti, **fields})
    theirs = bytes(pyiso.encode(samples.pyiso8583_doc({"mti": mti, **fields}, SPEC), SPEC)[0])
    assert ours == theirs
    msg = HOST.decode(theirs)
    assert (msg.mti, msg.fields()) == (mti, fields)
    assert pyiso_fields(ours) == (mti, fields)
    assert HOST.encode(msg) is theirs


@SETTINGS
@given(messages(), st.data())
def test_corrupted_messages_rejected_when_pyiso8583_rejects(message, data):
    mti, fields = message
    raw = bytearray(HOST.encode({"mti": mti, **fields}))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw[: data.draw(st.integers(0, len(raw) + 1))])
    try:
        expected = pyiso_fields(raw)
    except (pyiso.DecodeError, KeyError):
        expected = None
    try:
        msg = HOST.decode(raw)
        got = (msg.mti, msg.fields())
    except DecodeError:
        got = None
    if expected is None:
        assert got is None
    elif got is not None:
        assert got == expected
