"""A completion whose answer came late (spec 6.1, "Completions" and "Advices are
delivered, not decided"), against a host that decides like the strict card
simulator (adapters.card.sandbox): the switch answers 68 and reverses the
completion; the terminal sends it again; the host must complete the
pre-authorization exactly once and the terminal must get 00 in the end.
"""
from __future__ import annotations

import asyncio

import pytest

from adapters.card.messages import fields_view, request_fields, reversal_fields
from adapters.card.sandbox import Sandbox
from switch.core import states
from switch.core.acquirer import NOT_FOUND, RETRY, REVERSED, Request, Result
from tests.test_edges import run
from tests.test_service import KEY_ENV, VISA, call, fakes, field90, record, request, wait_state

ACQ = "00000000042"


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "5e" * 32)


class StrictHost:
    """bank-a as the strict simulator decides, behind an adapter.

    ``late``: how many completions are decided at the host (money moves) but
    answered after the switch's deadline.  ``gate``: when set, every reversal
    waits for it before it reaches the host.
    """

    def __init__(self, name: str = "bank-a", *, late: int = 0) -> None:
        self.name = name
        self.sandbox = Sandbox(name)
        self.late = late
        self.gate: asyncio.Event | None = None
        self.seen: list[tuple[str, str]] = []  # (MTI at the host, its answer's field 39)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    async def authorize(self, request: Request, timeout: float) -> Result:
        fields = request_fields(request, stan=request.host_stan, f7=request.host_time, acquirer_id=ACQ)
        out, _ = self.sandbox.handle(fields_view(fields))
        self.seen.append((fields["mti"], out[39]))
        if request.mti == "0220" and self.late:
            self.late -= 1
            await asyncio.sleep(timeout)  # decided at the host; its answer is lost on the way back
            return Result(response_code="68", uncertain=True)
        return Result(response_code=out[39], auth_code=out.get(38))

    async def reverse(self, request: Request, timeout: float) -> str:
        if self.gate is not None:
            await self.gate.wait()
        fields = reversal_fields(request, stan=request.host_stan, f7=request.host_time, acquirer_id=ACQ)
        out, _ = self.sandbox.handle(fields_view(fields))
        self.seen.append((fields["mti"], out[39]))
        return {"00": REVERSED, "25": NOT_FOUND}.get(out[39], RETRY)

    def completions(self) -> list[str]:
        return [code for mti, code in self.seen if mti == "0220"]


def completion(mti: str = "0220", stan: str = "000002", amount: str = "000000002000") -> bytes:
    return request(mti, stan=stan, amount=amount, f90=field90("0100", "000001"))


def scenario_run(host: StrictHost, scenario) -> None:
    run(scenario, acquirers=fakes(**{"bank-a": host}))


@pytest.mark.parametrize("again", ["0220", "0221"])
def test_a_late_completion_is_reversed_and_the_terminals_next_one_completes(again):
    host = StrictHost(late=1)

    async def scenario(sw):
        assert (await call(sw, request("0100", amount="000000002500")))[39] == "00"
        assert (await call(sw, completion()))[39] == "68"
        await wait_state(sw, "000002", states.REVERSED)  # the host took the reversal
        answer = await call(sw, completion(again))  # the terminal delivers its advice again
        assert (answer.mti, answer[39]) == ("0230", "00")
        assert host.completions() == ["00", "00"]  # the late one (reversed), then this one
        assert host.sandbox.balance(VISA) == 2000  # completed once, charged once
        # Completed now: another completion of it is 94 at the switch, never sent.
        assert (await call(sw, completion(stan="000003")))[39] == "94"
        assert host.completions() == ["00", "00"]

    scenario_run(host, scenario)


async def late_completion_held_reversal(sw, host) -> None:
    """A pre-authorization, then its completion answered late (68); the host holds back the
    completion's reversal until ``host.gate`` is set."""
    assert (await call(sw, request("0100", amount="000000002500")))[39] == "00"
    host.gate = asyncio.Event()
    assert (await call(sw, completion()))[39] == "68"


def test_the_next_completion_waits_for_the_reversal_of_the_late_one():
    host = StrictHost(late=1)

    async def scenario(sw):
        await late_completion_held_reversal(sw, host)
        again = asyncio.create_task(call(sw, completion("0221")))
        await asyncio.sleep(0.3)
        assert not again.done() and host.completions() == ["00"]  # not sent before the reversal
        host.gate.set()
        answer = await again
        assert (answer.mti, answer[39]) == ("0230", "00")
        assert [mti for mti, _ in host.seen] == ["0100", "0220", "0420", "0220"]
        assert host.sandbox.balance(VISA) == 2000

    scenario_run(host, scenario)


def test_a_completion_whose_earlier_one_is_still_being_reversed_is_answered_91_unsent():
    host = StrictHost(late=1)

    async def scenario(sw):
        await late_completion_held_reversal(sw, host)
        # Another completion (another STAN) of the same pre-authorization: not
        # forwarded while the host may still hold the first; 91, so the terminal sends it again.
        assert (await call(sw, completion(stan="000003")))[39] == "91"
        assert host.completions() == ["00"]
        host.gate.set()
        await wait_state(sw, "000002", states.REVERSED)
        answer = await call(sw, completion("0221", stan="000003"))
        assert (answer.mti, answer[39]) == ("0230", "00")
        assert host.sandbox.balance(VISA) == 2000
        assert (await record(sw, "000003")).response_code == "00"

    scenario_run(host, scenario)
