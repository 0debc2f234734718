"""Journal.store(): a request's outcome stored without its record coming back.

The engine stores every outcome with store() just before the answer goes out
and never reads the record it would return; a journal in a writer process of
its own answers None instead of pickling the record, sending and unpickling it.
"""
from __future__ import annotations

import pytest

from switch.journal import JournalError, StaleState, open_journal
from switch.journal.shared import Ownership
from tests.test_journal import KEY, WRITERS, ok, txn


@pytest.fixture(params=WRITERS)
def journal(request):
    j = open_journal("sqlite://:memory:", hmac_key=KEY, writer=request.param)
    yield j
    j.close()


def test_store_is_update_without_expect_and_update_if_with_it(journal):
    a, _ = ok(journal.insert(txn(1, state="sent")))
    b, _ = ok(journal.insert(txn(2, state="sent")))
    ok(journal.store(a.id, None, state="answered", response_code="00", response=b"r1"))
    ok(journal.store(b.id, "sent", state="answered", response_code="05", response=b"r2"))
    got_a, got_b = ok(journal.get(a.id)), ok(journal.get(b.id))
    assert (got_a.state, got_a.response_code, got_a.response) == ("answered", "00", b"r1")
    assert (got_b.state, got_b.response_code, got_b.response) == ("answered", "05", b"r2")
    assert got_a.answered_at is not None and got_b.answered_at is not None


def test_store_with_expect_refuses_a_record_in_another_state(journal):
    a, _ = ok(journal.insert(txn(3, state="sent")))
    ok(journal.update(a.id, state="reversal_pending"))
    with pytest.raises(StaleState):
        ok(journal.store(a.id, "sent", state="answered", response_code="00"))
    assert ok(journal.get(a.id)).state == "reversal_pending"


def test_store_errors_are_update_errors(journal):
    with pytest.raises(KeyError):
        ok(journal.store(999, None, state="answered"))
    with pytest.raises(ValueError, match="rrn"):
        ok(journal.store(1, None, rrn="000000000001"))


def test_a_writer_process_answers_store_with_none_and_update_with_the_record():
    j = open_journal("sqlite://:memory:", hmac_key=KEY, writer="process")
    try:
        a, _ = ok(j.insert(txn(4, state="sent")))
        assert ok(j.store(a.id, "sent", state="answered", response_code="00")) is None
        updated = ok(j.update(a.id, auth_code="123456"))
        assert (updated.id, updated.state, updated.auth_code) == (a.id, "answered", "123456")
    finally:
        j.close()


def test_a_closed_journal_fails_store_like_any_write(journal):
    a, _ = ok(journal.insert(txn(5, state="sent")))
    journal.close()
    with pytest.raises(JournalError):
        ok(journal.store(a.id, None, state="answered"))


def test_the_shared_writer_follows_ownership_through_store():
    """A record a worker moved off "sent" with store() is no longer its orphan-to-be."""
    o = Ownership()
    o.saw(1, "insert", (txn(6, id=7, state="sent"), True))
    o.saw(1, "store", txn(6, id=7, state="answered"))
    assert o.left(1) == [] and o.orphans == set()


# -- an insert's record does not travel back when the caller holds it ---------------------

def _slot_for(sent):
    from switch.journal.writer import _Slot

    slot = _Slot(41)
    slot.sent = sent
    return slot


def test_an_insert_stored_as_sent_comes_back_as_what_the_journal_assigned():
    from msgspec.structs import replace

    from switch.journal.writer import ASSIGNED, _outcome, as_given

    sent = txn(7, pan_masked="411111******1111", acquirer_ref="r-7")
    stored = replace(sent, id=1234, rrn="000000001234", created_at=5.5, updated_at=5.5)
    key, ok_, value = _outcome(_slot_for(sent), True, (stored, True))
    assert (key, ok_, value) == (41, ASSIGNED, (1234, 5.5, 5.5))
    kept = {41: sent}
    assert as_given(kept, 41, ok_, value) == (True, (stored, True)) and kept == {}


def test_an_insert_stored_otherwise_comes_back_whole():
    from msgspec.structs import replace

    from switch.journal.writer import _outcome

    sent = txn(8, amount=500.0)  # equal to 500, but stored (and read back) as an INTEGER
    stored = replace(sent, id=9, rrn="000000000009", created_at=1.0, updated_at=1.0, amount=500)
    assert _outcome(_slot_for(sent), True, (stored, True)) == (41, True, (stored, True))
    other = replace(sent, id=3, rrn="000000000003", terminal_id="OTHER001")
    assert _outcome(_slot_for(sent), True, (other, False)) == (41, True, (other, False))  # the key was taken


def test_a_writer_process_gives_inserts_their_stored_records():
    j = open_journal("sqlite://:memory:", hmac_key=KEY, writer="process")
    try:
        plain, created = ok(j.insert(txn(9, pan_masked="411111******1111")))
        assert created and plain == ok(j.get(plain.id)) and plain.rrn == "%012d" % plain.id
        odd, _ = ok(j.insert(txn(10, amount=500.0, response=bytearray(b"x"))))
        assert type(odd.amount) is int and type(odd.response) is bytes and odd == ok(j.get(odd.id))
        again, created = ok(j.insert(txn(9, mti="0100")))  # same key: the stored one, not this
        assert not created and again == plain
        assert j._inserted == {}  # nothing kept once answered
    finally:
        j.close()
