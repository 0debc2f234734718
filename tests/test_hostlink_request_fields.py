"""request_fields reads a Request's fields in one call, by their position: each
field must still land in its own ISO field, and field 4 be what the format
spec "012d" writes."""
import pytest

from adapters.card.messages import request_fields
from tests.test_card_hostlink import ACQ, F7, make_request


def test_every_field_read_lands_in_its_own():
    # A distinct value per field: a field read from its neighbour's position shows.
    req = make_request(
        mti="0100", pan="4000000000000002", processing_code="003000", amount=4321, currency="978",
        local_time="101112", local_date="1213", expiry="2911", entry_mode="071", pos_condition="08",
        track2="4000000000000002=2911101", rrn="331822000777", terminal_id="TERM0042",
        merchant_id="MERCHANT0000042", pin_block=b"\x02" * 8, icc=b"\x9f\x03",
        stan="000099", transmission_time="0101010101", host_stan="000123", host_time="0202020202",
    )
    assert request_fields(req, "000007", F7, ACQ) == {
        "mti": "0100", 2: "4000000000000002", 3: "003000", 4: "000000004321", 7: F7, 11: "000007",
        12: "101112", 13: "1213", 14: "2911", 22: "071", 25: "08", 32: ACQ,
        35: "4000000000000002=2911101", 37: "331822000777", 41: "TERM0042", 42: "MERCHANT0000042",
        49: "978", 52: b"\x02" * 8, 55: b"\x9f\x03",
    }


@pytest.mark.parametrize("amount", [0, 1, 1000, 10**11, 999_999_999_999, -5])
def test_field_4_is_the_amount_as_012d_writes_it(amount):
    assert request_fields(make_request(amount=amount), "000007", F7, ACQ)[4] == f"{amount:012d}"


def test_the_fields_go_in_field_order():
    # The order they always had (a dialect encodes by number; a reader of a logged dict sees this one).
    req = make_request(track2="4111111111111111=2812101", pin_block=b"\x01" * 8, icc=b"\x9f\x02")
    assert list(request_fields(req, "000007", F7, ACQ)) == [
        "mti", 2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 32, 35, 37, 41, 42, 49, 52, 55]
