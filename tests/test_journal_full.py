"""A journal that cannot write (disk full): its ping says so, and the request
gets one log line and 96, not a traceback and an "internal error".

The disk is filled with SQLite's own cap, ``PRAGMA max_page_count``: inserts
that need a new page fail with SQLITE_FULL ("database or disk is full"), as on
a full file system, while the ping's empty transaction still succeeds.
"""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from switch.journal import JournalClosed, JournalError, open_journal
from tests.test_journal import KEY, ok, txn

WAIT = 3.0  # upper bound for anything the tests wait on


def answered(sw) -> dict[tuple[str, str, str], float]:
    """payswitch_requests_total by (kind, mclass, code), those counted."""
    return {(s.labels["kind"], s.labels["mclass"], s.labels["code"]): s.value
            for family in sw.metrics.registry.collect() if family.name == "payswitch_requests"
            for s in family.samples if s.name.endswith("_total") and s.value}


def _cap_pages(j, extra: int) -> None:
    def cap():
        count = j._conn.execute("PRAGMA page_count").fetchone()[0]
        j._conn.execute(f"PRAGMA max_page_count = {count + extra}")
    ok(j._submit(cap, (), True))


def _rows(j, table: str) -> int:
    return ok(j._submit(lambda: j._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0], (), False))


def test_a_failed_write_fails_the_ping_for_as_long_as_the_disk_is_full(tmp_path):
    j = open_journal(f"sqlite://{tmp_path / 'j.sqlite'}", hmac_key=KEY, writer="thread")
    try:
        assert ok(j.ping()) is True
        _cap_pages(j, 0)
        with pytest.raises(JournalError, match="disk is full"):
            for stan in range(1, 2000):
                ok(j.insert(txn(stan, pan_masked="476173******0119", acquirer_ref="x" * 500)))
        # The empty transaction alone would pass: the failed write fails it,
        # and an hour without traffic changes nothing while the disk is full.
        with pytest.raises(JournalError, match="disk is full"):
            ok(j.ping())
        failed_at, exc = j.write_failed
        j.write_failed = (failed_at - 3600, exc)
        for _ in range(3):
            with pytest.raises(JournalError, match="disk is full"):
                ok(j.ping())
        # Room for a few rows is not room for a batch of payments.
        _cap_pages(j, 3)
        with pytest.raises(JournalError, match="disk is full"):
            ok(j.ping())
        _cap_pages(j, 10000)  # room again: ready at the next ping, without waiting
        assert ok(j.ping()) is True
        assert _rows(j, "journal_probe") == 1
        ok(j.insert(txn(5000)))
        assert ok(j.ping()) is True  # and the probe's room is given back
        assert _rows(j, "journal_probe") == 0
        assert ok(j.ping()) is True
    finally:
        j.close()


def test_a_request_the_journal_cannot_record_is_answered_96_in_one_line(caplog, monkeypatch):
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    acquirers = ts.fakes()

    async def scenario(sw):
        def full(rec):
            fut = sw._loop.create_future()
            fut.set_exception(JournalError("journal batch of 1 not written: OperationalError('database or disk is full')"))
            return fut

        monkeypatch.setattr(sw.journal, "insert", full)
        with caplog.at_level(logging.INFO):
            answer = await ts.call(sw, ts.request(stan="000042"))
        return answer, ts.sample(sw, "payswitch_internal_errors_total"), answered(sw)

    answer, internal, counted = ts.run(scenario, acquirers=acquirers)
    assert answer[39] == "96"
    assert counted == {("journal", "financial", "96"): 1.0}  # told apart from the switch's other 96s
    assert all(not a.authorized for a in acquirers.values())  # nothing unrecorded reaches an acquirer
    lines = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and lines[0].exc_info is None
    assert f"0200 from terminal {ts.TID} answered 96" in lines[0].getMessage()
    assert lines[0].getMessage().endswith("disk is full')" + ' (runbook: "Journal failing")')
    assert internal == 0  # not a bug in the switch: the journal alert says what is wrong


def approval_whose_update_fails(caplog, monkeypatch, error: type[Exception], stan: str):
    """A purchase that its acquirer approves after the journal's updates began to fail with
    ``error`` ("journal writer process died (exit code -9)"): (the switch's answer as bytes,
    requests counted, internal errors, whether the acquirer authorized it)."""
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    gate = asyncio.Event()
    acquirers = ts.fakes(**{"bank-a": ts.FakeAcquirer("bank-a", gate=gate)})

    async def scenario(sw):
        def failing(*args, **kwargs):
            fut = sw._loop.create_future()
            fut.set_exception(error("journal writer process died (exit code -9)"))
            return fut

        pending = asyncio.ensure_future(sw.handle(ts.request(stan=stan)))
        await asyncio.wait_for(acquirers["bank-a"].entered.wait(), WAIT)
        for name in ("update", "update_if", "store"):
            monkeypatch.setattr(sw.journal, name, failing)
        with caplog.at_level(logging.INFO):
            gate.set()
            return (await asyncio.wait_for(pending, WAIT)), answered(sw), sw.metrics.internal_errors._value.get()

    body, counted, internal_errors = ts.run(scenario, acquirers=acquirers)
    return body, counted, internal_errors, acquirers["bank-a"].authorized


def test_an_answer_from_the_acquirer_after_the_journal_closed_is_a_journal_96(caplog, monkeypatch):
    """The writer died while the purchase was at its acquirer: the approval cannot be
    journaled, so the terminal gets 96, counted as the journal's (not as a card answer),
    and neither can the 96 (left sent: reversed at the restart), said without a traceback."""
    from tests import test_service as ts

    body, counted, internal_errors, authorized = approval_whose_update_fails(caplog, monkeypatch, JournalClosed,
                                                                             "000043")
    answer = ts.TERM.decode(body)
    assert answer[39] == "96" and authorized
    assert counted == {("journal", "financial", "96"): 1.0}
    [kept] = [r for r in caplog.records if "cannot journal that either" in r.getMessage()]
    assert not kept.exc_info and "(journal writer process died (exit code -9))" in kept.getMessage()
    # The journal's refusal is no bug of the switch: one line each, no traceback, no internal error.
    [said] = [r for r in caplog.records if "cannot build or journal the 00 answer" in r.getMessage()]
    assert said.levelname == "ERROR" and "journal writer process died" in said.getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    assert internal_errors == 0


def test_a_writer_thread_that_dies_says_to_restart(caplog, monkeypatch):
    """The one journal failure the switch does not recover from by itself: its log line
    says what follows and what to do, and the ping (readiness) fails from then on."""
    from switch.journal.groupcommit import GroupCommitter

    def bug(self):
        raise RuntimeError("a bug in the writer loop")

    monkeypatch.setattr(GroupCommitter, "_loop", bug)
    with caplog.at_level(logging.ERROR):
        j = open_journal("sqlite://:memory:", hmac_key=KEY)
        try:
            j._thread.join(3)  # the writer thread, dead
            with pytest.raises(JournalError):
                ok(j.ping())
        finally:
            j.close()
    [line] = [r for r in caplog.records if "writer thread died" in r.getMessage()]
    assert line.getMessage() == ("journal writer thread died: nothing can be journaled (every payment is answered 96)"
                                 ' until the switch is restarted (runbook: "Journal failing")')


def _dies_when(go: threading.Event):
    def bug(self):
        go.wait(WAIT)
        raise RuntimeError("a bug in the writer loop")
    return bug


def test_a_writer_thread_that_dies_tells_on_died_once(caplog, monkeypatch):
    """A single switch stops on it (switch.io.app): the hook is told on the writer thread,
    once, and the hook's owner says it (no line of the journal's own but the traceback)."""
    from switch.journal.groupcommit import GroupCommitter

    go = threading.Event()
    monkeypatch.setattr(GroupCommitter, "_loop", _dies_when(go))
    told: list[tuple[str, threading.Thread]] = []
    with caplog.at_level(logging.INFO):
        j = open_journal("sqlite://:memory:", hmac_key=KEY)
        try:
            j.on_died = lambda why: told.append((why, threading.current_thread()))
            go.set()
            j._thread.join(WAIT)
            assert not j._thread.is_alive()
            with pytest.raises(JournalClosed, match="writer thread died"):
                ok(j.ping())
        finally:
            j.close()
    assert told == [("journal writer thread died: RuntimeError('a bug in the writer loop')", j._thread)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [trace] = [r for r in caplog.records if "writer thread died" in r.getMessage()]
    assert trace.levelno == logging.WARNING and trace.exc_info is not None


def test_closing_the_journal_is_no_death_of_its_writer_thread(caplog):
    told: list[str] = []
    with caplog.at_level(logging.INFO):
        j = open_journal("sqlite://:memory:", hmac_key=KEY)
        j.on_died = told.append
        assert ok(j.ping()) is True
        j.close()
    assert not j._thread.is_alive()
    assert told == []
    assert not [r for r in caplog.records if "writer thread died" in r.getMessage()]
