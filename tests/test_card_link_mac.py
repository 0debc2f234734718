"""HostLinkAcquirer with host MACs against the simulated acquirer (``--mac``), software module and HSM."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import msgspec
import pytest

from adapters.card.hostlink import parse_ref
from adapters.card.hostmac import HostMacError
from switch.io.hsm import HsmModule, KeyRecord
from switch.security import sandbox as sandbox_keys
from switch.core.acquirer import REVERSED
from tests.test_card_link import LOOPS, Sim, acquirer, purchase, reversal_for, run, until


@pytest.fixture(scope="module")
def hsm_sim():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    host, port = line.split()[-1].rsplit(":", 1)
    yield host, int(port)
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def hsm_module(endpoint):
    table = {n: KeyRecord(**e) for n, e in sandbox_keys.hsm_key_table().items()}
    return HsmModule([endpoint], table, timeout=5.0)


@pytest.mark.parametrize("algorithm, name", [("tdes-retail", "bank-a"), ("aes-cmac", "bank-b")])
@LOOPS
def test_maced_link_signs_on_authorizes_and_reverses(tmp_path, algorithm, name, loop_factory):
    sim = Sim("--name", name, "--mac", algorithm, ledger=tmp_path / "ledger.jsonl")
    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, mac=algorithm, mac_key=f"zak-{name}")
            acq.use_security_module(sandbox_keys.module())
            await acq.start()
            try:
                assert acq.healthy() and acq.mac.immediate
                req = purchase(1000, pin_block=None)
                ok = await acq.authorize(req, 2.0)
                assert ok.response_code == "00" and not ok.uncertain and len(ok.auth_code) == 6
                declined = await acq.authorize(purchase(1051, pin_block=None), 2.0)
                assert declined.response_code == "51"
                assert await acq.reverse(reversal_for(req, ok), 2.0) == REVERSED
                assert acq.metrics.total("mac_failures") == 0
                return parse_ref(ok.acquirer_ref)
            finally:
                await acq.close()
        ref = run(main(), loop_factory)
        ledger = sim.ledger()
        assert {e["event"] for e in ledger} == {"authorization", "reversal"}
        assert all(e["mac"] == "ok" for e in ledger)  # the acquirer checked every MAC the switch sent
        [rev] = [e for e in ledger if e["event"] == "reversal"]
        assert rev["original_stan"] == ref.stan and rev["original_found"] and rev["mac"] == "ok"
    finally:
        assert sim.stop() == 0


def test_wrong_mac_answers_are_uncertain_never_approvals(tmp_path):
    sim = Sim("--mac", "tdes-retail", "--bad-mac-rate", "1.0", ledger=tmp_path / "ledger.jsonl")
    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, mac="tdes-retail", mac_key="zak-bank-a")
            acq.use_security_module(sandbox_keys.module())
            await acq.start()
            try:
                assert acq.healthy()  # network messages are answered with good MACs
                req = purchase(1000, pin_block=None)
                result = await acq.authorize(req, 2.0)
                # The acquirer approved (its ledger says so) but its word cannot be trusted:
                # uncertain, as for a broken link, so the switch reverses.
                assert result.response_code == "91" and result.uncertain and result.auth_code is None
                assert acq.metrics.get("mac_failures", mti="0200") == 1
                assert acq.metrics.get("requests", mti="0200", response_code="00") == 0
                assert acq.healthy()  # one bad answer does not cost the connection
                rev = reversal_for(req, result)
                # The reversal's answers are not trusted either: retried until one is.
                assert await acq.reverse(rev, 2.0) != REVERSED
                assert acq.metrics.get("mac_failures", mti="0420") == 1
                return parse_ref(result.acquirer_ref)
            finally:
                await acq.close()
        ref = run(main())
        [auth] = [e for e in sim.ledger() if e["event"] == "authorization"]
        assert auth["stan"] == ref.stan and auth["response_code"] == "00" and auth["fault"] == "bad-mac"
    finally:
        assert sim.stop() == 0


def test_a_link_whose_acquirer_has_another_key_never_signs_on():
    other = bytes.fromhex(sandbox_keys.KEYS["zak-cup"][2]).hex()
    sim = Sim("--mac", "tdes-retail", "--mac-key", other)
    try:
        async def main():
            acq = acquirer(sim.endpoint, connections=1, mac="tdes-retail", mac_key="zak-bank-a",
                           connect_timeout=0.5)
            acq.use_security_module(sandbox_keys.module())
            await acq.start()
            try:
                await until(lambda: acq.metrics.get("mac_failures", mti="0800") >= 1)
                assert not acq.healthy()
                result = await acq.authorize(purchase(1000, pin_block=None), 1.0)
                assert result.response_code == "91" and not result.uncertain  # nothing was sent
            finally:
                await acq.close()
        run(main())
    finally:
        sim.stop()


def test_a_maced_link_without_a_module_refuses_to_start():
    async def main():
        acq = acquirer(("127.0.0.1", 9), mac="tdes-retail", mac_key="zak-bank-a")
        acq.use_security_module(None)
        with pytest.raises(HostMacError, match="no security module"):
            await acq.start()
    run(main())


@pytest.mark.parametrize("algorithm, name", [("tdes-retail", "bank-a"), ("aes-cmac", "bank-b")])
def test_maced_link_through_the_hsm(tmp_path, hsm_sim, algorithm, name):
    sim = Sim("--name", name, "--mac", algorithm, ledger=tmp_path / "ledger.jsonl")
    try:
        async def main():
            module = hsm_module(hsm_sim)
            acq = acquirer(sim.endpoint, connections=2, mac=algorithm, mac_key=f"zak-{name}")
            acq.use_security_module(module)
            await acq.start()
            try:
                assert acq.healthy() and not acq.mac.immediate  # M6/M8 round trips, answers checked in order
                results = await asyncio.gather(*(acq.authorize(purchase(1000 + i * 100, pin_block=None), 3.0)
                                                 for i in range(20)))
                assert [r.response_code for r in results] == ["00"] * 20
                req = purchase(2000, pin_block=None)
                ok = await acq.authorize(req, 3.0)
                assert await acq.reverse(reversal_for(req, ok), 3.0) == REVERSED
                repeat = msgspec.structs.replace(reversal_for(req, ok), attempt=1)
                assert await acq.reverse(repeat, 3.0) == REVERSED
                assert acq.metrics.total("mac_failures") == 0
            finally:
                await acq.close()
                await module.close()
        run(main())
        ledger = sim.ledger()
        assert len(ledger) == 23 and all(e["mac"] == "ok" for e in ledger)
    finally:
        assert sim.stop() == 0


def test_the_uvloop_simulator_checks_and_macs_the_same(tmp_path):
    good = Sim("--fast", "--mac", "aes-cmac", "--name", "bank-b", ledger=tmp_path / "good.jsonl")
    bad = Sim("--fast", "--mac", "aes-cmac", "--name", "bank-b", "--bad-mac-rate", "1.0")
    try:
        async def main():
            results = []
            for sim in (good, bad):
                acq = acquirer(sim.endpoint, connections=1, mac="aes-cmac", mac_key="zak-bank-b")
                acq.use_security_module(sandbox_keys.module())
                await acq.start()
                try:
                    results.append(await acq.authorize(purchase(1000, pin_block=None), 2.0))
                finally:
                    await acq.close()
            return results
        ok, untrusted = run(main())
        assert ok.response_code == "00" and not ok.uncertain
        assert untrusted.response_code == "91" and untrusted.uncertain
        assert [e["mac"] for e in good.ledger()] == ["ok"]
    finally:
        assert good.stop() == 0 and bad.stop() == 0
