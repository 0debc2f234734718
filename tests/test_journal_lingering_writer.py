"""A journal writer process that closes its socket but does not exit at once: waiting for
its exit code (up to ``_EXIT_WAIT``, 1 s) must never stall the switch's event loop, nor
the callers of a journal without one."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from switch.journal import JournalClosed, open_journal
from tests.test_journal import txn

# Started as the writer (``python -c CODE FD``): the real one, which on SIGUSR1 shuts its
# socket and lingers 5 s before exiting.
LINGERING = """
import os, signal, socket, sys, time
from switch.journal.writer import main

def linger(signum, frame):
    socket.socket(fileno=os.dup(int(sys.argv[-1]))).shutdown(socket.SHUT_RDWR)
    time.sleep(5)
    os._exit(0)

signal.signal(signal.SIGUSR1, linger)
sys.exit(main(["-c", sys.argv[-1]]))
"""
DIED = r"^journal writer process died(: |$)"  # no exit code: it was not there within 1 s


def lingering_writer(tmp_path: Path) -> str:
    script = tmp_path / "lingering-writer"
    script.write_text(f"#!{sys.executable}\n{LINGERING}")
    script.chmod(0o700)
    return str(script)


def test_a_lingering_writer_never_stalls_the_event_loop(tmp_path):
    async def main() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process", python=lingering_writer(tmp_path),
                         future=loop.create_future, deliver=loop.call_soon_threadsafe, loop=loop)
        told: list[str] = []
        j.on_died = told.append
        try:
            await j.insert(txn(1))
            os.kill(j._proc.pid, signal.SIGUSR1)
            waiting = j.get(1)
            longest, last, start = 0.0, time.monotonic(), time.monotonic()
            later = None
            while time.monotonic() - start < 1.5:  # timers keep firing all along
                await asyncio.sleep(0.01)
                now = time.monotonic()
                longest, last = max(longest, now - last), now
                if later is None and now - start > 0.3:
                    later = j.get(1)  # made while its exit code is waited for
            for fut in (waiting, later):
                with pytest.raises(JournalClosed, match=DIED):
                    await fut
            with pytest.raises(JournalClosed, match=DIED):
                await j.get(1)
        finally:
            j.close()
            j._proc.kill()
            j._proc.wait()
        return longest, told

    longest, told = asyncio.run(main())
    assert longest < 0.25, f"the event loop stalled {longest:.2f} s"
    [why] = told
    assert why.startswith("journal writer process died") and "exit code" not in why


def test_a_lingering_writer_never_blocks_the_callers_of_a_journal_without_a_loop(tmp_path):
    j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process", python=lingering_writer(tmp_path))
    told: list[str] = []
    j.on_died = told.append
    try:
        j.insert(txn(1)).result(10)
        os.kill(j._proc.pid, signal.SIGUSR1)
        longest, start, futures = 0.0, time.monotonic(), []
        while time.monotonic() - start < 1.5:
            t0 = time.monotonic()
            futures.append(j.get(1))  # never waits for the reader thread's look at the exit code
            longest = max(longest, time.monotonic() - t0)
            time.sleep(0.01)
        for fut in futures[-3:]:
            with pytest.raises(JournalClosed, match=DIED):
                fut.result(10)
    finally:
        j.close()
        j._proc.kill()
        j._proc.wait()
    assert longest < 0.25, f"a caller waited {longest:.2f} s"
    [why] = told
    assert "exit code" not in why


def test_closing_the_journal_while_a_lingering_writer_is_waited_for_returns_at_once(tmp_path):
    async def main() -> float:
        loop = asyncio.get_running_loop()
        j = open_journal(f"sqlite://{tmp_path}/j.sqlite", writer="process", python=lingering_writer(tmp_path),
                         future=loop.create_future, deliver=loop.call_soon_threadsafe, loop=loop)
        try:
            await j.insert(txn(1))
            waiting = j.get(1)
            os.kill(j._proc.pid, signal.SIGUSR1)
            with pytest.raises(asyncio.TimeoutError):  # its end closed, its exit code not there yet
                await asyncio.wait_for(asyncio.shield(waiting), 0.3)
            t0 = time.monotonic()
            j.close()  # a stop in that second: the writer is not waited for (it lingers 5 s)
            took = time.monotonic() - t0
            with pytest.raises(JournalClosed):
                await asyncio.wait_for(waiting, 2)
        finally:
            j._proc.kill()
            j._proc.wait()
        return took

    took = asyncio.run(main())
    assert took < 0.5, f"close() took {took:.2f} s"
