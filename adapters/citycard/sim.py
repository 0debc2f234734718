"""A city-card clearing centre simulator (trio), speaking ``protocol.py``.

    python -m adapters.citycard.sim --host 127.0.0.1 --port 9301 \\
        [--mk HEX] [--blacklist CARD ...] [--max-balance N] [--latency-ms N]

The ledger rules live in ``centre.py``; this module owns the sockets.  Prints
``listening on HOST:PORT`` (the real port when given 0) once it accepts
connections, and exits 0 on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Sequence

import msgspec
import trio

from .centre import DEMO_MK, MAX_BALANCE, OPENING_BALANCE, Centre
from .protocol import (
    FrameBuffer,
    ProtocolError,
    Response,
    decode_request,
    encode,
    masked,
    request_id,
)

log = logging.getLogger("payswitch.citycard.sim")

_RECEIVE_SIZE = 65536


class Server:
    """Serves one :class:`Centre` to any number of connections."""

    def __init__(self, centre: Centre, latency: float = 0.0) -> None:
        self.centre = centre
        self.latency = latency

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        task_status.started((bound[0], bound[1]))
        await trio.serve_listeners(self.handle_connection, listeners)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        log.debug("connection from %s", peer)
        async with stream, trio.open_nursery() as nursery:
            await self._receive(stream, nursery, peer)
            nursery.cancel_scope.cancel()  # answers still delayed have no one to go to
        log.debug("connection from %s closed", peer)

    async def _receive(self, stream: trio.SocketStream, nursery: trio.Nursery, peer: str) -> None:
        frames = FrameBuffer()
        send_lock = trio.Lock()
        try:
            while data := await stream.receive_some(_RECEIVE_SIZE):
                for payload in frames.feed(data):
                    if self.latency:
                        nursery.start_soon(self._late, stream, send_lock, payload)
                    else:
                        await self._send(stream, send_lock, self._process(payload))
        except ProtocolError as exc:
            log.warning("closing %s: %s", peer, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _process(self, payload: bytes) -> Response:
        try:
            request = decode_request(payload)
        except msgspec.MsgspecError as exc:
            rid = request_id(payload)
            if rid is None:
                raise ProtocolError(f"unreadable request: {masked(str(exc))}") from None
            log.info("request %d refused (30): %s", rid, masked(str(exc)))
            return Response(id=rid, code="30")
        try:
            return self.centre.handle(request)
        except Exception:  # our bug: answer 96 and keep serving
            log.exception("request %d failed", request.id)
            return Response(id=request.id, code="96")

    async def _late(self, stream: trio.SocketStream, send_lock: trio.Lock, payload: bytes) -> None:
        # The centre books when it answers, so a client that timed out before
        # the answer may still have been debited (an uncertain outcome).
        await trio.sleep(self.latency)
        try:
            reply = self._process(payload)
        except ProtocolError as exc:
            log.warning("closing connection: %s", exc)
            await stream.aclose()
            return
        try:
            await self._send(stream, send_lock, reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    @staticmethod
    async def _send(stream: trio.SocketStream, lock: trio.Lock, reply: Response) -> None:
        async with lock:
            await stream.send_all(encode(reply))


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payswitch sim citycard",
        description="City-card clearing centre simulator (spec 4.1 and 7).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9301, help="0 picks a free port")
    parser.add_argument(
        "--mk", type=_key16, default=DEMO_MK,
        help="issuer master key, 32 hex digits (default: the demo MK of spec 4.1)",
    )
    parser.add_argument(
        "--blacklist", nargs="*", default=[], metavar="CARD", help="cards answered 62",
    )
    parser.add_argument(
        "--prefix", action="append", metavar="DIGITS",
        help="card range of this issuer, repeatable (default 8800); others answer 14",
    )
    parser.add_argument(
        "--opening-balance", type=int, default=OPENING_BALANCE,
        help="balance of a card the centre has not seen yet, minor units",
    )
    parser.add_argument(
        "--max-balance", type=int, default=MAX_BALANCE,
        help="the most a card may hold after a top-up, minor units (a top-up beyond it answers 13)",
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before each answer")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def _key16(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("MK must be hex digits") from None
    if len(key) != 16:
        raise argparse.ArgumentTypeError(f"MK must be 16 bytes (32 hex digits), got {len(key)}")
    return key


async def _run(args: argparse.Namespace) -> None:
    centre = Centre(
        mk=args.mk,
        blacklist=frozenset(args.blacklist),
        prefixes=tuple(args.prefix or ("8800",)),
        opening_balance=args.opening_balance,
        max_balance=args.max_balance,
    )
    server = Server(centre, latency=args.latency_ms / 1000)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(server.serve, args.host, args.port)
            print(f"listening on {host}:{port}", flush=True)
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        trio.run(_run, args)
    except OSError as exc:
        print(f"citycard sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
