"""A city-card offline upload sent again under a new STAN (spec 4.1, section 3 0220) on the service harness.

The terminal that got no answer to its 0220 uploads the same offline debit
again under a new key (41, 11, 7): not a retransmission.  The clearing
centre (``adapters.citycard.centre.Centre``, driven in-process through the
adapter's own mapping) de-duplicates on (card, counter) and answers 00 with
the first booking's authorization code; the switch must count it once in
the 0500 totals and call the after-approval services once.  Runs with both
journal writers (``PAYSWITCH_JOURNAL_WRITER=process``).
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3

import msgspec
import pytest

from adapters.citycard import crypto
from adapters.citycard.centre import DEMO_MK, Centre
from adapters.citycard.mapping import Refusal, build_message, original_ref, to_result
from adapters.citycard.protocol import Reverse
from native.iso8583 import build_tlv48
from switch.core.acquirer import Result
from switch.journal.uploads import upload_key
from tests import test_service as ts
from tests.test_journal_shared import shared  # noqa: F401 (fixture)
from tests.test_journal_shared import txn as shared_txn
from tests.test_service import TID, call, fakes, record, request
from tests.test_vas import SEEN, Plugin, outbox, plugin_registered, run  # noqa: F401  (autouse fixture)

CITY = """
[[acquirers]]
name = "city"
type = "citycard"
endpoints = ["127.0.0.1:5"]
timeout = 0.5

[[routes]]
name = "city"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["city"]
"""
CARD = "8800123456789015"


class CentreAcquirer:
    """The simulator's centre behind the adapter's mapping, without a socket; ``gate`` holds answers."""

    def __init__(self, name: str = "city", gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.centre = Centre()
        self.gate = gate
        self.calls = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    async def authorize(self, request, timeout: float) -> Result:
        try:
            message = build_message(request)
        except Refusal as refusal:
            return Result(response_code=refusal.code)
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return to_result(message, self.centre.handle(message))

    async def reverse(self, request, timeout: float) -> bool:
        if request.original is not None:
            self.centre.handle(Reverse(id=0, ref=original_ref(request.original)))
        return True


def upload(stan: str, counter: int, amount: int, card: str = CARD, mti: str = "0220") -> bytes:
    """A 0220 offline debit upload (field 48 CC with the card's TAC, spec 4.1); ``mti`` 0200: the online debit."""
    counter5, serial, amount12 = "%05d" % counter, "0000000001", "%012d" % amount
    tac = crypto.tac(crypto.derive_dk(DEMO_MK, card), card, counter5, amount12, serial, TID)
    cc = f"{counter5}{10000:012d}{serial}{tac}"
    return request(mti, stan=stan, pan=card, amount=amount12, f22="071", f48=build_tlv48({"CC": cc}))


def after_calls() -> list[str]:
    return [p["ref"] for moment, p in SEEN if moment == "after"]


def points(p):
    return {"line": f"+{p['amount'] // 100} PTS"}


def test_an_upload_sent_again_under_a_new_stan_is_approved_counted_once_and_earns_points_once():
    Plugin.behaviour = {"after": points}
    centre = CentreAcquirer()

    async def scenario(sw):
        first = await call(sw, upload("000001", 3, 1200))
        assert first.mti == "0230" and first[39] == "00"
        again = await call(sw, upload("000002", 3, 1200))  # no answer reached the terminal: new STAN
        # The terminal must stop uploading: 00, with the authorization code of the booking.
        assert again[39] == "00" and again[38] == first[38]
        assert centre.calls == 2 and centre.centre.debits == 1200  # the centre booked it once
        assert after_calls() == [first[37]]  # points once, for the booking
        # Section 3 0500: the terminal counts the offline debit once, and so does the switch.
        settled = await call(sw, ts.settlement("000003", debits=1, debit_amount=1200))
        assert settled[39] == "00"
        # Both uploads are journaled; the second names the first as the one that counts.
        one, two = await record(sw, "000001"), await record(sw, "000002")
        assert one.response_code == two.response_code == "00"
        assert one.upload_of == one.id and two.upload_of == one.id
        assert one.upload_key == two.upload_key and CARD not in one.upload_key

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


@pytest.mark.skipif(ts.JOURNAL_WRITER != "thread", reason="reads the in-memory journal on its writer thread")
def test_the_event_stream_calls_the_upload_sent_again_a_duplicate():
    async def scenario(sw):
        first = await call(sw, upload("000001", 5, 900))
        again = await call(sw, upload("000002", 5, 900))
        events = [(e["rrn"], e["event"]) for e in await outbox(sw) if e["mti"] == "0220"]
        assert events == [(first[37], "approved"), (again[37], "duplicate")]

    run(scenario, acquirers=fakes(city=CentreAcquirer()), extra=CITY)


def test_same_card_and_counter_with_other_content_stays_94_and_counts_nothing():
    Plugin.behaviour = {"after": points}

    async def scenario(sw):
        assert (await call(sw, upload("000001", 3, 1200)))[39] == "00"
        other = await call(sw, upload("000002", 3, 1300))  # same counter, another amount: the centre's 94
        assert other[39] == "94"
        assert len(after_calls()) == 1
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=1200)))[39] == "00"

    run(scenario, acquirers=fakes(city=CentreAcquirer()), extra=CITY)


def test_an_upload_of_a_debit_approved_online_counts_once():
    # The terminal got no answer to its online debit (the switch's 00 was lost on
    # the way) and uploads the card's record of it: the centre books the card and
    # counter once and answers 00 with the debit's authorization code.
    Plugin.behaviour = {"after": points}
    centre = CentreAcquirer()

    async def scenario(sw):
        online = await call(sw, upload("000001", 4, 700, mti="0200"))
        assert online[39] == "00"
        again = await call(sw, upload("000002", 4, 700))
        assert again.mti == "0230" and again[39] == "00" and again[38] == online[38]
        assert centre.centre.debits == 700
        assert after_calls() == [online[37]]
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=700)))[39] == "00"
        debit = await record(sw, "000001")
        assert debit.upload_of is None and debit.upload_key == (await record(sw, "000002")).upload_key
        assert (await record(sw, "000002")).upload_of == debit.id

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_of_an_online_debit_since_reversed_counts():
    async def scenario(sw):
        assert (await call(sw, upload("000001", 6, 700, mti="0200")))[39] == "00"
        assert (await call(sw, ts.reversal("000002", "000001")))[39] == "00"
        for _ in range(200):  # the reversal reaches the centre in the background
            if (await record(sw, "000001")).state == "reversed":
                break
            await asyncio.sleep(0.01)
        assert (await call(sw, upload("000003", 6, 700)))[39] == "00"  # booked again by the centre
        assert (await call(sw, ts.settlement("000004", debits=1, debit_amount=700)))[39] == "00"

    run(scenario, acquirers=fakes(city=CentreAcquirer()), extra=CITY)


def test_a_debit_reversed_after_its_upload_counted_as_its_duplicate_hands_the_count_to_the_upload():
    # The online debit's 00 never reached the terminal: the card's upload of it is
    # its duplicate (00, the debit's field 38; the terminal, still unanswered, uploads
    # once more under a new STAN), then the terminal reverses the 0200 (section 6).
    # The centre keeps a debit the card uploaded (it paid) and answers that reversal
    # 00: the upload counts instead, so the 0500 totals are the centre's.
    centre = CentreAcquirer()

    async def scenario(sw):
        online = await call(sw, upload("000001", 12, 900, mti="0200"))
        assert online[39] == "00"
        first = await call(sw, upload("000002", 12, 900))
        again = await call(sw, upload("000003", 12, 900))
        assert first[39] == again[39] == "00" and first[38] == again[38] == online[38]
        assert (await call(sw, ts.reversal("000004", "000001")))[39] == "00"
        await ts.wait_state(sw, "000001", "reversed")  # the centre answered the reversal
        assert centre.centre.debits == 900 and centre.centre.conserved()  # the booking stands
        assert (await call(sw, ts.settlement("000005", debits=1, debit_amount=900)))[39] == "00"
        one, two = await record(sw, "000002"), await record(sw, "000003")
        assert one.upload_of == one.id and two.upload_of == one.id  # the first upload counts, once

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_two_uploads_of_one_debit_at_the_centre_together_count_once():
    Plugin.behaviour = {"after": points}
    gate = asyncio.Event()
    centre = CentreAcquirer(gate=gate)

    async def scenario(sw):
        first = asyncio.ensure_future(call(sw, upload("000001", 7, 800)))
        again = asyncio.ensure_future(call(sw, upload("000002", 7, 800)))
        while centre.calls < 2:  # both at the centre before either is answered
            await asyncio.sleep(0.005)
        gate.set()
        a, b = await first, await again
        assert a[39] == b[39] == "00" and a[38] == b[38]
        assert len(after_calls()) == 1
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=800)))[39] == "00"

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


class HeldDebits(CentreAcquirer):
    """The centre books every request as it comes; its answer to an online debit (0200) waits for ``gate``."""

    async def authorize(self, request, timeout: float) -> Result:
        message = build_message(request)
        self.calls += 1
        response = self.centre.handle(message)
        if request.mti == "0200":
            await self.gate.wait()
        return to_result(message, response)


def release_after_first_claim(sw, gate: asyncio.Event) -> None:
    """Open ``gate`` once the journal has done the first claim of an upload (whatever it decided)."""
    claim, loop = sw.journal.claim_upload, asyncio.get_running_loop()

    def claiming(txn_id):
        fut = claim(txn_id)
        fut.add_done_callback(lambda _: loop.call_soon_threadsafe(gate.set))
        return fut

    sw.journal.claim_upload = claiming


def test_a_debit_and_its_upload_answered_together_count_once():
    # The online debit is booked at the centre, its answer on the way; the terminal's
    # upload of it is booked once (the centre's 00 with the debit's authorization
    # code) and answered first.  Neither is journaled as decided when the upload's
    # claim runs: the journal still counts the card and counter once.
    Plugin.behaviour = {"after": points}
    gate = asyncio.Event()
    centre = HeldDebits(gate=gate)

    async def scenario(sw):
        release_after_first_claim(sw, gate)
        debit = asyncio.ensure_future(call(sw, upload("000001", 8, 500, mti="0200")))
        while centre.calls < 1:
            await asyncio.sleep(0.005)
        again = await call(sw, upload("000002", 8, 500))
        online = await debit
        assert online[39] == again[39] == "00" and again[38] == online[38]
        assert centre.centre.debits == 500
        assert after_calls() == [online[37]]  # points once, for the debit
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=500)))[39] == "00"
        first, dup = await record(sw, "000001"), await record(sw, "000002")
        assert first.upload_of is None and dup.upload_of == first.id

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_answered_while_its_debit_is_declined_counts_once():
    # The other order at the centre: the upload is booked and the online debit of
    # the same counter refused (94); the upload, answered while the debit is still
    # undecided in the journal, is the one that counts.
    Plugin.behaviour = {"after": points}
    gate = asyncio.Event()
    centre = HeldDebits(gate=gate)

    async def scenario(sw):
        release_after_first_claim(sw, gate)
        booked = asyncio.ensure_future(call(sw, upload("000001", 9, 400)))
        while centre.calls < 1:
            await asyncio.sleep(0.005)
        debit = asyncio.ensure_future(call(sw, upload("000002", 9, 400, mti="0200")))
        again, online = await booked, await debit
        assert again[39] == "00" and online[39] == "94"
        assert centre.centre.debits == 400
        assert after_calls() == [again[37]]
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=400)))[39] == "00"
        assert (await record(sw, "000001")).upload_of == (await record(sw, "000001")).id

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_whose_online_debit_stays_undecided_is_96_and_counts_when_sent_again():
    # Another worker took the online debit to the centre and died with it: the journal
    # holds it "sent" until recovery reverses it.  Which of the two counts cannot be
    # decided before the upload's deadline: 96, counted nowhere.  Sent again once the
    # debit is reversed, the upload counts.
    from switch.journal import TxnRecord

    Plugin.behaviour = {"after": points}
    centre = CentreAcquirer()

    async def scenario(sw):
        stuck = TxnRecord(terminal_id=TID, merchant_id=ts.MERCHANT, mti="0200", stan="000009",
                          transmission_time=ts.T7, processing_code="000000", amount=300, kind="citycard",
                          acquirer="city", state="sent",
                          upload_key=upload_key(CARD, "00011", bytes.fromhex(ts.KEY_HEX)))
        debit, _ = await ts.journal(sw, sw.journal.insert(stuck))
        assert (await call(sw, upload("000001", 11, 300)))[39] == "96"
        assert after_calls() == [] and (await record(sw, "000001")).upload_of is None
        await ts.journal(sw, sw.journal.update(debit.id, state="reversal_pending"))  # as recovery does
        again = await call(sw, upload("000002", 11, 300))
        assert again[39] == "00" and centre.centre.debits == 300
        assert after_calls() == [again[37]]
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=300)))[39] == "00"

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_whose_online_debit_stays_undecided_is_an_outcome_not_a_journal_failure(caplog):
    # The journal works: the 96 is the upload's own answer, journaled as any.  One
    # WARNING (no "Journal failing" ERROR), the record's RRN, counted as a city-card
    # request.  Its retransmission (same 41, 11, 7) is forwarded again (an advice
    # answered 96 was not confirmed, section 6.1) and, the debit reversed since by
    # recovery, counts.
    from switch.journal import TxnRecord

    centre = CentreAcquirer()

    async def scenario(sw):
        stuck = TxnRecord(terminal_id=TID, merchant_id=ts.MERCHANT, mti="0200", stan="000009",
                          transmission_time=ts.T7, processing_code="000000", amount=300, kind="citycard",
                          acquirer="city", state="sent",
                          upload_key=upload_key(CARD, "00013", bytes.fromhex(ts.KEY_HEX)))
        debit, _ = await ts.journal(sw, sw.journal.insert(stuck))
        body = upload("000001", 13, 300)
        with caplog.at_level(logging.INFO, logger="payswitch"):
            answer = ts.TERM.decode(await sw.handle(body))
        rec = await record(sw, "000001")
        assert answer[39] == "96" and answer[37] == rec.rrn and 38 not in answer
        assert rec.state == "answered" and rec.response_code == "96" and rec.upload_of is None
        assert ts.TERM.decode(rec.response).fields() == answer.fields()
        assert ts.sample(sw, "payswitch_requests_total", kind="citycard", mclass="financial", code="96") == 1
        loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(loud) == 1 and loud[0][0] == "WARNING" and rec.rrn in loud[0][1], loud
        await ts.journal(sw, sw.journal.update(debit.id, state="reversal_pending"))  # as recovery does
        again = await call(sw, body)
        assert again[39] == "00" and centre.calls == 2 and again[37] != rec.rrn
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=300)))[39] == "00"

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_the_centre_never_confirmed_counts_when_the_next_upload_is_confirmed():
    # The first upload was booked at the centre but its answer lost (68): it counts
    # nowhere, and the upload sent again is the one that counts.
    Plugin.behaviour = {"after": points}
    centre = CentreAcquirer()
    lost = {"n": 0}
    authorize = centre.authorize

    async def losing(request, timeout):
        result = await authorize(request, timeout)
        lost["n"] += 1
        if lost["n"] == 1:
            return Result(response_code="68", uncertain=True, acquirer_ref=result.acquirer_ref)
        return result

    centre.authorize = losing

    async def scenario(sw):
        assert (await call(sw, upload("000001", 4, 600)))[39] == "68"
        again = await call(sw, upload("000002", 4, 600))
        assert again[39] == "00"
        assert len(after_calls()) == 1
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=600)))[39] == "00"

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def test_an_upload_whose_claim_the_journal_refuses_is_96_and_the_next_upload_counts():
    Plugin.behaviour = {"after": points}

    async def scenario(sw):
        claim = sw.journal.claim_upload
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(OSError("disk full"))
        sw.journal.claim_upload = lambda txn_id: refused
        assert (await call(sw, upload("000001", 6, 700)))[39] == "96"
        sw.journal.claim_upload = claim
        assert (await call(sw, upload("000002", 6, 700)))[39] == "00"
        assert len(after_calls()) == 1
        assert (await call(sw, ts.settlement("000003", debits=1, debit_amount=700)))[39] == "00"

    run(scenario, acquirers=fakes(city=CentreAcquirer()), extra=CITY)


def test_workers_sharing_the_journal_count_a_debit_and_its_upload_once(shared):  # noqa: F811 (fixture)
    # serve --workers: the online debit is at the centre in one worker while its upload
    # is approved in another; the journal they share decides.
    _, _, _, connect = shared
    one, other = connect(), connect()
    for stan, code, counts in ((1, "00", False), (3, "94", True)):
        key = upload_key(CARD, "%05d" % stan, bytes.fromhex(ts.KEY_HEX))
        debit, _ = one.insert(shared_txn(stan, upload_key=key)).result(10)
        offline, _ = other.insert(msgspec.structs.replace(shared_txn(stan + 1, upload_key=key), mti="0220")).result(10)
        waiting = other.claim_upload(offline.id).result(10)
        assert waiting.id == debit.id and waiting.response_code is None  # undecided: ask again
        assert other.get(offline.id).result(10).upload_of is None  # nothing written meanwhile
        one.update(debit.id, state="answered", response_code=code, auth_code="000123").result(10)
        first = other.claim_upload(offline.id).result(10)
        if counts:  # the centre booked the upload and refused the debit: the upload counts
            assert first is None and other.get(offline.id).result(10).upload_of == offline.id
        else:  # the debit counts, the upload is its duplicate
            assert first.id == debit.id and first.auth_code == "000123"
            assert other.get(offline.id).result(10).upload_of == debit.id


def test_upload_key_is_keyed_and_reveals_neither_card_nor_counter():
    key = bytes.fromhex(ts.KEY_HEX)
    made = upload_key(CARD, "00003", key)
    assert made == upload_key(CARD, "00003", key)
    assert made != upload_key(CARD, "00004", key) != upload_key("8800123456789023", "00003", key)
    assert made != upload_key(CARD, "00003", bytes(32))  # keyed: another journal secret, another key
    assert not any(ch.isdigit() for ch in made[2:]) and CARD not in made


def test_an_older_journal_gains_the_upload_columns_and_recount(tmp_path):
    from switch.journal.schema import MIGRATIONS, migrate
    from switch.journal.uploads import MIGRATION

    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT")
        for number, statements in enumerate(MIGRATIONS[:MIGRATIONS.index(MIGRATION)], 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        migrate(conn, path)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(txn)")}
        triggers = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        conn.close()
    assert {"upload_key", "upload_of"} <= columns and "upload_recount" in triggers
