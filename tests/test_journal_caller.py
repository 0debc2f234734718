"""The journal's caller side (the event loop's): what it hands the writer, and what that stores."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.journal import JournalClosed, StaleState, check_own_pan, pan_protect
from switch.journal import reversal_card as cards
from switch.journal.pan_guard import _DIGIT_RUN, digit_runs
from switch.journal.sqlite import SqliteJournal
from tests.test_journal import KEY, ok, txn
from tests.test_journal_batch import Collecting, CollectingSqlitePath

# Set by the journal, whatever the caller's record says (statements.INSERT binds them unused).
ASSIGNED = dict(id=77, rrn="000000000077", created_at=5.0, updated_at=6.0)


@pytest.mark.parametrize("journal_class", [Collecting, CollectingSqlitePath], ids=["compiled", "sqlite3"])
def test_an_insert_stores_what_the_journal_assigns_not_the_callers(journal_class):
    j = journal_class()
    try:
        inserted = j.insert(txn(1, **ASSIGNED))
        j.flush()
        rec, created = ok(inserted)
        assert created
        assert (rec.id, rec.rrn) == (1, "000000000001")
        assert rec.created_at == rec.updated_at != 5.0
        got = j.get(rec.id)
        j.flush()
        assert ok(got) == rec
    finally:
        j.close()


@pytest.mark.parametrize("journal_class", [Collecting, CollectingSqlitePath], ids=["compiled", "sqlite3"])
def test_an_insert_of_a_key_already_taken_returns_the_record_that_holds_it(journal_class):
    j = journal_class()
    try:
        first, again = j.insert(txn(1)), j.insert(txn(1, amount=5, **ASSIGNED))
        j.flush()
        (rec, created), (held, created_again) = ok(first), ok(again)
        assert created and not created_again
        assert held == rec and held.amount == 1000
    finally:
        j.close()


def test_an_update_checks_its_changes_before_it_is_queued():
    j = Collecting()
    try:
        with pytest.raises(ValueError, match="'auth_code' holds a 16-digit number"):
            ok(j.update(1, state="answered", auth_code="4111111111111111"))
        with pytest.raises(ValueError, match="cannot update journal column.s. rrn"):
            ok(j.update_if(1, "sent", rrn="1"))
        with pytest.raises(ValueError, match="'card_sealed'"):
            ok(j.end_reversal(1, "reversal_pending", card_sealed=b"4111111111111111"))
        assert j.pending == []
        inserted = j.insert(txn(1, state="sent"))
        j.flush()
        rec, _ = ok(inserted)
        stale, moved = j.update_if(rec.id, "answered", state="failed"), j.update(rec.id, state="answered")
        j.flush()
        with pytest.raises(StaleState):
            ok(stale)
        assert ok(moved).state == "answered"
    finally:
        j.close()


def test_operations_queued_after_close_or_refused(tmp_path):
    j = SqliteJournal(str(tmp_path / "j.db"), hmac_key=KEY)
    queued = [j.insert(txn(n)) for n in range(1, 50)]
    j.close()
    assert all(ok(f)[1] for f in queued)  # queued before the stop mark: written
    with pytest.raises(JournalClosed):
        ok(j.update(1, state="answered"))


def test_the_in_flight_card_is_sealed_for_the_same_associated_data_as_before():
    # Cards sealed by an earlier release (in journals still on disk) must open.
    key = ("DEMO0001", "000001", "1124065401")
    assert cards._in_flight_aad(key, "ab12", 1) == b"payswitch in-flight card v1 DEMO0001|000001|1124065401|ab12"
    assert cards._in_flight_aad(key, "", 2) == b"payswitch in-flight card v2 DEMO0001|000001|1124065401|"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789-x ٣\U0001d7d8"), max_size=80)
       | st.lists(st.integers(0, 25), max_size=4).map(lambda ns: "a".join("7" * n for n in ns)))
def test_digit_runs_finds_what_the_regex_finds(text):
    assert digit_runs(text) == _DIGIT_RUN.findall(text)


def test_a_pan_in_an_acquirer_reference_is_refused_wherever_it_sits():
    pan, other = "4111111111111111", "4000056655665556"
    _masked, pan_hash = pan_protect(pan, KEY)
    for ref in (pan, f"ref-{pan}", f"{pan}/x", f"{other} {pan}", f"T{pan}9"[:-1]):
        with pytest.raises(ValueError, match="'acquirer_ref' holds the transaction's PAN"):
            check_own_pan({"acquirer_ref": ref}, pan_hash, KEY)
    for ref in (other, f"9{pan}", f"{pan}123456", pan[:12]):
        check_own_pan({"acquirer_ref": ref}, pan_hash, KEY)
