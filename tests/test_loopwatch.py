"""Event-loop lag and the CPU of the switch's parts (switch.io.loopwatch)."""
from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
import uvloop

from switch.io.loopwatch import LoopWatch, cpu_seconds, process_stat, thread_stat
from switch.journal import open_journal
from switch.metrics import Metrics
from tests.test_observability import samples

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_blocked_loop_shows_as_lag():
    metrics = Metrics(process=False)

    async def main():
        watch = LoopWatch(metrics.loop_lag, interval=0.02)
        watch.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        quiet = samples(metrics)
        time.sleep(0.3)  # a callback that keeps the loop for 300 ms
        await asyncio.sleep(0.05)
        watch.close()
        return quiet, samples(metrics)

    quiet, after = uvloop.run(main())
    assert quiet[("payswitch_event_loop_lag_seconds_count", ())] >= 2
    # Idle, the timer fires on time (uvloop keeps milliseconds: within a few).
    assert quiet[("payswitch_event_loop_lag_seconds_sum", ())] < 0.05
    late = after[("payswitch_event_loop_lag_seconds_sum", ())] - quiet[("payswitch_event_loop_lag_seconds_sum", ())]
    assert 0.25 <= late < 1.0
    assert after[("payswitch_event_loop_lag_seconds_bucket", (("le", "0.25"),))] < after[
        ("payswitch_event_loop_lag_seconds_bucket", (("le", "0.5"),))]


def test_a_closed_watch_stops_sampling():
    metrics = Metrics(process=False)

    async def main():
        watch = LoopWatch(metrics.loop_lag, interval=0.01)
        watch.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        watch.close()
        count = samples(metrics)[("payswitch_event_loop_lag_seconds_count", ())]
        await asyncio.sleep(0.05)
        return count, samples(metrics)[("payswitch_event_loop_lag_seconds_count", ())]

    before, after = uvloop.run(main())
    assert before > 0 and after == before


@linux
def test_cpu_of_the_loop_thread_and_of_a_writer_thread(tmp_path):
    metrics = Metrics(process=False)
    journal = open_journal(f"sqlite://{tmp_path / 'j.sqlite'}", hmac_key=b"k" * 32)
    try:
        kind, native_id = journal.writer_identity()
        assert kind == "thread" and native_id != threading.get_native_id()

        async def main():
            watch = LoopWatch(metrics.loop_lag, lambda: thread_stat(native_id), interval=1.0)
            watch.start(asyncio.get_running_loop())
            metrics.cpu_source = watch.cpu
            first = samples(metrics)
            burn(0.3)  # on the loop thread
            second = samples(metrics)
            watch.close()
            return first, second

        first, second = uvloop.run(main())
    finally:
        journal.close()
    key = ("payswitch_cpu_seconds_total", (("part", "event_loop"),))
    # /proc counts in clock ticks (10 ms): 300 ms of burning shows as at least 200 ms.
    assert second[key] - first[key] >= 0.2
    assert ("payswitch_cpu_seconds_total", (("part", "journal_writer"),)) in second


@linux
def test_cpu_seconds_reads_a_process_and_a_thread_and_tolerates_a_gone_one():
    me = cpu_seconds(process_stat(__import__("os").getpid()))
    assert me is not None and me > 0
    assert cpu_seconds(thread_stat(threading.get_native_id())) is not None
    assert cpu_seconds("/proc/self/task/0/stat") is None


def test_no_source_exports_the_family_without_samples():
    text = Metrics(process=False).render().decode()
    assert "# TYPE payswitch_cpu_seconds_total counter" in text
    assert "payswitch_cpu_seconds_total{" not in text


def test_a_process_writer_is_named_by_its_pid(tmp_path):
    journal = open_journal(f"sqlite://{tmp_path / 'j.sqlite'}", hmac_key=b"k" * 32, writer="process")
    try:
        kind, pid = journal.writer_identity()
        assert kind == "process" and pid == journal._proc.pid
    finally:
        journal.close()
