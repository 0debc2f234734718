"""A journal record crossing to the writer process (pickle): what arrives is what was sent."""
from __future__ import annotations

import copy
import pickle
from decimal import Decimal

import msgspec
import pytest

from switch.journal import TxnRecord


def record(**changes) -> TxnRecord:
    base = TxnRecord(
        id=41, terminal_id="TERM0001", merchant_id="SHOP00000000001", mti="0200", stan="000123",
        transmission_time="1130201111", processing_code="000000", amount=1000, currency="978",
        acquirer="bank-a", pan_masked="476173******0119", pan_hash="v1:" + "ab" * 32, content_digest="cd" * 16,
        rrn="000000000041", state="sent", response=b"\x02\x10", created_at=1.5, updated_at=2.25,
        host_stan="000045", card_sealed=b"\x01" + bytes(40), key_epoch=0, reversal_started=None,
    )
    return msgspec.structs.replace(base, **changes)


def round_trip(rec: TxnRecord) -> TxnRecord:
    return pickle.loads(pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL))


def test_a_record_arrives_equal_with_every_value_of_its_type():
    rec = record()
    back = round_trip(rec)
    assert back == rec
    for name in TxnRecord.__struct_fields__:
        assert type(getattr(back, name)) is type(getattr(rec, name)), name


@pytest.mark.parametrize("value", ["1000", True, Decimal("10.00"), 10.5])
def test_a_value_of_another_type_than_its_field_arrives_as_it_was_sent(value):
    # The journal stores what it is given (a str in an integer column, as sqlite3
    # would): crossing to the writer must neither refuse nor convert it.
    back = round_trip(record(amount=value))
    assert back.amount == value and type(back.amount) is type(value)


def test_a_byte_buffer_that_is_not_bytes_arrives_as_its_own_type():
    back = round_trip(record(response=bytearray(b"\x02\x10")))
    assert type(back.response) is bytearray and back.response == b"\x02\x10"


def test_many_records_in_one_frame_stay_distinct():
    recs = [record(id=i, stan="%06d" % i, response=bytes([i])) for i in range(1, 40)]
    assert pickle.loads(pickle.dumps([(i, "insert", (r,), {}) for i, r in enumerate(recs)])) == [
        (i, "insert", (r,), {}) for i, r in enumerate(recs)
    ]


def test_copies_are_equal_and_independent():
    rec = record()
    assert copy.copy(rec) == rec and copy.deepcopy(rec) == rec and copy.deepcopy(rec) is not rec


def test_an_int_beyond_64_bits_arrives_as_it_was_sent():
    # msgpack has no such integer: the record keeps the keyword form instead of failing the frame.
    back = round_trip(record(amount=1 << 70))
    assert back.amount == 1 << 70
