"""A strict bank acquirer on the ISO 8583 host link: what its answers may and may not do.

Nothing is lost or charged twice: an answer the switch cannot take as the
acquirer's word on the request it sent is never an approval to the
terminal, and whatever the acquirer may hold is reversed, by what it holds.
"""
from __future__ import annotations

from adapters.card.hostlink import Completed, Late, Unmatched, fields_view, parse_ref, reversal_fields
from switch.core.acquirer import Original

from tests.test_card_hostlink import ACQ, WALL, answer_to, make_request, make_reversal, ready_connection


def sent_and_answered(conn, req=None, clock=1.0, **fields):
    msg, pending = conn.request(req or make_request(), now=clock, wall=WALL, timeout=10.0)
    return msg, conn.receive(answer_to(msg, **fields), clock + 0.1)


def reversal_of(result, req=None) -> dict:
    """The 0420 the switch sends for ``result`` (journaled as the engine does: the terminal's amount
    and currency, the acquirer's references)."""
    req = req or make_request()
    original = Original(txn_id=1, mti=req.mti, processing_code=req.processing_code, amount=req.amount,
                        currency=req.currency, stan=req.stan, transmission_time=req.transmission_time,
                        rrn=req.rrn, auth_code=result.auth_code, acquirer_ref=result.acquirer_ref,
                        host_stan="000321", host_time="1114221320")
    return reversal_fields(make_reversal(original), stan="000400", f7="1114221400", acquirer_id=ACQ)


# -- 1. an approval in another currency or of another amount ------------------------------

def test_an_approval_in_another_currency_is_answered_96_and_reversed_in_the_hosts_currency():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f49="978")
    result = done.outcome
    assert (result.response_code, result.uncertain) == ("96", True)
    rev = reversal_of(result)
    assert (rev[4], rev[49], rev[38]) == ("000000001000", "978", "AB12CD")


def test_an_approval_of_another_amount_and_currency_is_reversed_for_what_the_host_holds():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f4="000000000700", f49="978")
    result = done.outcome
    assert (result.response_code, result.uncertain) == ("96", True)
    ref = parse_ref(result.acquirer_ref)
    assert (ref.approved, ref.currency) == (700, "978")
    rev = reversal_of(result)
    assert (rev[4], rev[49]) == ("000000000700", "978")


def test_a_full_approval_of_less_than_requested_is_a_96_not_a_decline():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f4="000000000999")
    assert (done.outcome.response_code, done.outcome.uncertain) == ("96", True)
    rev = reversal_of(done.outcome)
    assert (rev[4], rev[49]) == ("000000000999", "840")


def test_an_approval_in_the_currency_sent_is_an_approval():
    conn = ready_connection()
    _, [done] = sent_and_answered(conn, f39="00", f38="AB12CD", f49="840")
    assert (done.outcome.response_code, done.outcome.uncertain) == ("00", False)
