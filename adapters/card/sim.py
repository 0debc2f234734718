"""A simulated bank acquirer: ISO 8583 host-87-bcd over TCP, on trio.

    python -m adapters.card.sim --host 127.0.0.1 --port 9101 --name bank-a \
        [--lenient] [--bank-codes] [--latency-ms 5] [--drop-rate 0.0] [--disconnect-rate 0.0] \
        [--garbage-rate 0.0] [--late-ms N --late-rate R] [--sign-off-after N] \
        [--stall-after-echo] [--seed N] [--ledger FILE] [--fast] \
        [--mac tdes-retail|aes-cmac [--mac-key HEX] [--bad-mac-rate R]]

Decisions (:mod:`adapters.card.sandbox`): the sandbox amount rules of spec
section 7 for 0100/0200 (05/13/51/55/96 decline, 68 never answers); strict
by default: reversals (0400/0420/0421 -> 0410/0430) and completions (0220 ->
0230) are matched by field 90 only, an unknown original gets 25, a repeated
reversal moves no money twice, a pre-authorization is completed at most once
and not above its amount.  ``--lenient``: the old behaviour (00 to every
reversal and completion, field 37 as fallback).  Strict, a reversal of an
approval whose answer reached the switch must repeat its field 38, else 12.
0800 -> 0810 00.
``--bank-codes``: amounts ending in 01, 04, 08, 10, 11, 15, 19, 41, 43, 54,
57, 61, 65 or 75 answer that ISO 8583 code, as a bank host may, which the
terminal is never given as such (the switch answers in section 5); 08 and 11
approve, 10 approves half the amount and says so in field 4.

Faults apply to transactions, never to network management, so a link can
always sign on: ``--drop-rate`` leaves a request unanswered,
``--disconnect-rate`` closes the connection instead of answering,
``--garbage-rate`` sends a frame that no codec accepts, ``--latency-ms``
delays every transaction answer, ``--late-rate`` answers that share of
transactions only after ``--late-ms`` (after the switch's deadline).  The
transaction is decided (and money moved) all the same: the switch must
reverse.  ``--sign-off-after N`` sends an 0800 sign-off (70=002) on a
connection after every N transactions it carried (it answers what it got
meanwhile); ``--stall-after-echo`` answers sign-on and echo but never a
transaction (nor acts on one: no money moves).

``--ledger FILE`` appends one JSON line per transaction event and flushes it,
so an end-to-end test can check what the acquirer saw; every event has the
card (masked PAN and an HMAC under the ledger's own key, kept in
``FILE.key``, never the PAN) and the money it moved (``delta``: what the
card owes the acquirer, negative for a refund);
a reversal's ``pan`` is its own field 2, masked (empty when it came without).
On start the simulator reads back the events already in the file, as a
bank's host keeps its authorizations across a restart: a reversal or
completion of one approved before it finds it, and the balances go on.

``--mac ALGORITHM`` (``tdes-retail`` or ``aes-cmac``) checks the switch's
MAC on every message under the zone MAC key (``--mac-key``, hex; default the
sandbox's public ZAK of ``--name``): a missing or wrong one is answered A0
and moves no money (ledger ``mac_failure``); the ledger events of the others
say ``"mac": "ok"``; every answer is MACed.  ``--bad-mac-rate`` answers that
share of transactions (decided, money moved) with a wrong MAC: the switch
must not take them as answers, and reverses.

``--fast`` runs the same decisions on asyncio + uvloop
(:mod:`adapters.card.fastsim`), for benchmarks.

Once listening it prints ``listening on HOST:PORT`` (``--port 0`` picks a free
port).  SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from typing import IO, Any

from adapters.card.card_names import ledger_key, use_key
from adapters.card.messages import SIGN_OFF, SIGN_ON, scrub, transmission_time
from adapters.card.sandbox import (  # noqa: F401  (re-exported: the sim's decisions live there)
    DECLINES,
    ECHOED,
    NETWORK_ECHOED,
    NEVER_ANSWERS,
    Sandbox,
    card_key,
    ledger_balances,
    parse_original_data,
    sandbox_response_code,
)

# A frame no host-87-bcd codec accepts: declared length 0xFFFF > the 8192 maximum.
GARBAGE = b"\xff\xffGARBAGE-FROM-THE-ACQUIRER"


def choose_fault(rng: random.Random, drop_rate: float, disconnect_rate: float,
                 garbage_rate: float, bad_mac_rate: float = 0.0) -> str:
    """One draw per transaction: "disconnect", "garbage", "drop", "bad-mac" or "answer"."""
    r = rng.random()
    if r < disconnect_rate:
        return "disconnect"
    r -= disconnect_rate
    if r < garbage_rate:
        return "garbage"
    r -= garbage_rate
    if r < drop_rate:
        return "drop"
    r -= drop_rate
    if r < bad_mac_rate:
        return "bad-mac"
    return "answer"


def decoded(acq, payloads: list[bytes]) -> list[tuple[Any, bytes]] | None:
    """(message, payload) of each payload of one read; None when one does not decode
    (the caller closes the connection), logged by its length, the field and the offset.

    Never the codec's own words, which quote what they found: through a damaged
    bitmap any field may hold the card number, and as packed BCD a PAN is no run
    of digits that masking would catch.  ``acq`` has ``dialect`` and ``log``."""
    from native.iso8583 import DecodeError

    messages = []
    for payload in payloads:
        try:
            messages.append((acq.dialect.decode(payload), payload))
        except DecodeError as e:
            where = f"field {e.field}" if e.field is not None else "the MTI or a bitmap"
            at = f" at offset {e.offset}" if e.offset is not None else ""
            acq.log(f"bad message, closing: {len(payload)} bytes, {where} does not decode{at} (its bytes not shown)")
            return None
    return messages


def decide_message(acq, msg, payload: bytes = b"") -> tuple[str, dict | None]:
    """(fault, answer fields) for one received message, by the sandbox and the
    fault knobs; ``acq`` has ``args``, ``sandbox``, ``ledger``, ``faults``,
    ``lateness`` and ``mac`` (both simulators, trio and uvloop, decide through
    this).  With ``acq.mac``, ``payload`` is the message as received: its MAC
    is checked first (a missing or wrong one: A0, nothing else decided)."""
    args = acq.args
    mac_ok = None
    if acq.mac is not None:
        why = acq.mac.verify(msg, payload)
        if why:
            out, events = acq.sandbox.refuse_mac(msg, why)
            acq.ledger.write(events)
            return "answer", out
        mac_ok = "ok"
    if msg.mti in ("0800", "0810"):
        return "answer", acq.sandbox.handle(msg)[0]
    if args.stall_after_echo:
        acq.ledger.write([{"event": "ignored", "acquirer": args.name, "mti": msg.mti,
                           "stan": msg.get(11), "reason": "stall-after-echo", "delta": 0}])
        return "stall", None
    fault = choose_fault(acq.faults, args.drop_rate, args.disconnect_rate, args.garbage_rate,
                         getattr(args, "bad_mac_rate", 0.0))
    out, events = acq.sandbox.handle(msg)
    if mac_ok:
        for event in events:
            event["mac"] = mac_ok
    if fault != "answer":
        for event in events:
            event["fault"] = fault
    elif args.late_rate > 0 and acq.lateness.random() < args.late_rate:
        fault = "late"
        for event in events:
            event["late_ms"] = args.late_ms
    acq.ledger.write(events)
    return fault, out


def host_mac(args: argparse.Namespace, codec):
    """The simulator's :class:`~adapters.card.sandbox.HostMacCheck` for ``--mac`` (None without it).

    The key: ``--mac-key`` (hex), else the sandbox's public ZAK of ``--name``."""
    from adapters.card.sandbox import HostMacCheck

    if not getattr(args, "mac", None):
        return None
    if getattr(args, "mac_key", None):
        key = bytes.fromhex(args.mac_key)
    else:
        from switch.security.sandbox import ZAKS

        if args.name not in ZAKS or ZAKS[args.name][0] != args.mac:
            raise ValueError(f"no sandbox {args.mac} key for {args.name!r}: give --mac-key")
        key = bytes.fromhex(ZAKS[args.name][1])
    return HostMacCheck(args.mac, key, codec)


def answer_bytes(acq, fault: str, out: dict) -> bytes:
    """The encoded answer; for ``bad-mac`` with its MAC's last byte flipped (the decision stands)."""
    data = acq.encode(out)
    if fault == "bad-mac":
        data = data[:-1] + bytes([data[-1] ^ 0x01])
    return data


def _peer_went_away(exc: BaseException, closed: tuple) -> bool:
    """True for a connection the peer broke or closed, also inside the
    exception group a trio nursery wraps it in."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_peer_went_away(e, closed) for e in exc.exceptions)
    return isinstance(exc, closed)


class Ledger:
    """One JSON line per event, flushed at once (another process reads it)."""

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None
        if self._file is not None and self._file.tell():
            with open(path, "rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    self._file.write("\n")  # a line cut short when the last run died: never glued to ours

    @staticmethod
    def events(path: str | None) -> list[dict]:
        """The events an earlier run wrote to ``path`` (none when it does not exist);
        a last line cut short by a crash is left out."""
        if not path:
            return []
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def write(self, events: list[dict]) -> None:
        if self._file is None or not events:
            return
        for event in events:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------
# The network side (trio).  The codec is imported here, not at module import,
# so the decision functions above are usable on their own.

class SimulatedAcquirer:
    """What both card simulators keep (this trio one and the uvloop one,
    adapters.card.fastsim): the sandbox's decisions, the ledger, the host
    MAC, and the seeded randomness of faults and late answers."""

    def __init__(self, args: argparse.Namespace) -> None:
        from native.framing import Framer  # noqa: F401  (fail early if not built)
        from native.iso8583 import dialect

        self.args = args
        self.dialect = dialect("host-87-bcd")
        self.mac = host_mac(args, self.dialect)
        self.encode = self.mac.encode if self.mac is not None else self.dialect.encode
        if args.ledger:  # cards named alike after a restart: the ledger's replay finds their balances
            use_key(ledger_key(args.ledger))
        self.sandbox = Sandbox(args.name, args.seed, strict=not args.lenient,
                               bank_codes=getattr(args, "bank_codes", False))
        # Like a bank's host, the simulator restarted (with the switch that
        # started it, say) still knows what it approved: reversals find them.
        if taken := self.sandbox.replay(Ledger.events(args.ledger)):
            self.log(f"took back {taken} events from the ledger {args.ledger}")
        self.ledger = Ledger(args.ledger)
        self.faults = random.Random(None if args.seed is None else args.seed + 1)
        self.lateness = random.Random(None if args.seed is None else args.seed + 2)
        self.connections = 0

    def log(self, text: str) -> None:
        print(f"{self.args.name}: {text}", file=sys.stderr, flush=True)


class Acquirer(SimulatedAcquirer):

    async def serve_connection(self, stream) -> None:
        import trio
        from native.framing import FrameError, Framer

        args = self.args
        self.connections += 1
        framer = Framer("binary2", max_frame=8192)
        latency = args.latency_ms / 1000.0
        late = args.late_ms / 1000.0
        outgoing: list[bytes] = []
        wakeup = trio.Event()
        carried = 0  # transactions since this connection last signed on

        written: list = []  # called once what is in outgoing now was sent

        def queue(data: bytes, on_written=None) -> None:
            outgoing.append(data)
            if on_written is not None:
                written.append(on_written)
            wakeup.set()

        async def writer() -> None:
            # One send for everything answered since the last one: under load
            # the answers to a whole read go out in one write.
            nonlocal wakeup
            while True:
                await wakeup.wait()
                wakeup = trio.Event()
                data = b"".join(outgoing)
                outgoing.clear()
                done = written[:]
                written.clear()
                await stream.send_all(data)
                for hook in done:
                    hook()

        def decide(msg, payload: bytes) -> tuple[str, dict | None]:
            return decide_message(self, msg, payload)

        def act(fault: str, out: dict | None, msg=None) -> None:
            if fault == "disconnect":
                nursery.cancel_scope.cancel()
            elif fault == "garbage":
                queue(GARBAGE)
            elif out is not None and fault in ("answer", "late", "bad-mac"):
                # An answer in time: once written, the switch has its field 38.
                hook = (lambda: self.sandbox.delivered(msg)) if fault == "answer" and msg is not None else None
                queue(framer.encode(answer_bytes(self, fault, out)), hook)

        async def delayed(delay: float, fault: str, out: dict | None, msg) -> None:
            await trio.sleep(delay)
            act(fault, out, msg)

        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    try:
                        payloads = framer.feed(data)
                    except FrameError as exc:
                        self.log(f"bad message, closing: {type(exc).__name__}")
                        break
                    messages = decoded(self, payloads)
                    if messages is None:
                        break
                    for msg, payload in messages:
                        mti = msg.mti
                        fault, out = decide(msg, payload)
                        if mti == "0800" or mti == "0810":
                            if mti == "0800" and msg.get(70) == SIGN_ON:
                                carried = 0
                            act(fault, out)
                            continue
                        delay = latency + (late if fault == "late" else 0.0)
                        if delay > 0:
                            nursery.start_soon(delayed, delay, fault, out, msg)
                        else:
                            act(fault, out, msg)
                        carried += 1
                        if args.sign_off_after and carried == args.sign_off_after:
                            self.log(f"signing off after {carried} transactions")
                            queue(framer.encode(self.encode(
                                self.sandbox.network_request(SIGN_OFF, transmission_time(time.time())))))
                nursery.cancel_scope.cancel()
        except Exception as exc:  # a bug here must not take the other connections down
            if not _peer_went_away(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
                self.log(f"connection failed: {type(exc).__name__}: {scrub(str(exc))}")
        finally:
            self.connections -= 1

    async def run(self) -> None:
        import trio

        listeners = await trio.open_tcp_listeners(self.args.port, host=self.args.host)
        host, port = listeners[0].socket.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.serve_listeners, self.serve_connection, listeners)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
        finally:
            self.ledger.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payswitch sim acquirer",
                                description="Simulated bank acquirer (ISO 8583 host-87-bcd).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9101, help="0 picks a free port")
    p.add_argument("--name", default="bank-a")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay of every transaction answer")
    p.add_argument("--drop-rate", type=float, default=0.0, help="share of transactions left unanswered")
    p.add_argument("--disconnect-rate", type=float, default=0.0,
                   help="share of transactions answered by closing the connection")
    p.add_argument("--garbage-rate", type=float, default=0.0,
                   help="share of transactions answered with an undecodable frame")
    p.add_argument("--bank-codes", action="store_true",
                   help="amounts ending in 01 04 08 10 11 15 19 41 43 54 57 61 65 75 answer that ISO 8583 code "
                        "(08, 11 approve; 10 approves half the amount, in field 4)")
    p.add_argument("--lenient", action="store_true",
                   help="00 to every reversal and completion, field 37 as fallback (the old sandbox)")
    p.add_argument("--late-ms", type=float, default=0.0,
                   help="how late --late-rate transactions are answered")
    p.add_argument("--late-rate", type=float, default=0.0,
                   help="share of transactions answered --late-ms after the others")
    p.add_argument("--sign-off-after", type=int, default=0, metavar="N",
                   help="send an 0800 sign-off on a connection after every N transactions")
    p.add_argument("--stall-after-echo", action="store_true",
                   help="answer sign-on and echo, never a transaction")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ledger", default=None, help="append one JSON line per transaction event")
    p.add_argument("--mac", choices=["tdes-retail", "aes-cmac"], default=None,
                   help="check the switch's MAC on every message (A0 when missing or wrong), MAC every answer")
    p.add_argument("--bad-mac-rate", type=float, default=0.0,
                   help="share of transactions answered with a wrong MAC (with --mac)")
    p.add_argument("--mac-key", default=None, metavar="HEX",
                   help="the zone MAC key for --mac (default: the sandbox's public ZAK of --name)")
    p.add_argument("--fast", action="store_true",
                   help="run on asyncio + uvloop (adapters.card.fastsim): same decisions, less CPU, for benchmarks")
    return p


def main(argv: list[str] | None = None) -> int:
    import trio

    args = build_parser().parse_args(argv)
    for knob in ("drop_rate", "disconnect_rate", "garbage_rate", "late_rate", "bad_mac_rate"):
        value = getattr(args, knob)
        if not 0.0 <= value <= 1.0:
            print(f"--{knob.replace('_', '-')} must be between 0 and 1, got {value}", file=sys.stderr)
            return 2
    if args.late_rate > 0 and args.late_ms <= 0:
        print("--late-rate needs --late-ms", file=sys.stderr)
        return 2
    if args.sign_off_after < 0:
        print(f"--sign-off-after must be >= 0, got {args.sign_off_after}", file=sys.stderr)
        return 2
    try:
        host_mac(args, None)
    except ValueError as e:
        print(f"--mac: {e}", file=sys.stderr)
        return 2
    if args.bad_mac_rate > 0 and not args.mac:
        print("--bad-mac-rate needs --mac", file=sys.stderr)
        return 2
    if args.fast:
        from adapters.card.fastsim import run

        run(args)
        return 0
    trio.run(Acquirer(args).run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
