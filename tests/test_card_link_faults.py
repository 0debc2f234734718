"""HostLinkAcquirer against the strict simulator's faults: a stalled primary (breaker and
failover), an acquirer sign-off, late answers, key changes, switch-assigned STANs."""
from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import pytest

from adapters.card.hostlink import parse_ref
from switch.core.acquirer import NOT_FOUND, REFUSED, REVERSED, Original
from tests.test_card_link import ACQ, Sim, acquirer, purchase, reversal_for, run, until


def test_stalled_primary_trips_its_breaker_and_traffic_fails_over(tmp_path):
    primary = Sim("--stall-after-echo", ledger=tmp_path / "a.jsonl")
    backup = Sim(ledger=tmp_path / "b.jsonl")
    try:
        async def main():
            acq = acquirer(primary.endpoint, backup.endpoint, connections=1,
                           breaker_threshold=2, breaker_cooldown=0.5)
            await acq.start()
            await until(lambda: all(s.usable for s in acq.slots))
            a, b = (f"127.0.0.1:{s.port}" for s in (primary, backup))
            try:
                # the primary signs on and would answer echoes, but lets transactions time out
                for amount in (1001, 1002):
                    r = await acq.authorize(purchase(amount), 0.15)
                    assert r.response_code == "68" and r.uncertain
                assert acq.breaker_states() == {a: "open", b: "closed"}
                assert acq.metrics.get("breaker_trips", endpoint=a) == 1
                assert acq.healthy()  # the backup is there
                ok = await acq.authorize(purchase(2001), 1.0)
                assert ok.response_code == "00"
                # after the cool-down one probe goes to the primary again, times out, re-opens
                await asyncio.sleep(0.55)
                assert acq.breaker_states()[a] == "half-open"
                probe = await acq.authorize(purchase(1003), 0.15)
                assert probe.response_code == "68"
                assert acq.breaker_states()[a] == "open"
                assert acq.metrics.get("breaker_trips", endpoint=a) == 2
                assert (await acq.authorize(purchase(2002), 1.0)).response_code == "00"
            finally:
                await acq.close()
        run(main())
        assert [e["event"] for e in primary.ledger()] == ["ignored"] * 3
        assert [e["amount"] for e in backup.ledger()] == [2001, 2002]
    finally:
        primary.kill()
        backup.kill()


def test_a_lone_stalled_endpoint_with_its_breaker_open_is_not_healthy():
    stalled = Sim("--stall-after-echo")
    try:
        async def main():
            acq = acquirer(stalled.endpoint, connections=1, breaker_threshold=1, breaker_cooldown=30.0)
            await acq.start()
            try:
                assert acq.healthy()
                assert (await acq.authorize(purchase(1000), 0.1)).response_code == "68"
                assert not acq.healthy()
                down = await acq.authorize(purchase(1000), 1.0)
                assert down.response_code == "91" and not down.uncertain  # nothing sent
                assert acq.connection_states() == {f"127.0.0.1:{stalled.port}": {"ready": 1}}
            finally:
                await acq.close()
        run(main())
    finally:
        stalled.kill()


def test_acquirer_sign_off_pauses_the_connection_until_we_sign_on_again(tmp_path):
    sim = Sim("--sign-off-after", "2", ledger=tmp_path / "l.jsonl")
    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, resign_wait=0.4)
            await acq.start()
            try:
                assert (await acq.authorize(purchase(1000), 1.0)).response_code == "00"
                assert (await acq.authorize(purchase(1001), 1.0)).response_code == "00"
                await until(lambda: not acq.healthy(), 1.0)  # the sim signed off after two
                assert acq.connection_states() == {f"127.0.0.1:{sim.port}": {"signed-off": 1}}
                down = await acq.authorize(purchase(1002), 1.0)
                assert down.response_code == "91" and not down.uncertain
                t0 = time.monotonic()
                await until(acq.healthy, 2.0)  # we signed on ourselves after resign_wait
                assert time.monotonic() - t0 > 0.2
                assert (await acq.authorize(purchase(1003), 1.0)).response_code == "00"
                assert acq.metrics.total("reconnects") == 0  # the same connection
            finally:
                await acq.close()
        run(main())
        assert [e["amount"] for e in sim.ledger()] == [1000, 1001, 1003]
    finally:
        sim.kill()


def test_late_answers_are_dropped_and_the_reversal_undoes_the_money(tmp_path):
    late = Sim("--late-ms", "300", "--late-rate", "1.0", ledger=tmp_path / "l.jsonl")
    try:
        async def main():
            acq = acquirer(late.endpoint, connections=1)
            await acq.start()
            try:
                req = purchase(1000)
                result = await acq.authorize(req, 0.1)
                assert result.response_code == "68" and result.uncertain
                await until(lambda: acq.metrics.get("late_answers", mti="0200") == 1)
                assert await acq.reverse(reversal_for(req, result), 2.0) == REVERSED
            finally:
                await acq.close()
        run(main())
        events = late.ledger()
        assert [(e["event"], e["late_ms"], e["delta"]) for e in events] == [
            ("authorization", 300.0, 1000), ("reversal", 300.0, -1000)]
    finally:
        late.kill()


def test_a_late_partial_approval_tells_the_reversal_the_amount_the_host_holds(tmp_path):
    # A strict host reverses only the amount it approved (64 otherwise).  The switch gave up
    # on a purchase the host approved in part (10, half of it in field 4) and answered later:
    # the 2010 requested is refused, but the late answer names the 1005 held, with its 38.
    late = Sim("--bank-codes", "--late-ms", "300", "--late-rate", "1.0", ledger=tmp_path / "l.jsonl")
    try:
        async def main():
            acq = acquirer(late.endpoint, connections=1)
            told = []
            acq.use_late_auth_codes(lambda *args: told.append(args))
            await acq.start()
            try:
                req = purchase(2010)
                result = await acq.authorize(req, 0.1)
                assert result.response_code == "68" and result.uncertain
                first = await acq.reverse(reversal_for(req, result), 2.0)
                # Refused for its amount, which the switch had no answer to know: worth repeating.
                assert first == REFUSED and first.code == "64" and first.held_unknown
                await until(lambda: told)
                [(stan, f7, auth_code, ref, approved)] = told
                assert approved  # a partial approval: money held
                assert (stan, f7) == (parse_ref(result.acquirer_ref).stan, parse_ref(result.acquirer_ref).f7)
                assert parse_ref(ref).approved == 1005 and parse_ref(ref).host_code == "10"
                late_result = msgspec.structs.replace(result, auth_code=auth_code, acquirer_ref=ref)
                assert await acq.reverse(reversal_for(req, late_result), 2.0) == REVERSED
            finally:
                await acq.close()
        run(main())
        held = sum(e["delta"] for e in late.ledger() if e.get("amount") in (2010, 1005))
        assert held == 0
    finally:
        late.kill()


def test_switch_assigned_stans_name_the_original_and_unknown_originals_are_25(tmp_path):
    sim = Sim(ledger=tmp_path / "l.jsonl")
    issued = iter(range(700_000, 800_000))
    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, stan_source=lambda: f"{next(issued):06d}")
            await acq.start()
            try:
                req = purchase(1068, host_stan="123456", host_time="1124120000")  # never answered
                lost = await acq.authorize(req, 0.1)
                assert lost.uncertain and parse_ref(lost.acquirer_ref).stan == "123456"
                # the switch journaled 123456/1124120000 before sending: that is all the reversal needs
                original = Original(txn_id=req.txn_id, mti="0200", processing_code="000000", amount=1068,
                                    currency="840", stan=req.stan, transmission_time=req.transmission_time,
                                    rrn=req.rrn, host_stan="123456", host_time="1124120000", pan=req.pan)
                rev = reversal_for(req, lost)
                rev = msgspec.structs.replace(rev, original=original, host_stan="123457",
                                              host_time="1124120005")
                assert await acq.reverse(rev, 2.0) == REVERSED
                assert await acq.reverse(msgspec.structs.replace(rev, attempt=1), 2.0) == REVERSED
                stranger = msgspec.structs.replace(original, host_stan="654321")
                assert await acq.reverse(msgspec.structs.replace(rev, original=stranger, host_stan="123458"),
                                         2.0) == NOT_FOUND
                assert acq.metrics.get("reversals", mti="0420", response_code="25") == 1
            finally:
                await acq.close()
        run(main())
        events = sim.ledger()
        assert [(e["event"], e.get("mti"), e["stan"], e["f7"], e["response_code"]) for e in events] == [
            ("authorization", "0200", "123456", "1124120000", None),
            ("reversal", "0420", "123457", "1124120005", "00"),
            ("reversal", "0421", "123457", "1124120005", "00"),
            ("reversal", "0420", "123458", "1124120005", "25"),
        ]
        assert next(issued) > 700_000  # sign-on and sign-off took theirs from the switch's source
    finally:
        sim.kill()


# -- key change: a scripted acquirer (the simulator does not send key changes) -----------

async def scripted_acquirer(script):
    """A one-connection peer on asyncio: answers the sign-on, then runs ``script(send, receive)``."""
    from native.framing import Framer
    from native.iso8583 import dialect

    host = dialect("host-87-bcd")
    done = asyncio.get_running_loop().create_future()

    async def serve(reader, writer):
        framer = Framer("binary2", max_frame=8192)
        queue: list = []

        async def receive():
            while not queue:
                queue.extend(host.decode(p) for p in framer.feed(await reader.read(65536)))
            return queue.pop(0)

        def send(fields):
            writer.write(framer.encode(host.encode(fields)))

        try:
            sign_on = await receive()
            send({"mti": "0810", 7: sign_on[7], 11: sign_on[11], 70: "001", 39: "00"})
            done.set_result(await script(send, receive))
        except Exception as exc:  # surfaced by the test
            if not done.done():
                done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], done


KEY = "0123456789ABCDEF0123456789ABCDEF"


async def key_change_exchange(send, receive):
    send({"mti": "0800", 7: "1124120000", 11: "900001", 70: "101", 48: KEY, 53: "0000000000000001"})
    while True:
        answer = await receive()
        if answer.mti == "0810" and answer[11] == "900001":
            return dict(answer.fields())


@pytest.mark.parametrize("handler,rc", [
    (None, "96"),
    (lambda endpoint, fields: fields[48] == KEY and fields[70] == "101", "00"),
    (lambda endpoint, fields: False, "96"),
    (lambda endpoint, fields: 1 / 0, "96"),
    (lambda endpoint, fields: asyncio.sleep(0, True), "96"),  # an awaitable is not a verdict
    (lambda endpoint, fields: "yes", "96"),  # nor is anything but True
])
def test_key_change_goes_to_the_owner_and_is_answered_by_its_verdict(handler, rc, caplog):
    seen = []

    def record(endpoint, fields):
        seen.append(endpoint)
        return handler(endpoint, fields)

    async def main():
        server, port, done = await scripted_acquirer(key_change_exchange)
        acq = acquirer(("127.0.0.1", port), connections=1,
                       on_key_change=None if handler is None else record)
        try:
            await acq.start()
            answer = await asyncio.wait_for(done, 3.0)
        finally:
            await acq.close()
            server.close()
        return answer

    with caplog.at_level(logging.INFO, logger="payswitch.card"):
        answer = run(main())
    assert answer[39] == rc and answer[70] == "101" and 48 not in answer
    if handler is not None:
        assert seen and seen[0].startswith("127.0.0.1:")
    assert "key change" in caplog.text
    assert KEY not in caplog.text and "0000000000000001" not in caplog.text


def test_approved_minus_reversed_equals_the_acquirers_ledger(tmp_path):
    """A faulty strict acquirer, switch-assigned STANs, and a reversal loop as the
    switch runs it (0420, then 0421 repeats with the same STAN and field 7 until
    REVERSED; NOT_FOUND a few times means the original never arrived): what the
    switch counts as approved equals what the acquirer's ledger holds for the card."""
    from adapters.card.card_names import ledger_key, use_key
    from adapters.card.sim import card_key, ledger_balances

    sim = Sim("--drop-rate", "0.2", "--disconnect-rate", "0.03", "--garbage-rate", "0.02",
              ledger=tmp_path / "l.jsonl")
    stans = iter(range(100_000, 200_000))
    f7 = "1124120000"

    def next_stan() -> str:
        return f"{next(stans):06d}"

    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=2, stan_source=next_stan, breaker_threshold=10_000)
            await acq.start()
            held = 0
            outcomes = {"REVERSED": 0, "NOT_FOUND": 0, "uncertain": 0}
            try:
                for i in range(40):
                    amount = 1000 + 100 * i + (51 if i % 7 == 3 else 0)  # some declines (51)
                    req = purchase(amount, host_stan=next_stan(), host_time=f7)
                    await until(acq.healthy, 3.0)
                    result = await acq.authorize(req, 0.3)
                    if not result.uncertain:
                        held += amount if result.response_code == "00" else 0
                        continue
                    outcomes["uncertain"] += 1
                    original = Original(txn_id=req.txn_id, mti="0200", processing_code="000000",
                                        amount=amount, currency="840", stan=req.stan,
                                        transmission_time=req.transmission_time, rrn=req.rrn,
                                        host_stan=req.host_stan, host_time=f7, pan=req.pan)
                    rev = msgspec.structs.replace(reversal_for(req, result), original=original,
                                                  host_stan=next_stan(), host_time=f7)
                    not_found = 0
                    for attempt in range(40):
                        await until(acq.healthy, 3.0)
                        answer = await acq.reverse(msgspec.structs.replace(rev, attempt=attempt), 0.3)
                        if answer == REVERSED:
                            outcomes["REVERSED"] += 1
                            break
                        if answer == NOT_FOUND:
                            not_found += 1
                            if not_found == 3:
                                outcomes["NOT_FOUND"] += 1
                                break
                    else:
                        raise AssertionError(f"reversal of txn {req.txn_id} never acknowledged")
            finally:
                await acq.close()
            return held, outcomes

        held, outcomes = run(main())
        events = sim.ledger()
        assert outcomes["uncertain"] >= 5, outcomes  # the faults bit
        use_key(ledger_key(str(tmp_path / "l.jsonl")))  # the simulator's names: HMAC under its ledger's key
        try:
            assert ledger_balances(events) == {card_key("4761739001010119"): held}
        finally:
            use_key(None)
        # every reversal advice after the first for an original moved nothing
        assert sum(e["delta"] for e in events if e["event"] == "reversal" and e["repeat"]) == 0
        assert {e["mti"] for e in events if e["event"] == "reversal"} <= {"0420", "0421"}
    finally:
        sim.kill()


def test_a_link_closes_without_its_sign_off_when_the_switch_has_no_stan_left(tmp_path, caplog):
    """The switch's STAN source raises once the blocks it holds are used up
    (switch.core.host_stans): closing the link still closes every connection."""
    sim = Sim(ledger=tmp_path / "l.jsonl")
    issued = iter(["700001"])

    def stan_source() -> str:
        stan = next(issued, None)
        if stan is None:
            raise RuntimeError("bank-a: no host STAN left in the blocks reserved")
        return stan

    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, stan_source=stan_source)
            await acq.start()
            assert acq.healthy()  # signed on under 700001
            await acq.close()
            assert all(slot.transport is None or slot.transport.is_closing() for slot in acq.slots)
        with caplog.at_level(logging.WARNING, logger="payswitch.card"):  # whatever "payswitch" is set to
            run(main())
        assert "without a sign-off" in caplog.text and "no host STAN left" in caplog.text
    finally:
        sim.kill()
