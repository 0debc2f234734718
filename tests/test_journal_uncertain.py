"""A journal writer process that dies holding a write it has not confirmed: that write may
have been committed just before the death.  The journal says so (JournalUncertain, not a
plain JournalClosed), and a payment whose outcome that write recorded gets no answer, never
a 96: a 96 over an approval the journal kept would charge the card for a sale the terminal
was told had failed.  The terminal's 0400 (spec section 6: no answer, then reverse) undoes
the payment after the restart, whichever way the write went."""
from __future__ import annotations

import os
import signal

import pytest

from switch.core.commands import UNANSWERED
from switch.journal import JournalClosed, JournalUncertain, open_journal
from tests.test_journal import ok, txn
from tests.test_journal_full import WAIT, approval_whose_update_fails


def test_a_write_the_dead_writer_held_is_uncertain_one_it_never_got_is_not(tmp_path):
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process")
    try:
        ok(j.insert(txn(1)))
        os.kill(j._proc.pid, signal.SIGSTOP)  # it holds what is sent from now on, unanswered
        handed = j.insert(txn(2))
        j.hold()
        kept_here = j.insert(txn(3))  # never leaves this side
        j._proc.kill()
        j._proc.wait()
        j._reader.join(WAIT)
        j.release()
        with pytest.raises(JournalUncertain, match="died"):
            ok(handed)
        with pytest.raises(JournalClosed) as never_sent:
            ok(kept_here)
        assert not isinstance(never_sent.value, JournalUncertain)
    finally:
        j.close()


def test_an_approval_whose_write_is_uncertain_is_not_answered(caplog, monkeypatch):
    """(A write the writer never had fails with JournalClosed: 96, see test_journal_full.)"""
    body, counted, _, authorized = approval_whose_update_fails(caplog, monkeypatch, JournalUncertain, "000044")
    assert authorized
    # Nothing is written to the terminal; counted as the journal's, code "none".
    assert body == b"" and counted == {("journal", "financial", UNANSWERED): 1.0}
    [said] = [r for r in caplog.records if "not answered" in r.getMessage()]
    assert said.levelname == "ERROR" and "unconfirmed" in said.getMessage()
    assert not [r for r in caplog.records if "cannot journal that either" in r.getMessage()]
