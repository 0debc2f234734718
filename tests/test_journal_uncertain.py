"""A journal writer process that dies holding a write it has not confirmed: that write may
have been committed just before the death.  The journal says so (JournalUncertain, not a
plain JournalClosed), and a payment whose outcome that write recorded gets no answer, never
a 96: a 96 over an approval the journal kept would charge the card for a sale the terminal
was told had failed.  The terminal's 0400 (spec section 6: no answer, then reverse) undoes
the payment after the restart, whichever way the write went."""
from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from switch.core.commands import UNANSWERED
from switch.journal import JournalClosed, JournalUncertain, open_journal
from tests.test_journal import ok, txn
from tests.test_journal_full import WAIT, answered


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


@pytest.mark.parametrize("error, code", [(JournalUncertain, None), (JournalClosed, "96")])
def test_an_approval_whose_write_is_uncertain_is_not_answered(caplog, monkeypatch, error, code):
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    gate = asyncio.Event()
    acquirers = ts.fakes(**{"bank-a": ts.FakeAcquirer("bank-a", gate=gate)})

    async def scenario(sw):
        def failing(*args, **kwargs):
            fut = sw._loop.create_future()
            fut.set_exception(error("journal writer process died (exit code -9)"))
            return fut

        pending = asyncio.ensure_future(sw.handle(ts.request(stan="000044")))
        await asyncio.wait_for(acquirers["bank-a"].entered.wait(), WAIT)
        for name in ("update", "update_if"):
            monkeypatch.setattr(sw.journal, name, failing)
        with caplog.at_level(logging.INFO):
            gate.set()
            return (await asyncio.wait_for(pending, WAIT)), answered(sw)

    body, counted = ts.run(scenario, acquirers=acquirers)
    assert acquirers["bank-a"].authorized
    if code is None:
        # Nothing is written to the terminal; counted as the journal's, code "none".
        assert body == b"" and counted == {("journal", "financial", UNANSWERED): 1.0}
        [said] = [r for r in caplog.records if "not answered" in r.getMessage()]
        assert said.levelname == "ERROR" and "unconfirmed" in said.getMessage()
        assert not [r for r in caplog.records if "cannot journal that either" in r.getMessage()]
    else:
        # Certainly not written (the writer never had it): the record stays sent, which
        # start-up recovery reverses, and the 96 is true.
        assert ts.TERM.decode(body)[39] == code
        assert counted == {("journal", "financial", "96"): 1.0}
