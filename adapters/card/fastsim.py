"""The simulated acquirer on asyncio + uvloop: ``payswitch sim acquirer --fast``.

Same options, same decisions (:class:`adapters.card.sandbox.Sandbox`), same
faults and ledger as :mod:`adapters.card.sim`, which runs on trio; this one
is a protocol on uvloop with the compiled codec, about half the CPU per
transaction, so that a benchmark measures the switch rather than its
acquirer.  Answers made during one pass of the loop go out in one write.
"""
from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from adapters.card.messages import SIGN_OFF, SIGN_ON, transmission_time
from adapters.card.sim import SimulatedAcquirer, decide_message, decoded


class FastAcquirer(SimulatedAcquirer):
    def decide(self, msg, payload: bytes = b"") -> tuple[str, dict | None]:
        """What :mod:`adapters.card.sim` decides for ``msg``: (fault, answer fields)."""
        return decide_message(self, msg, payload)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), self.args.host, self.args.port)
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            server.close()
            self.ledger.close()


class _Connection(asyncio.Protocol):
    def __init__(self, acquirer: FastAcquirer) -> None:
        from native.framing import Framer

        self.acq = acquirer
        self.framer = Framer("binary2", max_frame=8192)
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.carried = 0  # transactions since this connection last signed on
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.acq.connections += 1

    def connection_lost(self, exc) -> None:
        self.acq.connections -= 1
        self.transport = None

    def queue(self, data: bytes) -> None:
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(data)

    def flush(self) -> None:
        data = b"".join(self.out)
        self.out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def act(self, fault: str, out: dict | None) -> None:
        from adapters.card.sim import GARBAGE, answer_bytes

        if self.transport is None:
            return
        if fault == "disconnect":
            self.transport.close()
        elif fault == "garbage":
            self.queue(GARBAGE)
        elif out is not None and fault in ("answer", "late", "bad-mac"):
            self.queue(self.framer.encode(answer_bytes(self.acq, fault, out)))

    def data_received(self, data: bytes) -> None:
        from native.framing import FrameError

        acq, args = self.acq, self.acq.args
        try:
            messages = decoded(acq, self.framer.feed(data))
        except FrameError as exc:
            acq.log(f"bad message, closing: {type(exc).__name__}")
            messages = None
        if messages is None:
            self.transport.close()
            return
        latency = args.latency_ms / 1000.0
        for msg, payload in messages:
            if self.transport is None or self.transport.is_closing():
                return
            mti = msg.mti
            fault, out = acq.decide(msg, payload)
            if mti == "0800" or mti == "0810":
                if mti == "0800" and msg.get(70) == SIGN_ON:
                    self.carried = 0
                self.act(fault, out)
                continue
            delay = latency + (args.late_ms / 1000.0 if fault == "late" else 0.0)
            if delay > 0:
                self.loop.call_later(delay, self.act, fault, out)
            else:
                self.act(fault, out)
            self.carried += 1
            if args.sign_off_after and self.carried == args.sign_off_after:
                acq.log(f"signing off after {self.carried} transactions")
                self.queue(self.framer.encode(acq.encode(
                    acq.sandbox.network_request(SIGN_OFF, transmission_time(time.time())))))


def run(args: Any) -> None:
    import uvloop

    uvloop.run(FastAcquirer(args).run())
