"""Sans-I/O pipeline decisions (spec sections 3 and 6)."""
from collections.abc import Generator

import pytest

from switch.core import pipeline as p
from switch.core.acquirer import Request


def verdict(*, mti="0200", digest="d1", stored_mti="0200", stored_digest="d1", state="answered", code="00",
            answered=True, age=10.0, window=86400.0):
    return p.retransmission(stored_mti=stored_mti, stored_digest=stored_digest, stored_state=state,
                            stored_code=code, answered=answered, age=age, window=window, mti=mti, digest=digest)


@pytest.mark.parametrize(
    "case, expected",
    [
        (dict(), p.SAME),
        (dict(digest="d2"), p.CONFLICT),  # other amount or PAN: 94
        (dict(stored_mti="0100"), p.CONFLICT),  # another MTI under the same key: 94
        (dict(state="sent", code=None, answered=False), p.UNANSWERED),  # died in flight: never twice
        (dict(state="received", code=None, answered=False), p.REDO),  # never left the switch
        (dict(mti="0400", stored_mti="0400", state="sent", answered=False), p.REDO),  # reversals: idempotent
        (dict(mti="0500", stored_mti="0500", state="sent", answered=False), p.REDO),
        # Section 6.1: a key named by a reversal before its original came: 94, whatever the content.
        (dict(state="void", stored_digest="", code=None, answered=False), p.LATE),
        (dict(state="void", stored_mti="0100", stored_digest="", answered=False), p.LATE),
        # Section 6.1: the retransmission window: an old key is a new request.
        (dict(age=86401.0), p.RENEW),
        (dict(age=86401.0, state="void"), p.RENEW),
        (dict(age=86399.0), p.SAME),
        # Section 6.1: an advice not confirmed is forwarded again; a confirmed one answered from the journal.
        (dict(mti="0220", stored_mti="0220", code="68"), p.RENEW),
        (dict(mti="0220", stored_mti="0220", code="91"), p.RENEW),
        (dict(mti="0220", stored_mti="0220", code="96", answered=False), p.RENEW),
        (dict(mti="0220", stored_mti="0220", code="00"), p.SAME),
        (dict(mti="0220", stored_mti="0220", code="68", digest="d2"), p.CONFLICT),
        (dict(mti="0200", code="68"), p.SAME),  # an authorization is never sent twice
    ],
)
def test_retransmission(case, expected):
    assert verdict(**case) == expected


@pytest.mark.parametrize(
    "case, expected",
    [
        (dict(), None),
        (dict(found=False), "25"),
        (dict(approved=False), "25"),
        (dict(standing=False), "25"),  # reversed or reversal pending
        (dict(same_card=False), "25"),
        (dict(completed=True), "94"),
        (dict(amount=2501), "13"),
        (dict(amount=2500), None),
        # Section 6.1: where several apply, the first of 25, 94, 13 wins.
        (dict(same_card=False, completed=True, amount=9000), "25"),
        (dict(completed=True, amount=9000), "94"),
        (dict(amount=0), "13"),
        (dict(same_currency=False), "13"),
        (dict(found=False, amount=0, same_currency=False), "25"),
        (dict(completed=True, amount=0, same_currency=False), "94"),
    ],
)
def test_completion_code(case, expected):
    args = dict(found=True, approved=True, standing=True, same_card=True, completed=False, amount=2000,
                authorized=2500)
    args.update(case)
    assert p.completion_code(**args) == expected


def test_reversal_backoff_doubles_up_to_its_ceiling():
    assert [p.reversal_backoff(n, 1.0, 8.0) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert p.reversal_backoff(10_000, 1.0, 8.0) == 8.0


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


def test_a_flight_that_no_reversal_named_leaves_nothing_to_run(monkeypatch):
    """Engine._reversal_left returns what the engine runs: nothing (no generator) for the
    flight of almost every request, the reversal of its key for one a 0400 named meanwhile."""

    from switch.core.commands import Flight
    from switch.core.engine import Engine
    from tests.test_service import KEY_ENV, KEY_HEX, MERCHANT, T7, TID, make_config

    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    engine = Engine(make_config(), key=bytes(32))
    flight = Flight((TID, "000001", T7), "d1", "0200")
    assert engine._reversal_left(flight, MERCHANT) == () and not flight.decided
    flight.reverse_requested = True
    assert isinstance(engine._reversal_left(flight, MERCHANT), Generator) and flight.decided
