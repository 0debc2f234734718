"""A queued reversal keeps its card number (field 2) across restarts and processes, sealed.

Hosts that match reversals on the PAN refuse a 0420 without field 2; the
process that sends a reversal may not be the one that queued it.  The journal
keeps the PAN of a queued reversal sealed (switch.journal.reversal_card),
never in clear, and only until the reversal ends.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile

import msgspec
import pytest

from switch.journal import StaleState, TxnRecord, digest_key, open_journal, pan_key
from switch.journal import reversal_card as cards
from switch.journal.process import ProcessJournal, start_shared_writer

SECRET = bytes.fromhex("0b" * 32)
PAN = "4111111111111111"
TIMEOUT = 10


def txn(stan: int, state: str = "sent") -> TxnRecord:
    return TxnRecord(terminal_id="DEMO0001", merchant_id="DEMO00000000001", mti="0200", stan="%06d" % stan,
                     transmission_time="1124065401", processing_code="000000", amount=1000, currency="978",
                     state=state)


# -- sealing --------------------------------------------------------------------------


def test_a_sealed_card_opens_for_its_transaction_under_its_key():
    sealed = cards.seal(SECRET, 7, PAN)
    assert cards.open_sealed(SECRET, 7, sealed) == PAN
    assert sealed[0] == cards.KEY_VERSION and len(sealed) == 1 + 12 + len(PAN) + 16
    assert PAN.encode() not in sealed
    assert cards.seal(SECRET, 7, PAN) != sealed  # a fresh nonce every time


def test_a_sealed_card_does_not_open_for_another_transaction():
    sealed = cards.seal(SECRET, 7, PAN)
    with pytest.raises(cards.SealError) as err:
        cards.open_sealed(SECRET, 8, sealed)  # copied onto another row
    assert PAN not in str(err.value) and "txn 8" in str(err.value)


def test_a_sealed_card_does_not_open_under_another_key_or_version_or_damaged():
    sealed = cards.seal(SECRET, 7, PAN)
    with pytest.raises(cards.SealError):
        cards.open_sealed(bytes.fromhex("0c" * 32), 7, sealed)
    with pytest.raises(cards.SealError):
        cards.open_sealed(SECRET, 7, bytes((2,)) + sealed[1:])  # the version is bound too
    damaged = bytearray(sealed)
    damaged[20] ^= 1
    with pytest.raises(cards.SealError):
        cards.open_sealed(SECRET, 7, bytes(damaged))
    with pytest.raises(cards.SealError):
        cards.open_sealed(SECRET, 7, PAN.encode())


def test_the_card_key_is_derived_apart_from_the_pan_hash_and_digest_keys():
    key = cards.card_key(SECRET)
    assert len(key) == 32 and key not in (SECRET, pan_key(SECRET), digest_key(SECRET))


def test_only_sealed_output_passes_the_journals_check():
    cards.check_sealed(7, cards.seal(SECRET, 7, PAN))
    for bad in (PAN, PAN.encode(), bytes((1,)) + b"\0" * 12 + PAN.encode() + b"\0" * 16, b""):
        with pytest.raises(ValueError) as err:
            cards.check_sealed(7, bad)
        assert PAN not in str(err.value)


# -- every journal backend ---------------------------------------------------------------


@pytest.fixture(params=["thread", "process", "shared"])
def backend(request, tmp_path):
    path = tmp_path / "j.sqlite"
    url = f"sqlite://{path}"
    if request.param == "shared":
        proc, sock = start_shared_writer(tempfile.mkdtemp(dir=tmp_path))
        control = ProcessJournal(url, hmac_key=SECRET, connect=sock, control=True)
        j = ProcessJournal(url, hmac_key=SECRET, connect=sock)
        yield j, path
        j.close()
        control.close()
        proc.wait(TIMEOUT)
        return
    j = open_journal(url, hmac_key=SECRET, writer=request.param)
    yield j, path
    j.close()


def test_the_card_is_kept_read_back_and_goes_with_the_end_of_the_reversal(backend):
    j, _ = backend
    rec, _ = j.insert(txn(1)).result(TIMEOUT)
    assert j.reversal_card(rec.id).result(TIMEOUT) is None
    j.keep_reversal_card(rec.id, cards.seal(SECRET, rec.id, PAN)).result(TIMEOUT)
    j.update(rec.id, state="reversal_pending").result(TIMEOUT)
    assert cards.open_sealed(SECRET, rec.id, j.reversal_card(rec.id).result(TIMEOUT)) == PAN
    with pytest.raises(StaleState):  # not in that state: nothing written, the card stays
        j.end_reversal(rec.id, "sent", state="reversed").result(TIMEOUT)
    assert j.reversal_card(rec.id).result(TIMEOUT) is not None
    done = j.end_reversal(rec.id, "reversal_pending", state="reversed").result(TIMEOUT)
    assert done.state == "reversed" and j.get(rec.id).result(TIMEOUT).state == "reversed"
    assert j.reversal_card(rec.id).result(TIMEOUT) is None


def test_an_unmatched_reversal_keeps_its_card_for_a_late_approval_until_card_retention(backend):
    # The host said it knows no such original; its late approval reopens the reversal
    # (switch.core.late_answers), whose 0420 must repeat field 2 as every try before did.
    j, path = backend
    rec, _ = j.insert(txn(1)).result(TIMEOUT)
    j.keep_reversal_card(rec.id, cards.seal(SECRET, rec.id, PAN)).result(TIMEOUT)
    j.update(rec.id, state="reversal_pending").result(TIMEOUT)
    j.end_reversal(rec.id, "reversal_pending", state="unmatched").result(TIMEOUT)
    assert cards.open_sealed(SECRET, rec.id, j.reversal_card(rec.id).result(TIMEOUT)) == PAN
    assert j.purge_reversal_cards().result(TIMEOUT) == 0  # a start-up keeps it too
    kept_at = sqlite3.connect(path).execute("SELECT created_at FROM reversal_card").fetchone()[0]
    j.forget_cards(kept_at).result(TIMEOUT)  # kept since then: not past card_retention yet
    assert j.reversal_card(rec.id).result(TIMEOUT) is not None
    assert j.forget_cards(kept_at + 1).result(TIMEOUT) == 1
    assert j.reversal_card(rec.id).result(TIMEOUT) is None


def test_a_clear_pan_is_refused(backend):
    j, _ = backend
    rec, _ = j.insert(txn(1)).result(TIMEOUT)
    for bad in (PAN, PAN.encode()):
        with pytest.raises(ValueError) as err:
            j.keep_reversal_card(rec.id, bad).result(TIMEOUT)
        assert PAN not in str(err.value)
    assert j.reversal_card(rec.id).result(TIMEOUT) is None


def test_start_up_purges_the_cards_of_reversals_no_longer_pending(backend):
    j, _ = backend
    ids = {}
    for stan, state in enumerate(("reversal_pending", "sent", "reversed", "answered", "unmatched"), 1):
        rec, _ = j.insert(txn(stan)).result(TIMEOUT)
        j.keep_reversal_card(rec.id, cards.seal(SECRET, rec.id, PAN)).result(TIMEOUT)
        j.update(rec.id, state=state).result(TIMEOUT)
        ids[state] = rec.id
    assert j.purge_reversal_cards().result(TIMEOUT) == 2
    # Pending ones keep theirs; so do "sent" ones (sealed before the update
    # that queues the reversal; start-up recovery queues it), and unmatched
    # ones (a late approval reopens them).
    kept = {state for state, i in ids.items() if j.reversal_card(i).result(TIMEOUT) is not None}
    assert kept == {"reversal_pending", "sent", "unmatched"}
    assert j.purge_reversal_cards().result(TIMEOUT) == 0


def test_no_clear_pan_in_the_journal_files(backend):
    j, path = backend
    for stan in range(1, 21):
        rec, _ = j.insert(txn(stan)).result(TIMEOUT)
        j.keep_reversal_card(rec.id, cards.seal(SECRET, rec.id, PAN)).result(TIMEOUT)
        j.update(rec.id, state="reversal_pending").result(TIMEOUT)
    digits = PAN.encode()
    files = [path, path.with_name(path.name + "-wal")]
    assert any(f.exists() and f.stat().st_size for f in files)
    for f in files:
        if f.exists():
            assert digits not in f.read_bytes(), f.name
    assert sqlite3.connect(path).execute("SELECT count(*) FROM reversal_card").fetchone() == (20,)


def test_the_shared_writer_forgets_the_owner_of_a_reversal_that_ended(tmp_path):
    from switch.journal.shared import Ownership

    rec = txn(1)
    rec.id = 5
    owners = Ownership()
    owners.saw(1, "update", rec)
    rec.state = "reversed"
    owners.saw(1, "end_reversal", rec)
    assert owners.owner == {} and owners.left(1) == []



# -- the reversal sender (service harness) ------------------------------------------------

from tests.test_edges import run  # noqa: E402
from tests.test_service import (  # noqa: E402
    KEY_ENV, KEY_HEX, VISA, FakeAcquirer, call, fakes, journal, request, reversal, wait_state,
)


@pytest.fixture
def service_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


def field_2(rev) -> str | None:
    from adapters.card.messages import reversal_fields

    return reversal_fields(rev, stan=rev.host_stan, f7=rev.host_time, acquirer_id="123456").get(2)


def test_after_a_restart_the_0420_carries_field_2_opened_from_the_journal(tmp_path, service_key, caplog):
    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    refusing = FakeAcquirer("bank-a", answer="timeout", reverse_failures=10**6)

    async def before(sw):
        assert (await call(sw, request()))[39] == "68"  # an uncertain approval: queued for reversal
        rec = await wait_state(sw, "000001", "reversal_pending")
        while not refusing.reversed:
            await asyncio.sleep(0.01)
        assert field_2(refusing.reversed[0][0]) == VISA  # the memory copy
        return rec

    rec = run(before, acquirers=fakes(**{"bank-a": refusing}), journal_url=url)
    for f in (tmp_path / "j.sqlite", tmp_path / "j.sqlite-wal"):
        if f.exists():
            assert VISA.encode() not in f.read_bytes(), f.name
    assert sqlite3.connect(tmp_path / "j.sqlite").execute(
        "SELECT txn_id FROM reversal_card").fetchall() == [(rec.id,)]

    bank_a = FakeAcquirer("bank-a")

    async def after(sw):
        assert not sw.engine.reversals.pans  # a fresh process: nothing in memory
        done = await wait_state(sw, "000001", "reversed")
        assert await journal(sw, sw.journal.reversal_card(done.id)) is None  # gone with the reversal
        return done

    run(after, acquirers=fakes(**{"bank-a": bank_a}), journal_url=url)
    (rev, _), = bank_a.reversed
    assert rev.original.txn_id == rec.id and rev.attempt > 0
    assert field_2(rev) == VISA and rev.original.pan == VISA
    assert sqlite3.connect(tmp_path / "j.sqlite").execute("SELECT count(*) FROM reversal_card").fetchone() == (0,)
    assert VISA not in caplog.text


def test_a_sender_that_did_not_queue_the_reversal_opens_its_card_from_the_journal(service_key):
    bank_a = FakeAcquirer("bank-a", answer="timeout", reverse_failures=1)

    async def scenario(sw):
        queue = sw.engine.reversals
        real = queue.queued

        def queued_elsewhere(txn_id, pan, trigger):
            real(txn_id, pan, trigger)
            queue.pans.clear()  # as if another worker had queued it

        queue.queued = queued_elsewhere
        assert (await call(sw, request()))[39] == "68"
        done = await wait_state(sw, "000001", "reversed")
        assert await journal(sw, sw.journal.reversal_card(done.id)) is None
        assert not queue.pans  # dropped when the reversal ended

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))
    assert [field_2(r) for r, _ in bank_a.reversed] == [VISA, VISA]  # 0420, then 0421 from memory
    assert [r.attempt for r, _ in bank_a.reversed] == [0, 1]


def test_a_card_that_does_not_open_sends_the_reversal_without_field_2_and_says_so(service_key, caplog, monkeypatch):
    bank_a = FakeAcquirer("bank-a", answer="timeout")
    seal = cards.seal
    # Sealed under another secret, as if the journal secret had changed since.
    monkeypatch.setattr(cards, "seal", lambda secret, txn_id, pan: seal(bytes.fromhex("0c" * 32), txn_id, pan))

    async def scenario(sw):
        queue = sw.engine.reversals
        real = queue.queued
        queue.queued = lambda txn_id, pan, trigger: real(txn_id, None, trigger)  # nothing in memory
        assert (await call(sw, request()))[39] == "68"
        await wait_state(sw, "000001", "reversed")

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))
    (rev, _), = bank_a.reversed
    assert field_2(rev) is None
    assert "does not open" in caplog.text and VISA not in caplog.text


def test_a_terminal_0400_with_the_original_card_keeps_it_sealed_for_field_2_after_a_restart(tmp_path, service_key):
    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    refusing = FakeAcquirer("bank-a", reverse_failures=10**6)

    async def before(sw):
        assert (await call(sw, request()))[39] == "00"  # answered: its card is in no memory any more
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"  # the 0400 carries field 2
        return await wait_state(sw, "000001", "reversal_pending")

    rec = run(before, acquirers=fakes(**{"bank-a": refusing}), journal_url=url)
    assert sqlite3.connect(tmp_path / "j.sqlite").execute(
        "SELECT txn_id FROM reversal_card").fetchall() == [(rec.id,)]

    bank_a = FakeAcquirer("bank-a")

    async def after(sw):
        return await wait_state(sw, "000001", "reversed")

    run(after, acquirers=fakes(**{"bank-a": bank_a}), journal_url=url)
    (rev, _), = bank_a.reversed
    assert rev.original.txn_id == rec.id and field_2(rev) == VISA


@pytest.mark.parametrize("retention, sent_card", [("0", None), ("86400", VISA)])
def test_a_terminal_0400_with_another_card_is_not_the_originals_field_2(service_key, caplog, retention, sent_card):
    """The 0400's card is not taken; the original's own, kept with its approval (card_retention), is."""
    other = "5555555555554444"  # passes the Luhn check, another card
    bank_a = FakeAcquirer("bank-a")

    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        assert (await call(sw, reversal("000002", "000001", pan=other)))[39] == "00"
        rec = await wait_state(sw, "000001", "reversed")
        assert await journal(sw, sw.journal.reversal_card(rec.id)) is None

    with caplog.at_level(logging.INFO, logger="payswitch"):
        run(scenario, acquirers=fakes(**{"bank-a": bank_a}), tweak=f"card_retention = {retention}")
    (rev, _), = bank_a.reversed
    assert field_2(rev) == sent_card
    assert "not its original's" in caplog.text and other not in caplog.text and VISA not in caplog.text


# -- a payment's card while it is at the acquirer -------------------------------------


def test_a_sealed_in_flight_card_opens_only_for_its_request():
    key = ("DEMO0001", "000001", "1124065401")
    sealed = cards.seal_in_flight(SECRET, key, "ab" * 16, PAN)
    cards.check_sealed_form("card_sealed", sealed)
    rec = TxnRecord(**{**msgspec_fields(txn(1)), "content_digest": "ab" * 16, "card_sealed": sealed})
    assert cards.open_in_flight(SECRET, rec) == PAN
    for other in (dict(stan="000002"), dict(content_digest="cd" * 16), dict(terminal_id="DEMO0002")):
        with pytest.raises(cards.SealError) as err:
            cards.open_in_flight(SECRET, TxnRecord(**{**msgspec_fields(rec), **other}))
        assert PAN not in str(err.value)
    with pytest.raises(cards.SealError):
        cards.open_in_flight(bytes.fromhex("0c" * 32), rec)


def msgspec_fields(rec: TxnRecord) -> dict:
    return {f: getattr(rec, f) for f in rec.__struct_fields__}


def test_the_journal_keeps_a_sealed_card_while_the_payment_is_sent_or_approved(backend):
    journal, _path = backend
    sealed = cards.seal_in_flight(SECRET, ("DEMO0001", "000001", "1124065401"), "", PAN)
    with pytest.raises(ValueError, match="card_sealed"):
        journal.insert(msgspec.structs.replace(txn(1), card_sealed=PAN.encode())).result(TIMEOUT)
    with pytest.raises(ValueError, match="card_sealed"):
        journal.insert(msgspec.structs.replace(txn(1), card_sealed=b"\x01" + PAN.encode())).result(TIMEOUT)
    rec, _ = journal.insert(msgspec.structs.replace(txn(1), card_sealed=sealed)).result(TIMEOUT)
    assert journal.get(rec.id).result(TIMEOUT).card_sealed == sealed
    # Anything that does not move it on keeps it; whatever moves it on clears it.
    assert journal.update(rec.id, reversal_attempts=0).result(TIMEOUT).card_sealed == sealed
    assert journal.update(rec.id, state="sent").result(TIMEOUT).card_sealed == sealed
    declined, _ = journal.insert(msgspec.structs.replace(txn(3), card_sealed=sealed)).result(TIMEOUT)
    assert journal.update(declined.id, state="answered", response_code="05").result(TIMEOUT).card_sealed is None
    assert journal.get(declined.id).result(TIMEOUT).card_sealed is None
    # An approval keeps it (card_retention, switch.journal.Journal.forget_cards) unless told otherwise.
    assert journal.update(rec.id, state="answered", response_code="00").result(TIMEOUT).card_sealed == sealed
    assert journal.update(rec.id, state="reversal_pending").result(TIMEOUT).card_sealed is None
    other, _ = journal.insert(msgspec.structs.replace(txn(2), card_sealed=sealed)).result(TIMEOUT)
    assert journal.update_if(other.id, "sent", state="reversal_pending").result(TIMEOUT).card_sealed is None


def test_a_payment_at_the_acquirer_when_the_switch_dies_is_reversed_with_field_2(tmp_path, service_key, caplog):
    """The switch dies while a purchase is at the acquirer: after the restart its 0420 repeats field 2."""
    import shutil

    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    copy = tmp_path / "crashed"
    copy.mkdir()
    hanging = FakeAcquirer("bank-a", gate=asyncio.Event())

    async def before(sw):
        task = asyncio.create_task(call(sw, request()))
        await hanging.entered.wait()
        rec = await wait_state(sw, "000001", "sent")
        assert rec.card_sealed is not None
        # The files as they are now, with the payment at the acquirer: what a kill -9 leaves.
        for name in ("j.sqlite", "j.sqlite-wal"):
            if (tmp_path / name).exists():
                shutil.copy(tmp_path / name, copy / name)
        hanging.gate.set()
        await task
        return rec

    rec = run(before, acquirers=fakes(**{"bank-a": hanging}), journal_url=url)
    for f in copy.iterdir():
        assert VISA.encode() not in f.read_bytes(), f.name

    bank_a = FakeAcquirer("bank-a")

    async def after(sw):
        done = await wait_state(sw, "000001", "reversed")
        assert done.card_sealed is None
        return done

    run(after, acquirers=fakes(**{"bank-a": bank_a}), journal_url=f"sqlite://{copy / 'j.sqlite'}")
    (rev, _), = bank_a.reversed
    assert rev.original.txn_id == rec.id
    assert field_2(rev) == VISA and rev.original.pan == VISA
    assert VISA not in caplog.text
    assert sqlite3.connect(copy / "j.sqlite").execute(
        "SELECT count(*) FROM txn WHERE card_sealed IS NOT NULL").fetchone() == (0,)


def test_after_a_restart_the_reversal_of_a_partial_approval_carries_the_amount_approved(tmp_path, service_key):
    # The host approved 1250 of the 2500 requested: the terminal gets 51 and the
    # reversal, sent by the next process from the journal, reverses the 1250 the
    # host holds (a strict host refuses another amount), not the journal's 2500.
    from adapters.card.messages import acquirer_ref, reversal_fields
    from switch.core.acquirer import Result

    url = f"sqlite://{tmp_path / 'j.sqlite'}"
    partial = Result(response_code="51", uncertain=True, acquirer_code="10", acquirer_reason="10: 1250 of 2500",
                     acquirer_ref=acquirer_ref("000777", "1124065401", "331822000001", "10", 1250))
    refusing = FakeAcquirer("bank-a", answer=partial, reverse_failures=10**6)

    async def before(sw):
        assert (await call(sw, request()))[39] == "51"
        rec = await wait_state(sw, "000001", "reversal_pending")
        while not refusing.reversed:
            await asyncio.sleep(0.01)
        return rec

    rec = run(before, acquirers=fakes(**{"bank-a": refusing}), journal_url=url)
    assert rec.amount == 2500
    bank_a = FakeAcquirer("bank-a")
    run(lambda sw: wait_state(sw, "000001", "reversed"), acquirers=fakes(**{"bank-a": bank_a}), journal_url=url)
    (rev, _), = bank_a.reversed
    assert rev.original.txn_id == rec.id and rev.attempt > 0
    msg = reversal_fields(rev, stan=rev.host_stan, f7=rev.host_time, acquirer_id="123456")
    assert (msg[4], msg[90][:4]) == ("000000001250", "0200")


def test_the_in_flight_associated_data_is_what_rows_already_sealed_carry():
    """Cards sealed by earlier releases still open: the associated data's bytes stay these."""
    key = ("DEMO0001", "000001", "1124065401")
    assert cards._in_flight_aad(key, "ab" * 16, 1) == b"payswitch in-flight card v1 DEMO0001|000001|1124065401|" + b"ab" * 16
    assert cards._in_flight_aad(key, "", 2) == b"payswitch in-flight card v2 DEMO0001|000001|1124065401|"
    assert cards._in_flight_aad(("T", "1", "2", "x"), "d", 1) == b"payswitch in-flight card v1 T|1|2|x|d"
    assert cards._in_flight_aad(("T\u00e9", "1", "2"), "d", 1) == "payswitch in-flight card v1 T\u00e9|1|2|d".encode()
    with pytest.raises(TypeError):
        cards._in_flight_aad(key, None, 1)
