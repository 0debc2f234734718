"""A simulated bank acquirer: ISO 8583 host-87-bcd over TCP, on trio.

    python -m adapters.card.sim --host 127.0.0.1 --port 9101 --name bank-a \
        [--latency-ms 5] [--drop-rate 0.0] [--disconnect-rate 0.0] \
        [--garbage-rate 0.0] [--seed N] [--ledger FILE]

Sandbox behaviour (terminal-interface spec, section 7): 0100/0200 are
answered by the last two digits of the amount (field 4): 05, 13, 51, 55, 96
give that response code, 68 is never answered, anything else is approved (00)
with a 6-character authorization code.  0220 -> 0230 00, 0400 -> 0410 00
(idempotent; an unknown original is acknowledged too), 0800 -> 0810 00.

Faults apply to transactions (0100/0200/0220/0400), never to network
management, so a link can always sign on: ``--drop-rate`` leaves a request
unanswered, ``--disconnect-rate`` closes the connection instead of answering,
``--garbage-rate`` sends a frame that no codec accepts, ``--latency-ms``
delays every transaction answer.

``--ledger FILE`` appends one JSON line per transaction event and flushes it,
so an end-to-end test can check what the acquirer saw (for example that a
timed-out authorization was reversed).

Once listening it prints ``listening on HOST:PORT`` (``--port 0`` picks a free
port).  SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import string
import sys
from collections import OrderedDict
from typing import IO, Any

from adapters.card.hostlink import answer_mti, mask_pan, scrub

# Last two digits of the amount -> response code (spec section 7).
DECLINES = {"05": "05", "13": "13", "51": "51", "55": "55", "96": "96"}
NEVER_ANSWERS = "68"

# Fields an answer echoes from its request.
ECHOED = (3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49)
NETWORK_ECHOED = (7, 11, 70)

# A frame no host-87-bcd codec accepts: declared length 0xFFFF > the 8192 maximum.
GARBAGE = b"\xff\xffGARBAGE-FROM-THE-ACQUIRER"

AUTH_ALPHABET = string.ascii_uppercase + string.digits


def sandbox_response_code(amount: str | None) -> str | None:
    """The sandbox's answer to an authorization: a response code, or None
    when the acquirer never answers (amount ending in 68)."""
    if not amount:
        return "00"
    last2 = amount[-2:]
    if last2 == NEVER_ANSWERS:
        return None
    return DECLINES.get(last2, "00")


def parse_original_data(f90: str) -> dict:
    """Field 90: original MTI (4), STAN (6), field 7 (10), acquirer id (11), zeros (11)."""
    return {
        "mti": f90[0:4],
        "stan": f90[4:10],
        "f7": f90[10:20],
        "acquirer_id": f90[20:31],
    }


def choose_fault(rng: random.Random, drop_rate: float, disconnect_rate: float,
                 garbage_rate: float) -> str:
    """One draw per transaction: "disconnect", "garbage", "drop" or "answer"."""
    r = rng.random()
    if r < disconnect_rate:
        return "disconnect"
    r -= disconnect_rate
    if r < garbage_rate:
        return "garbage"
    r -= garbage_rate
    if r < drop_rate:
        return "drop"
    return "answer"


class Sandbox:
    """The acquirer's decisions and memory, without I/O.

    :meth:`handle` takes a received message (``.mti``, ``.get(n)``) and returns
    ``(answer, ledger_events)``: the answer as a dict for the codec (None: no
    answer) and the JSON-able events to append to the ledger.
    """

    def __init__(self, name: str = "bank-a", seed: int | None = None, memory: int = 200_000) -> None:
        self.name = name
        self._rng = random.Random(seed)
        self._rrn_seq = 0
        self._memory = memory
        # Authorizations by (MTI, STAN, field 7, field 32): for reversals.
        self._auths: OrderedDict[tuple, dict] = OrderedDict()
        self._auths_by_rrn: OrderedDict[str, dict] = OrderedDict()
        # Reversals by field 90: a repeated reversal gets the same answer.
        self._reversals: OrderedDict[str, dict] = OrderedDict()

    def _remember(self, table: OrderedDict, key: Any, value: dict) -> None:
        table[key] = value
        if len(table) > self._memory:
            table.popitem(last=False)

    def auth_code(self) -> str:
        return "".join(self._rng.choice(AUTH_ALPHABET) for _ in range(6))

    def rrn(self) -> str:
        self._rrn_seq += 1
        return f"{self._rrn_seq:012d}"

    def handle(self, msg: Any) -> tuple[dict | None, list[dict]]:
        mti = msg.mti
        if mti == "0800":
            return self._network(msg), []
        if mti in ("0100", "0200"):
            return self._authorization(msg)
        if mti == "0220":
            return self._completion(msg)
        if mti in ("0400", "0401"):
            return self._reversal(msg)
        return None, [{"event": "unsupported", "mti": mti}]

    @staticmethod
    def _echo(msg: Any, mti: str, fields: tuple) -> dict:
        out: dict[Any, Any] = {"mti": answer_mti(mti)}
        for field in fields:
            value = msg.get(field)
            if value is not None:
                out[field] = value
        return out

    def _network(self, msg: Any) -> dict:
        out = self._echo(msg, "0800", NETWORK_ECHOED)
        out[39] = "00"
        return out

    def _authorization(self, msg: Any) -> tuple[dict | None, list[dict]]:
        mti = msg.mti
        amount = msg.get(4)
        rc = sandbox_response_code(amount)
        out = self._echo(msg, mti, ECHOED)
        if 37 not in out:
            out[37] = self.rrn()
        auth_code = None
        if rc == "00":
            auth_code = out[38] = self.auth_code()
        if rc is not None:
            out[39] = rc
        record = {
            "event": "authorization",
            "acquirer": self.name,
            "mti": mti,
            "stan": msg.get(11),
            "f7": msg.get(7),
            "rrn": out[37],
            "terminal_id": msg.get(41),
            "pan": mask_pan(msg.get(2)),
            "processing_code": msg.get(3),
            "amount": int(amount) if amount else 0,
            "response_code": rc,
            "auth_code": auth_code,
            "answered": rc is not None,
            # Field 55 as received, by digest: it may hold the PAN (tag 5A).
            "icc_sha256": hashlib.sha256(icc).hexdigest() if (icc := msg.get(55)) else None,
        }
        key = (mti, msg.get(11), msg.get(7), msg.get(32))
        self._remember(self._auths, key, record)
        self._remember(self._auths_by_rrn, record["rrn"], record)
        return (out if rc is not None else None), [record]

    def _completion(self, msg: Any) -> tuple[dict, list[dict]]:
        out = self._echo(msg, "0220", ECHOED)
        if 37 not in out:
            out[37] = self.rrn()
        out[39] = "00"
        f90 = msg.get(90)
        record = {
            "event": "completion",
            "acquirer": self.name,
            "stan": msg.get(11),
            "f7": msg.get(7),
            "rrn": out[37],
            "amount": int(msg.get(4)) if msg.get(4) else 0,
            "original_stan": parse_original_data(f90)["stan"] if f90 else None,
            "response_code": "00",
        }
        return out, [record]

    def _reversal(self, msg: Any) -> tuple[dict, list[dict]]:
        out = self._echo(msg, "0400", ECHOED)
        if 37 not in out:
            out[37] = self.rrn()
        out[39] = "00"
        f90 = msg.get(90) or ""
        original = parse_original_data(f90) if f90 else {}
        key = (original.get("mti"), original.get("stan"), original.get("f7"), msg.get(32))
        found = self._auths.get(key)
        if found is None and msg.get(37):
            # A reversal that could not name the original's STAN still carries its RRN.
            found = self._auths_by_rrn.get(msg.get(37))
        # A repeat names the same original the same way (field 90 alone is all
        # zeros when the switch could only name the original by its RRN).
        reversal_key = f"{f90}|{msg.get(37) or ''}"
        repeat = reversal_key in self._reversals
        record = {
            "event": "reversal",
            "acquirer": self.name,
            "stan": msg.get(11),
            "f7": msg.get(7),
            "rrn": msg.get(37),
            "amount": int(msg.get(4)) if msg.get(4) else 0,
            "original_mti": original.get("mti"),
            "original_stan": original.get("stan"),
            "original_f7": original.get("f7"),
            "original_found": found is not None,
            "original_response_code": found["response_code"] if found else None,
            "repeat": repeat,
            "response_code": "00",
        }
        if not repeat:
            self._remember(self._reversals, reversal_key, record)
        return out, [record]


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

class Acquirer:
    def __init__(self, args: argparse.Namespace) -> None:
        from native.framing import Framer  # noqa: F401  (fail early if not built)
        from native.iso8583 import dialect

        self.args = args
        self.dialect = dialect("host-87-bcd")
        self.sandbox = Sandbox(args.name, args.seed)
        self.ledger = Ledger(args.ledger)
        self.faults = random.Random(None if args.seed is None else args.seed + 1)
        self.connections = 0

    def log(self, text: str) -> None:
        print(f"{self.args.name}: {text}", file=sys.stderr, flush=True)

    async def serve_connection(self, stream) -> None:
        import trio
        from native.framing import FrameError, Framer
        from native.iso8583 import DecodeError

        self.connections += 1
        framer = Framer("binary2", max_frame=8192)
        latency = self.args.latency_ms / 1000.0
        outgoing: list[bytes] = []
        wakeup = trio.Event()

        def queue(data: bytes) -> None:
            outgoing.append(data)
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
                await stream.send_all(data)

        def decide(msg) -> tuple[str, dict | None]:
            fault = "answer"
            if msg.mti != "0800":
                fault = choose_fault(self.faults, self.args.drop_rate,
                                     self.args.disconnect_rate, self.args.garbage_rate)
            out, events = self.sandbox.handle(msg)
            if fault != "answer":
                for event in events:
                    event["fault"] = fault
            self.ledger.write(events)
            return fault, out

        def act(fault: str, out: dict | None) -> None:
            if fault == "disconnect":
                nursery.cancel_scope.cancel()
            elif fault == "garbage":
                queue(GARBAGE)
            elif out is not None and fault == "answer":
                queue(framer.encode(self.dialect.encode(out)))

        async def delayed(fault: str, out: dict | None) -> None:
            await trio.sleep(latency)
            act(fault, out)

        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    try:
                        payloads = framer.feed(data)
                        messages = [self.dialect.decode(p) for p in payloads]
                    except (FrameError, DecodeError) as exc:
                        self.log(f"bad message, closing: {type(exc).__name__}")
                        break
                    for msg in messages:
                        fault, out = decide(msg)
                        if latency > 0 and msg.mti != "0800":
                            nursery.start_soon(delayed, fault, out)
                        else:
                            act(fault, out)
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
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ledger", default=None, help="append one JSON line per transaction event")
    return p


def main(argv: list[str] | None = None) -> int:
    import trio

    args = build_parser().parse_args(argv)
    for knob in ("drop_rate", "disconnect_rate", "garbage_rate"):
        value = getattr(args, knob)
        if not 0.0 <= value <= 1.0:
            print(f"--{knob.replace('_', '-')} must be between 0 and 1, got {value}", file=sys.stderr)
            return 2
    trio.run(Acquirer(args).run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
