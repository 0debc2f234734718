"""The decoding forwarder of the end-to-end benchmark: the switch's I/O path with nothing of the switch.

    python -m benchmarks.forwarder PORT SIM_PORT [--host-connections 2]

What a switch cannot do without, and nothing else: it decodes each
terminal request with the compiled codec (terminal-87), re-encodes it for
the acquirer (host-87-bcd, a STAN of its own, fields 32 and 37 added), sends
it over a few long-lived host connections to the same card simulator the
switch uses (a process of its own, ``payswitch sim acquirer --fast``),
matches the answer by STAN, and re-encodes it for the terminal (fields 37,
38, 39 from the acquirer).  No journal, no checks, no routing, no metrics,
no security.  Writes made during one pass of the loop go out as one write
on each connection, as the switch's do.

Against the pass-through forwarder (``e2e_throughput.FORWARDER``: bytes
relayed to an echo in the same process, nothing decoded), this one pays
what any switch on this box pays besides its own work: the codec, a host
STAN table, and the card simulator's CPU and wakeups on the same two cores.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import sys

# The request fields a host message carries over from the terminal's (adapters.card.messages.request_fields).
_CARRIED = (2, 3, 4, 7, 12, 13, 14, 22, 25, 35, 41, 42, 49, 52, 55)
# The answer: the request's own fields, then the acquirer's 38 and 39 and the switch's 37.
_ECHOED = (2, 3, 4, 7, 11, 12, 13, 41, 42, 49)
_RESPONSE_MTI = {"0100": "0110", "0200": "0210", "0220": "0230", "0400": "0410"}


class _Writer:
    """Frames queued during one pass of the loop, written at its end in one call."""

    __slots__ = ("transport", "out", "loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.out, self.loop = transport, [], loop

    def queue(self, frame: bytes) -> None:
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(frame)

    def flush(self) -> None:
        data = b"".join(self.out)
        self.out.clear()
        if not self.transport.is_closing():
            self.transport.write(data)


class Forwarder:
    def __init__(self, host_connections: int) -> None:
        from native.framing import Framer
        from native.iso8583 import dialect

        self.term, self.host = dialect("terminal-87"), dialect("host-87-bcd")
        self.framer = Framer("binary2", max_frame=8192)  # encode only: one per connection decodes
        self.stans = itertools.cycle(range(1, 1_000_000))
        self.rrns = itertools.count(1)
        self.pending: dict[str, tuple[_Writer, object]] = {}
        self.uplinks: list[_Writer] = []
        self.next_uplink = itertools.cycle(range(host_connections))
        self.host_connections = host_connections

    async def start(self, port: int, sim_port: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.host_connections):
            await loop.create_connection(lambda: _Host(self), "127.0.0.1", sim_port)
        await loop.create_server(lambda: _Terminal(self), "127.0.0.1", port, backlog=1024)

    def request(self, terminal: _Writer, payload: bytes) -> None:
        msg = self.term.decode(payload)
        stan = "%06d" % next(self.stans)
        get = msg.get
        out = {"mti": msg.mti}
        for n in _CARRIED:
            v = get(n)
            if v is not None:
                out[n] = v
        out[11] = stan
        out[32] = "00000000001"
        out[37] = "%012d" % next(self.rrns)
        self.pending[stan] = (terminal, msg)
        self.uplinks[next(self.next_uplink)].queue(self.framer.encode(self.host.encode(out)))

    def answer(self, payload: bytes) -> None:
        ans = self.host.decode(payload)
        waiting = self.pending.pop(ans.get(11), None)
        if waiting is None:  # an 0810, or an answer to nothing
            return
        terminal, msg = waiting
        get = msg.get
        out = {"mti": _RESPONSE_MTI.get(msg.mti, msg.mti)}
        for n in _ECHOED:
            v = get(n)
            if v is not None:
                out[n] = v
        for n in (37, 38, 39):
            v = ans.get(n)
            if v is not None:
                out[n] = v
        terminal.queue(self.framer.encode(self.term.encode(out)))


class _Terminal(asyncio.Protocol):
    def __init__(self, fwd: Forwarder) -> None:
        from native.framing import Framer

        self.fwd, self.framer, self.writer = fwd, Framer("binary2", max_frame=8192), None

    def connection_made(self, transport) -> None:
        self.writer = _Writer(transport, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        for payload in self.framer.feed(data):
            self.fwd.request(self.writer, payload)


class _Host(asyncio.Protocol):
    def __init__(self, fwd: Forwarder) -> None:
        from native.framing import Framer

        self.fwd, self.framer = fwd, Framer("binary2", max_frame=8192)

    def connection_made(self, transport) -> None:
        self.fwd.uplinks.append(_Writer(transport, asyncio.get_running_loop()))

    def data_received(self, data: bytes) -> None:
        for payload in self.framer.feed(data):
            self.fwd.answer(payload)

    def connection_lost(self, exc) -> None:
        print(f"host connection lost: {exc!r}", file=sys.stderr, flush=True)


async def _main(port: int, sim_port: int, host_connections: int) -> None:
    await Forwarder(host_connections).start(port, sim_port)
    print("listening", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.forwarder")
    ap.add_argument("port", type=int)
    ap.add_argument("sim_port", type=int)
    ap.add_argument("--host-connections", type=int, default=2)  # the switch's acquirer default (connections = 2)
    args = ap.parse_args(argv)
    import uvloop

    uvloop.run(_main(args.port, args.sim_port, args.host_connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
