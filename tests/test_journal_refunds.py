"""A merchant's daily refund limit, decided by the journal (spec section 6.1, switch.journal.refunds).

Every writer: the thread, a writer process of its own (``gated``/``journal``
run on both), and the writer shared by the workers of ``serve --workers``
(``shared``).  Two refunds that do not fit together never both pass, in
one batch or in two.
"""
from __future__ import annotations

import sqlite3
import time

import pytest

from switch.journal.refunds import REFUNDS_HELD
from tests.test_journal import KEY, gated, hold_writer, journal, ok, txn, writer  # noqa: F401 (fixtures)
from tests.test_journal_shared import shared  # noqa: F401 (fixture)

LIMIT = 150_000
DAY = 0.0  # since the epoch: every refund of these tests is "today"
EUR = ("978", "978")  # (the refund's currency, the merchant's): txn() records are in euros


def refund(stan: int, amount: int, *, state: str = "sent", **kw):
    return txn(stan, **{"processing_code": "200000", "amount": amount, "state": state, **kw})


def stored(j, stan: int):
    return ok(j.find("DEMO0001", "%06d" % stan, "1124065401"))


def test_two_refunds_in_one_batch_cannot_both_pass(gated):
    j, gate = gated
    hold_writer(j, gate)
    first = j.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR)
    second = j.insert_refund(refund(2, 60_000), LIMIT, DAY, *EUR)
    third = j.insert_refund(refund(3, 50_000), LIMIT, DAY, *EUR)  # exactly up to the limit
    gate.open()
    rec, created = ok(first)
    assert created and rec.state == "sent" and rec.amount == 100_000
    assert ok(second) == (None, False)
    assert ok(third)[1]
    assert stored(j, 2) is None  # nothing written for the one over the limit


def test_two_refunds_in_separate_batches_cannot_both_pass(journal):
    assert ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))[1]
    assert ok(journal.insert_refund(refund(2, 60_000), LIMIT, DAY, *EUR)) == (None, False)
    assert stored(journal, 2) is None
    assert ok(journal.insert_refund(refund(3, 50_000), LIMIT, DAY, *EUR))[1]
    assert ok(journal.insert_refund(refund(4, 1), LIMIT, DAY, *EUR)) == (None, False)


def test_approved_and_in_flight_refunds_count_declined_rejected_and_reversed_ones_do_not(journal):
    def put(stan, amount, state, code=None, **kw):
        rec, _ = ok(journal.insert(refund(stan, amount, state=state, **kw)))
        if code is not None:
            ok(journal.update(rec.id, response_code=code))

    put(1, 10_000, "answered", "00")  # approved: counts
    put(2, 20_000, "sent")  # at its acquirer: counts
    put(3, 40_000, "answered", "05")  # declined
    put(4, 40_000, "rejected", "58")  # the switch's own answer
    put(5, 40_000, "received")  # being answered by the switch itself: never leaves it
    put(6, 40_000, "reversed", "00")
    put(7, 40_000, "reversal_pending", "00")
    put(8, 40_000, "answered", "00", processing_code="000000")  # a purchase
    put(9, 40_000, "answered", "00", merchant_id="OTHER0000000001")  # another merchant
    assert ok(journal.insert_refund(refund(20, 120_000), LIMIT, DAY, *EUR))[1]  # 10000 + 20000 + 120000
    assert ok(journal.insert_refund(refund(21, 1), LIMIT, DAY, *EUR)) == (None, False)


def test_only_refunds_in_the_new_ones_currency_count(journal):
    # 1,000 JPY (no decimals) and 10.00 EUR are not 2,000 of anything: each currency has its own day.
    put = lambda stan, amount, currency: ok(journal.insert(refund(stan, amount, currency=currency)))  # noqa: E731
    put(1, 140_000, "392")
    put(2, 100_000, None)  # no field 49: the merchant's currency (here euros)
    assert ok(journal.insert_refund(refund(3, 50_000), LIMIT, DAY, *EUR))[1]  # 100000 + 50000 EUR
    assert ok(journal.insert_refund(refund(4, 1), LIMIT, DAY, *EUR)) == (None, False)
    assert ok(journal.insert_refund(refund(5, 10_000, currency="392"), LIMIT, DAY, "392", "978"))[1]
    assert ok(journal.insert_refund(refund(6, 1, currency="392"), LIMIT, DAY, "392", "978")) == (None, False)
    # Where the merchant's currency is yen, the refund without field 49 is one of yen.
    assert ok(journal.insert_refund(refund(7, 1, currency="392"), LIMIT, DAY, "392", "392")) == (None, False)
    assert ok(journal.insert_refund(refund(8, 100_000, currency="978"), LIMIT, DAY, "978", "392"))[1]


def test_only_refunds_since_the_days_start_count(journal):
    assert ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))[1]
    tomorrow = time.time() + 3600
    assert ok(journal.insert_refund(refund(2, LIMIT), LIMIT, tomorrow, *EUR))[1]


def test_a_used_key_gets_its_record_even_over_the_limit(journal):
    rec, _ = ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))
    again, created = ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))  # a retransmission
    assert not created and again.id == rec.id
    ok(journal.update(rec.id, state="answered", response_code="00"))
    again, created = ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))
    assert not created and again.id == rec.id


def test_a_key_held_by_a_record_never_sent_is_checked_as_a_new_refund(journal):
    ok(journal.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR))
    # Journaled, never answered nor sent (the switch stopped in between): handled again, so checked.
    left, _ = ok(journal.insert(refund(2, 60_000, state="received")))
    assert ok(journal.insert_refund(refund(2, 60_000), LIMIT, DAY, *EUR)) == (None, False)
    found, created = ok(journal.insert_refund(refund(2, 50_000), LIMIT, DAY, *EUR))
    assert not created and found.id == left.id


def test_bad_arguments_fail_before_anything_is_queued(journal):
    with pytest.raises(ValueError, match="amount"):
        ok(journal.insert_refund(refund(1, None), LIMIT, DAY, *EUR))
    with pytest.raises(ValueError, match="limit"):
        ok(journal.insert_refund(refund(1, 100), "150000", DAY, *EUR))
    with pytest.raises(ValueError, match="under a limit in '392'"):
        ok(journal.insert_refund(refund(1, 100), LIMIT, DAY, "392", "978"))
    with pytest.raises(ValueError, match="Luhn"):
        ok(journal.insert_refund(refund(1, 100, acquirer="4111111111111111"), LIMIT, DAY, *EUR))
    assert stored(journal, 1) is None


def test_the_sum_reads_the_partial_index_txn_refund(tmp_path):
    from switch.journal.sqlite import SqliteJournal

    path = str(tmp_path / "j.sqlite")
    SqliteJournal(path, hmac_key=KEY).close()  # migrated
    conn = sqlite3.connect(path)
    try:
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + REFUNDS_HELD, ("M", 0.0, "978", "978")))
    finally:
        conn.close()
    assert "txn_refund" in plan, plan


def test_refunds_of_two_workers_at_once_cannot_both_pass(shared):
    _, _, _, connect = shared
    a, b = connect(), connect()
    a.hold()
    b.hold()
    first = a.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR)
    second = b.insert_refund(refund(2, 60_000), LIMIT, DAY, *EUR)
    a.release()
    b.release()
    outcomes = [first.result(10), second.result(10)]
    assert sorted(created for _, created in outcomes) == [False, True]
    assert [rec for rec, created in outcomes if not created] == [None]
    # In one batch of one worker too.
    a.hold()
    third = a.insert_refund(refund(3, 50_000), LIMIT, DAY, *EUR)
    fourth = a.insert_refund(refund(4, 50_000), LIMIT, DAY, *EUR)
    a.release()
    assert third.result(10)[1] and fourth.result(10) == (None, False)


def test_a_refund_left_sent_by_a_worker_that_went_is_an_orphan(shared):
    _, _, _, connect = shared
    a, b = connect(), connect()
    rec, created = a.insert_refund(refund(1, 100_000), LIMIT, DAY, *EUR).result(10)
    assert created
    assert a.insert_refund(refund(2, 60_000), LIMIT, DAY, *EUR).result(10) == (None, False)
    a.close()
    deadline = time.monotonic() + 10
    while b.orphans().result(10) != [rec.id]:
        assert time.monotonic() < deadline, b.orphans().result(10)
        time.sleep(0.02)


def test_insert_refund_stores_the_record_as_it_was_when_submitted(gated):
    j, gate = gated
    hold_writer(j, gate)
    rec = refund(1, 100_000)
    fut = j.insert_refund(rec, LIMIT, DAY, *EUR)
    rec.amount = LIMIT + 1  # the caller's record changes before the writer gets to it
    rec.state = "answered"
    gate.open()
    got, created = ok(fut)
    assert created and (got.amount, got.state) == (100_000, "sent")
    assert (stored(j, 1).amount, stored(j, 1).state) == (100_000, "sent")
