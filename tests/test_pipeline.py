"""Sans-I/O pipeline decisions (spec sections 3 and 6)."""
import pytest

from switch.core import pipeline as p
from switch.core.acquirer import Request


@pytest.mark.parametrize(
    "stored, now, answered, verdict",
    [
        (("0200", "d1"), ("0200", "d1"), True, p.SAME),
        (("0200", "d1"), ("0200", "d2"), True, p.CONFLICT),  # other amount or PAN: 94
        (("0100", "d1"), ("0200", "d1"), True, p.CONFLICT),  # another MTI under the same key: 94
        (("0200", "d1"), ("0200", "d1"), False, p.UNANSWERED),  # died in flight: never twice
        (("0400", "d1"), ("0400", "d1"), False, p.REDO),  # reversals are idempotent
        (("0500", "d1"), ("0500", "d1"), False, p.REDO),
    ],
)
def test_retransmission(stored, now, answered, verdict):
    assert p.retransmission(stored[0], stored[1], answered, now[0], now[1]) == verdict


@pytest.mark.parametrize(
    "mti, kind, has_original, routed, direct",
    [
        ("0200", "card", False, True, True),
        ("0100", "wallet", False, True, True),
        ("0200", "card", False, False, False),  # rejected before routing
        ("0220", "citycard", False, True, True),  # offline upload
        ("0220", "card", True, True, False),  # completion follows its pre-auth's acquirer
        ("0400", "card", True, True, False),
        ("0500", "card", False, True, False),
    ],
)
def test_goes_direct(mti, kind, has_original, routed, direct):
    assert p.goes_direct(mti, kind, has_original, routed) is direct


def _req(mti, kind):
    return Request(txn_id=1, kind=kind, mti=mti, processing_code="000000", amount=100, currency="978",
                   terminal_id="DEMO0001", merchant_id="M", stan="000001", transmission_time="1124101500",
                   rrn="000000000001")


def test_offline_advice_is_only_the_city_card_upload():
    assert p.is_offline_advice(_req("0220", "citycard"))
    assert not p.is_offline_advice(_req("0220", "card"))
    assert not p.is_offline_advice(_req("0200", "citycard"))


def test_settlement_code():
    assert p.settlement_code((1, 2, 500, 3000), (1, 2, 500, 3000)) == "00"
    assert p.settlement_code((1, 3, 500, 6000), (1, 2, 500, 3000)) == "95"
