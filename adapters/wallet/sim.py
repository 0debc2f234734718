"""Wallet simulator: the sandbox of :mod:`.sandbox` served over HTTP/1.1 (trio + h11).

    python -m adapters.wallet.sim --style tradepay|micropay --host 127.0.0.1 --port N
        [--confirm-delay 6.0] [--cancel-retries 1] [--late-delay 40.0] [--key-dir DIR]

Prints ``listening on HOST:PORT`` once ready (``--port 0`` picks a free port)
and exits cleanly on SIGTERM / SIGINT.  ``GET /sandbox/ledger`` lists the
orders with their states and how many times each was charged and refunded.

Keys (sandbox only) live in ``--key-dir``; missing ones are generated there
at start, existing ones are reused, so the switch's configuration can point
at the same files across restarts:

- tradepay: ``wallet_private.pem`` (signs answers), ``wallet_public.pem``
  (the switch verifies with it), ``merchant_private.pem`` (the switch signs
  with it), ``merchant_public.pem`` (verifies requests);
- micropay: ``micropay_secret`` (the shared HMAC secret, ASCII hex).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import h11
import trio

from . import sandbox, signing

IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may sit idle
MAX_REQUEST = 64 * 1024
DEFAULT_PORTS = {"tradepay": 9201, "micropay": 9202}
# A 06 pay lands after the sandbox switch cancelled it (its wallets' hold: 45 s less a 10 s
# cancel_margin), inside reversal_not_found_window: the cancel repeated then refunds it.
LATE_DELAY = 40.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payswitch sim wallet",
        description="Barcode-wallet sandbox (spec section 7): trade.pay or micropay style.",
    )
    parser.add_argument("--style", choices=("tradepay", "micropay"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default 9201 tradepay, 9202 micropay; 0: any free port)")
    parser.add_argument("--confirm-delay", type=float, default=6.0,
                        help="seconds until the customer confirms (01) or declines (02)")
    parser.add_argument("--cancel-retries", type=int, default=1,
                        help="cancels/reverses of each order answered 'retry' before the real one")
    parser.add_argument("--late-delay", type=float, default=LATE_DELAY,
                        help="seconds a pay with a code ending in 06 takes to reach the wallet (its answer "
                             "waits as long): to land after the switch has cancelled it, longer than the "
                             "wallet acquirer's hold (its timeout less cancel_margin: 35 s in the sandbox), "
                             "and within reversal_not_found_window (120 s) for the refund")
    parser.add_argument("--key-dir", type=Path, default=None,
                        help="sandbox key files (default ./sandbox-keys/wallet-STYLE)")
    return parser


def _write(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pair(key_dir: Path, name: str) -> tuple[bytes, bytes]:
    private, public = key_dir / f"{name}_private.pem", key_dir / f"{name}_public.pem"
    if private.exists() and public.exists():
        return private.read_bytes(), public.read_bytes()
    private_pem, public_pem = signing.generate_rsa_pem()
    _write(private, private_pem, private=True)
    _write(public, public_pem, private=False)
    return private_pem, public_pem


def tradepay_keys(key_dir: Path) -> tuple[bytes, bytes]:
    """(wallet private PEM, merchant public PEM), generating missing pairs."""
    key_dir.mkdir(parents=True, exist_ok=True)
    wallet_private, _ = _key_pair(key_dir, "wallet")
    merchant_public = key_dir / "merchant_public.pem"
    if merchant_public.exists():  # a merchant may register its own public key alone
        return wallet_private, merchant_public.read_bytes()
    return wallet_private, _key_pair(key_dir, "merchant")[1]


def micropay_secret(key_dir: Path) -> bytes:
    key_dir.mkdir(parents=True, exist_ok=True)
    path = key_dir / "micropay_secret"
    if path.exists():
        return path.read_bytes().strip()
    secret = secrets.token_hex(16).encode()
    _write(path, secret + b"\n", private=True)
    return secret


def build_wallet(args: argparse.Namespace) -> sandbox.TradePayWallet | sandbox.MicroPayWallet:
    key_dir = args.key_dir or Path("sandbox-keys") / f"wallet-{args.style}"
    # The start time keeps trade numbers unique across restarts of the simulator.
    prefix = ("2088" if args.style == "tradepay" else "4200") + f"{int(time.time()):010d}"
    ledger = sandbox.Ledger(confirm_delay=args.confirm_delay,
                            cancel_retries=args.cancel_retries, trade_no_prefix=prefix,
                            late_delay=args.late_delay)
    if args.style == "tradepay":
        wallet_private, merchant_public = tradepay_keys(key_dir)
        return sandbox.TradePayWallet(ledger, signing.RsaSigner(wallet_private),
                                      signing.RsaVerifier(merchant_public))
    return sandbox.MicroPayWallet(ledger, micropay_secret(key_dir))


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            timeout = IDLE_TIMEOUT if request is None else 10.0
            with trio.move_on_after(timeout):
                conn.receive_data(await stream.receive_some(65536))
                continue
            return None
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes) -> None:
    headers = [("Content-Type", sandbox.JSON), ("Content-Length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def serve_connection(wallet, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    try:
        while True:
            try:
                received = await _read_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(conn, stream, exc.error_status_hint, b'{"error":"bad request"}')
                return
            if received is None:
                return
            request, body = received
            try:
                status, payload = wallet.handle(request.method.decode(), request.target.decode(),
                                                body, time.monotonic())
                hold = wallet.ledger.take_hold()
            except Exception:  # a simulator bug: say so, keep serving the others
                traceback.print_exc()
                status, payload, hold = 500, b'{"error":"simulator error"}', 0.0
            if hold:
                await trio.sleep(hold)  # a pay on its way (06): answered once it lands
            await _send(conn, stream, status, payload)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    finally:
        await stream.aclose()


async def serve(wallet, host: str, port: int) -> None:
    """Serve until SIGTERM / SIGINT; announce only once both are handled."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                trio.serve_listeners, partial(serve_connection, wallet),
                await trio.open_tcp_listeners(port, host=host))
            bound = listeners[0].socket.getsockname()
            print(f"listening on {bound[0]}:{bound[1]}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wallet = build_wallet(args)
    port = DEFAULT_PORTS[args.style] if args.port is None else args.port
    trio.run(serve, wallet, args.host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
