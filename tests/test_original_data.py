"""Field 90, the original data elements of an 0400 reversal or an 0220 completion (spec sections 2, 3, 6).

The original's field 7 inside 90 is a transmission date and time like the
request's own: one that no calendar has (month 13, day 32, hour 25) is a
format error, 30, journaled as the switch's own answer and nothing else:
no reversal queued or recorded, nothing completed, nothing sent.
"""
from __future__ import annotations

import pytest

from switch.core import states
from tests.test_service import KEY_ENV, KEY_HEX, T7, call, field90, record, request, reversal, run


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_HEX)


IMPOSSIBLE = ["1332153000", "0612253000", "1306153000"]  # day 32, hour 25, month 13


def _untouched(sw):
    return all(a.authorized == [] and a.reversed == [] for a in sw.acquirers.values())


@pytest.mark.parametrize("bad_t7", IMPOSSIBLE)
def test_an_0400_naming_an_impossible_original_time_is_30_journaled_and_kept_for_retransmission(bad_t7):
    async def scenario(sw):
        resp = await call(sw, reversal("000002", "000001", orig_t7=bad_t7))
        assert (resp.mti, resp[39], resp[11]) == ("0410", "30", "000002") and 38 not in resp
        rec = await record(sw, "000002")
        assert (rec.state, rec.response_code, rec.acquirer, rec.original_id, rec.rrn) == (
            states.REJECTED, "30", None, None, resp[37])
        # Nothing recorded under the key it names (no void original, no late-original 94).
        assert await record(sw, "000001", t7=bad_t7) is None
        # The same 0400 again, and its repeat 0401: the journaled answer, byte for byte.
        assert await call(sw, reversal("000002", "000001", orig_t7=bad_t7)) == resp
        again = await call(sw, request("0401", stan="000002", f90=field90("0200", "000001", bad_t7)))
        assert (again.mti, again[39], again[37]) == ("0410", "30", resp[37])
        assert _untouched(sw)

    run(scenario)


def test_an_0400_with_an_impossible_time_for_an_approved_purchase_reverses_nothing():
    async def scenario(sw):
        assert (await call(sw, request()))[39] == "00"
        bogus = T7[:4] + "25" + T7[6:]  # the purchase's STAN, its field 7 with hour 25
        resp = await call(sw, reversal("000002", "000001", orig_t7=bogus))
        assert (resp.mti, resp[39]) == ("0410", "30")
        assert (await record(sw, "000001")).state == states.ANSWERED
        assert sw.acquirers["bank-a"].reversed == []
        # The right 0400 still reverses it.
        assert (await call(sw, reversal("000003", "000001")))[39] == "00"
        assert (await record(sw, "000003")).original_id == (await record(sw, "000001")).id

    run(scenario)


@pytest.mark.parametrize("bad_t7", IMPOSSIBLE)
def test_an_0220_naming_an_impossible_original_time_is_30_and_completes_nothing(bad_t7):
    async def scenario(sw):
        assert (await call(sw, request("0100")))[39] == "00"
        resp = await call(sw, request("0220", stan="000002", amount="000000002000",
                                      f90=field90("0100", "000001", bad_t7)))
        assert (resp.mti, resp[39]) == ("0230", "30") and 38 not in resp
        rec = await record(sw, "000002")
        assert (rec.state, rec.response_code, rec.acquirer, rec.original_id) == (states.REJECTED, "30", None, None)
        assert len(sw.acquirers["bank-a"].authorized) == 1  # the 0100 alone
        assert await call(sw, request("0221", stan="000002", amount="000000002000",
                                      f90=field90("0100", "000001", bad_t7))) == resp
        # The pre-authorization is still open for a completion that names it.
        done = await call(sw, request("0220", stan="000003", amount="000000002000", f90=field90("0100", "000001")))
        assert (done.mti, done[39]) == ("0230", "00")
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario)
