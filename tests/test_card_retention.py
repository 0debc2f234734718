"""An approved card payment keeps its card sealed for card_retention: a terminal's 0400 that
does not repeat the card still reaches the host with field 2 (hosts that match reversals on the
PAN refuse an 0420 without it), and after card_retention the journal forgets it."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import msgspec
import pytest

from switch.core.acquirer import Result
from switch.journal import reversal_card as cards
from tests.test_edges import run
from tests.test_reversal_card import PAN, SECRET, TIMEOUT, backend, field_2, service_key, txn  # noqa: F401
from tests.test_service import VISA, FakeAcquirer, call, fakes, journal, record, request, reversal, wait_state


def test_a_terminal_0400_without_the_card_after_an_approval_reverses_with_field_2(service_key):
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        approved = await record(sw, "000001")
        assert approved.state == "answered" and approved.card_sealed is not None
        assert cards.open_in_flight(sw.engine.key, approved) == VISA  # sealed for this request only
        assert (await call(sw, reversal("000002", "000001", pan=None)))[39] == "00"  # no field 2 in the 0400
        rec = await wait_state(sw, "000001", "reversed")
        assert rec.card_sealed is None  # moved to the reversal, and gone with it
        assert await journal(sw, sw.journal.reversal_card(rec.id)) is None

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))
    (rev, _), = bank_a.reversed
    assert field_2(rev) == VISA


def test_a_declined_payment_keeps_no_card_and_card_retention_0_keeps_none(service_key):
    declining = FakeAcquirer("bank-a", answers=[Result(response_code="05")])

    async def declined(sw):
        assert (await call(sw, request()))[39] == "05"
        assert (await record(sw, "000001")).card_sealed is None

    run(declined, acquirers=fakes(**{"bank-a": declining}))
    bank_a = FakeAcquirer("bank-a")

    async def none_kept(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await record(sw, "000001")).card_sealed is None
        assert (await call(sw, reversal("000002", "000001", pan=None)))[39] == "00"
        await wait_state(sw, "000001", "reversed")

    run(none_kept, acquirers=fakes(**{"bank-a": bank_a}), tweak="card_retention = 0")
    (rev, _), = bank_a.reversed
    assert field_2(rev) is None  # as before: nothing kept, nothing to repeat


def test_the_sweep_forgets_cards_past_card_retention(service_key):
    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await record(sw, "000001")).card_sealed is not None
        await asyncio.sleep(0.3)  # older than card_retention now
        sw.engine.reversals._forget_at = 0.0  # due at the next sweep (at most reversal_backoff_max away)
        for _ in range(50):
            if (await record(sw, "000001")).card_sealed is None:
                return True
            await asyncio.sleep(0.1)
        return False

    assert run(scenario, tweak="card_retention = 0.2\nreversal_backoff_max = 0.1")


def test_forget_cards_walks_the_journal_once_and_keeps_newer_and_sent_ones(backend):
    j, path = backend
    sealed = cards.seal_in_flight(SECRET, ("DEMO0001", "000001", "1124065401"), "", PAN)
    old = [j.insert(msgspec.structs.replace(txn(i), card_sealed=sealed)).result(TIMEOUT)[0] for i in (1, 2, 3)]
    kept = j.update(old[0].id, state="answered", response_code="00").result(TIMEOUT)
    assert kept.card_sealed == sealed  # approved: the journal keeps the card until forget_cards
    j.update(old[1].id, state="answered", response_code="00", card_sealed=sealed).result(TIMEOUT)
    # old[2] stays 'sent': at its acquirer, its card stays for recovery whatever its age
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    new = j.insert(msgspec.structs.replace(txn(4), card_sealed=sealed)).result(TIMEOUT)[0]
    j.update(new.id, state="answered", response_code="00", card_sealed=sealed).result(TIMEOUT)
    events = outbox_rows(path)
    assert j.forget_cards(cutoff).result(TIMEOUT) == 2
    assert [j.get(r.id).result(TIMEOUT).card_sealed for r in (*old, new)] == [None, None, sealed, sealed]
    assert j.forget_cards(cutoff).result(TIMEOUT) == 0  # nothing walked twice
    # An update after the walk does not bring a forgotten card back from the writer's memory.
    assert j.update(old[0].id, reversal_attempts=1).result(TIMEOUT).card_sealed is None
    assert j.forget_cards(time.time() + 1).result(TIMEOUT) == 1  # now the newer one too
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM txn WHERE card_sealed IS NOT NULL").fetchone() == (1,)
    finally:
        db.close()
    assert outbox_rows(path) == events  # forgetting is no event


def outbox_rows(path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def test_card_retention_below_zero_is_a_configuration_error(tmp_path):
    from switch import config as config_mod

    with pytest.raises(config_mod.ConfigError, match=r"must be 0 or more, got -1.0 - at `\$.card_retention`"):
        config_mod.loads('card_retention = -1\n[journal]\nurl = "sqlite://:memory:"\n', "x.toml")


def test_a_payment_at_its_acquirer_when_the_walk_passes_loses_its_card_once_answered(backend):
    j, _ = backend
    sealed = cards.seal_in_flight(SECRET, ("DEMO0001", "000001", "1124065401"), "", PAN)
    late, stuck = (j.insert(msgspec.structs.replace(txn(i), card_sealed=sealed)).result(TIMEOUT)[0] for i in (1, 2))
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    assert j.forget_cards(cutoff).result(TIMEOUT) == 0  # both 'sent': kept for recovery
    # The late approval comes after the walk has passed it; the walk does not come back.
    assert j.update(late.id, state="answered", response_code="00").result(TIMEOUT).card_sealed == sealed
    assert j.forget_cards(cutoff).result(TIMEOUT) == 1
    assert j.get(late.id).result(TIMEOUT).card_sealed is None
    assert j.get(stuck.id).result(TIMEOUT).card_sealed == sealed  # still at its acquirer
    assert j.update(late.id, reversal_attempts=1).result(TIMEOUT).card_sealed is None  # not from memory
    j.update(stuck.id, state="reversal_pending").result(TIMEOUT)
    assert j.forget_cards(cutoff).result(TIMEOUT) == 0  # its card went with the reversal
    assert j.get(stuck.id).result(TIMEOUT).card_sealed is None
