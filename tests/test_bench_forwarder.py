"""The benchmark's bare forwarder (benchmarks/forwarder.py) really forwards to the card simulator.

The end-to-end ratios are against it: it must decode, re-encode and carry
each request to the acquirer simulator and the acquirer's answer back to
the right terminal, so that its figure is what the switch's I/O path costs
without the switch, not an echo.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from pathlib import Path

from benchmarks.switches import checkout_env
from switch.client import TERMINAL, now_fields

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _started(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=checkout_env())
    assert "listening" in proc.stdout.readline()
    return proc


def test_every_answer_is_the_simulators_for_that_terminals_request():
    sim_port, port = _port(), _port()
    sim = _started(["-m", "switch.cli", "sim", "acquirer", "--fast", "--port", str(sim_port), "--latency-ms", "0"])
    fwd = None
    try:
        fwd = _started(["-m", "benchmarks.forwarder", str(port), str(sim_port)])
        t = now_fields()

        async def terminal(n: int) -> list[tuple]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seen = []
            for i in range(20):
                stan = "%06d" % (n * 100 + i + 1)
                amount = 1000 + 100 * i + (5 if i % 4 == 3 else 0)  # the sandbox answers 05 for ...05
                body = TERMINAL.encode({
                    "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "%012d" % amount, 7: t[7], 11: stan,
                    12: t[12], 13: t[13], 22: "051", 41: "DEMO%04d" % (n + 1), 42: "DEMO00000000001", 49: "978",
                })
                writer.write(struct.pack(">H", len(body)) + body)
                size = struct.unpack(">H", await reader.readexactly(2))[0]
                answer = TERMINAL.decode(await reader.readexactly(size))
                seen.append((answer.mti, answer[11], answer[41], answer[4], answer[39], answer.get(37), stan,
                             "DEMO%04d" % (n + 1), "%012d" % amount))
            writer.close()
            return seen

        async def all_terminals():
            return await asyncio.gather(*(terminal(n) for n in range(5)))

        results = [row for rows in asyncio.run(all_terminals()) for row in rows]
    finally:
        for proc in (fwd, sim):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    assert len(results) == 100
    for mti, stan, tid, amount, code, rrn, sent_stan, sent_tid, sent_amount in results:
        assert (mti, stan, tid, amount) == ("0210", sent_stan, sent_tid, sent_amount)
        assert code == ("05" if sent_amount.endswith("05") else "00")
        assert rrn is not None and len(rrn) == 12
    assert len({r[5] for r in results}) == 100  # one acquirer request each
