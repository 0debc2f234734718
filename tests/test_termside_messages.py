"""The request helpers read a decoded message's fields at once (native.fields.values): what
they answer stays what reading field by field answered, for every field present or not."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native.iso8583 import dialect
from switch.core import messages as m
from switch.core.acquirer import Request

T = dialect("terminal-87")

FULL = {
    "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "000000001250", 7: "1124101500", 11: "000001",
    12: "101500", 13: "1124", 14: "2812", 22: "051", 25: "00", 35: "4761739001010119=28121011234567890",
    41: "DEMO0001", 42: "DEMO00000000001", 49: "978", 52: bytes(8), 55: b"\x9f\x02\x06\x00\x00\x00\x00\x12\x50",
}


def by_get(msg, **kw) -> Request:
    """build_request as it read the message before: one msg.get (or msg[n]) a field."""
    g = msg.get
    amount = g(4)
    return Request(txn_id=kw["txn_id"], kind=kw["kind"], mti=msg.mti, processing_code=g(3) or "000000",
                   amount=int(amount) if amount is not None else None, currency=g(49), terminal_id=msg[41],
                   merchant_id=g(42) or "", stan=msg[11], transmission_time=msg[7], rrn=kw["rrn"],
                   local_time=g(12), local_date=g(13), pan=kw["pan"], expiry=g(14), entry_mode=g(22),
                   pos_condition=g(25), track2=g(35), pin_block=g(52), icc=g(55), tlv=kw["tlv"])


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from([n for n in FULL if n not in ("mti", 41, 11, 7)])))
def test_build_request_carries_each_field_present_and_none_of_those_absent(dropped):
    msg = T.decode(T.encode({k: v for k, v in FULL.items() if k not in dropped}))
    kw = dict(txn_id=7, kind="card", rrn="000000000007", pan="4761739001010119", tlv={})
    assert m.build_request(msg, **kw) == by_get(msg, **kw)


@pytest.mark.parametrize("required", [41, 11, 7])
def test_build_request_without_41_11_or_7_raises_as_msg_n_does(required):
    msg = T.decode(T.encode({k: v for k, v in FULL.items() if k != required}))
    with pytest.raises(KeyError):
        m.build_request(msg, txn_id=7, kind="card", rrn="000000000007", pan=None, tlv={})


def test_build_response_echoes_as_before_and_answers_an_0800_with_its_70():
    msg = T.decode(T.encode(FULL))
    resp = m.build_response(msg, "05", "000000000001")
    assert resp == {"mti": "0210", 3: "000000", 4: "000000001250", 7: "1124101500", 11: "000001", 12: "101500",
                    13: "1124", 41: "DEMO0001", 42: "DEMO00000000001", 49: "978", 37: "000000000001", 39: "05"}
    net = T.decode(T.encode({"mti": "0800", 7: "1124101500", 11: "000002", 41: "DEMO0001", 70: "301"}))
    assert m.build_response(net, "00", "N00000000001") == {
        "mti": "0810", 7: "1124101500", 11: "000002", 41: "DEMO0001", 70: "301", 37: "N00000000001", 39: "00",
        38: "000001"}
    # A field 70 on a request that is no 0800 is not echoed.
    odd = T.decode(T.encode({**FULL, 70: "301"}))
    assert 70 not in m.build_response(odd, "05", "000000000001")


@pytest.mark.parametrize("changes, code", [
    ({14: "2813"}, "30"),  # month 13
    ({4: "000000000000"}, "13"),
    ({3: "200000", "mti": "0100"}, "12"),
    ({35: "4761739001010127=28121011234567890"}, "30"),  # another card than field 2's
    ({7: "1324101500"}, "30"),
])
def test_check_request_still_refuses_what_it_refused(changes, code):
    msg = T.decode(T.encode({**FULL, **changes}))
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg)
    assert e.value.code == code


def test_a_mapping_is_checked_as_a_message_is():
    plain = {k: v for k, v in FULL.items() if k != "mti"}

    class Plain(dict):
        mti = "0200"

    m.check_request(Plain(plain))
    with pytest.raises(m.Rejection) as e:
        m.check_request(Plain({**plain, 4: "000000000000"}))
    assert e.value.code == "13"
