"""Cost of the software security module's per-request work: MAC check, PIN translation, DUKPT.

``make bench`` runs them; with ``--benchmark-disable`` (the suite's default)
each runs once and its result is checked.
"""
from __future__ import annotations

import asyncio

import pytest

from native.iso8583 import dialect
from switch.security import keys, sandbox, terminal
from switch.security.mac import terminal_mac
from switch.security.module import DukptKey, SessionKey

TERMINAL = dialect("terminal-87")
PAN = "4761739001010010"
KSN = "FFFF9876543210E0000A"


@pytest.fixture(scope="module")
def ready():
    mod = sandbox.module()
    tak_name, tpk_name = keys.session_key_names("SEC00001")
    loop = asyncio.new_event_loop()
    answer = loop.run_until_complete(mod.generate_session_keys("demo-tmk-tdes", tak_name, tpk_name))
    tak, tpk = terminal.session_keys(bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2]), "tdes", answer.field48())
    request = {"mti": "0200", 2: PAN, 3: "000000", 4: "000000001000", 11: "000001", 41: "SEC00001",
               42: "DEMOSEC00000001", 49: "978"}
    signed = terminal.encode_signed(TERMINAL, request, tak, "tdes")
    yield mod, loop, signed, terminal.pin_block("1234", PAN, tpk, "tdes"), SessionKey(tak_name), SessionKey(tpk_name)
    loop.close()


def _drive(loop, coro_fn):
    """Run a software-module coroutine to its end without an event loop: it never waits on anything."""
    def once():
        coro = coro_fn()
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
        raise AssertionError("the software module awaited something")
    return once


def test_verify_mac_tdes_session_key(benchmark, ready):
    mod, loop, signed, _, tak, _ = ready
    benchmark.group = "security module"
    assert benchmark(_drive(loop, lambda: mod.verify_mac(tak, terminal.mac_data(signed), signed[-8:])))


def test_translate_pin_tpk_to_zpk(benchmark, ready):
    mod, loop, _, block, _, tpk = ready
    benchmark.group = "security module"
    assert len(benchmark(_drive(loop, lambda: mod.translate_pin(tpk, block, PAN, "zpk-bank-a", 0)))) == 8


def test_verify_mac_dukpt(benchmark, ready):
    mod, loop, _, _, _, _ = ready
    mac_key, _, _ = terminal.dukpt_keys(bytes.fromhex(sandbox.KEYS["demo-bdk-tdes"][2]), KSN)
    data = b"0200" + bytes(200)
    mac = terminal_mac(mac_key, data, "tdes")
    benchmark.group = "security module"
    assert benchmark(_drive(loop, lambda: mod.verify_mac(DukptKey("demo-bdk-tdes", KSN), data, mac)))
