"""Loyalty sandbox: a value-added service for the demo merchant (trio + h11).

    payswitch sim loyalty --host 127.0.0.1 --port 9401 [--key-dir DIR]

Speaks the VAS protocol of docs/value-added-services.md: ``POST /vas/before``
and ``POST /vas/after`` with a signed JSON payload; ``GET /members`` shows what
it knows (points and payments per customer token).  The shared secret lives
in ``--key-dir``/``secret`` (created at start when missing, ASCII hex).

Sandbox behaviour, by the coupon code's last two digits (like the card
simulator's amounts):

- ``10`` / ``25`` / ``50``: that percentage off the amount (member price);
- ``99``: expired: the payment goes on at full amount, ``LY`` says so;
- ``77``: the service hangs for 2 s (to watch the switch's deadline);
- anything else: unknown coupon, full amount.

After an approval: one point per full 1.00 (100 minor units) of the amount
paid; the first payment of a token enrols it ("WELCOME ..."), later ones
print the balance.  An approval is counted once per ``ref``.
"""
from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import time
from functools import partial
from pathlib import Path

import h11
import trio

from adapters.wallet.sim import MAX_REQUEST, _read_request, _send, _write
from switch.core.vas import verify

PERCENT = {"10": 10, "25": 25, "50": 50}


class Loyalty:
    def __init__(self, secret: bytes, hang: float = 2.0) -> None:
        self.secret = secret
        self.hang = hang
        self.members: dict[str, dict] = {}
        self.seen: set[str] = set()
        self.requests: list[dict] = []  # every payload, for GET /requests (the tests' artefact scan)

    def handle(self, method: str, target: str, headers: dict[bytes, bytes], body: bytes) -> tuple[int, dict]:
        if method == "GET" and target == "/members":
            return 200, {"members": self.members}
        if method == "GET" and target == "/requests":
            return 200, {"requests": self.requests}
        if method != "POST" or target not in ("/vas/before", "/vas/after"):
            return 404, {"error": "not found"}
        if not verify(self.secret, body, headers.get(b"x-payswitch-signature", b"").decode(), time.time()):
            return 401, {"error": "bad signature"}
        p = read(body)
        if p is None:
            return 400, {"error": "the body is not a payload of docs/value-added-services.md"}
        self.requests.append(p)
        if target == "/vas/before":
            return 200, self.before(p)
        return 200, self.after(p)

    def before(self, p: dict) -> dict:
        coupon = p.get("coupon")
        if not coupon:
            return {}
        tail = coupon[-2:]
        if tail in PERCENT and p.get("amount"):
            amount = p["amount"]
            lowered = amount - amount * PERCENT[tail] // 100
            return {"amount": lowered, "line": f"COUPON {coupon} -{PERCENT[tail]}%"}
        if tail == "99":
            return {"line": f"COUPON {coupon} EXPIRED"}
        return {"line": f"COUPON {coupon} UNKNOWN"}

    def after(self, p: dict) -> dict:
        token = p.get("token")
        if not token:
            return {}
        points = (p.get("amount") or 0) // 100
        member = self.members.get(token)
        new = member is None
        if new:
            member = self.members[token] = {"points": 0, "payments": 0, "merchant": p.get("merchant")}
        if p.get("ref") not in self.seen:
            self.seen.add(p.get("ref"))
            member["points"] += points
            member["payments"] += 1
        if new:
            return {"line": f"WELCOME NEW MEMBER +{points} PTS", "enrolled": True}
        return {"line": f"+{points} PTS BALANCE {member['points']}"}


# The payload's keys and the types each may have (docs/value-added-services.md, "The request").
_TYPES = {"moment": (str,), "ref": (str,), "token": (str, type(None)), "merchant": (str,), "terminal": (str,),
          "amount": (int, type(None)), "currency": (str, type(None)), "kind": (str,), "coupon": (str, type(None))}


def read(body: bytes) -> dict | None:
    """The payload in ``body``, or None for anything else (not JSON, not an object, a key of the wrong type)."""
    try:
        p = json.loads(body)
    except ValueError:
        return None
    if not isinstance(p, dict):
        return None
    for key, types in _TYPES.items():
        value = p.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return None
    if isinstance(p.get("amount"), int) and p["amount"] < 0:
        return None
    return p


def hangs(body: bytes) -> bool:
    """A coupon ending 77: the sandbox hangs (to watch the switch's deadline)."""
    p = read(body)
    return p is not None and (p.get("coupon") or "").endswith("77")


async def serve_connection(service: Loyalty, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    try:
        while True:
            try:
                received = await _read_request(conn, stream)
            except h11.RemoteProtocolError:
                return
            if received is None:
                return
            request, body = received
            headers = {k.lower(): v for k, v in request.headers}
            if request.method == b"POST" and hangs(body):
                await trio.sleep(service.hang)
            status, answer = service.handle(request.method.decode(), request.target.decode(), headers, body)
            await _send(conn, stream, status, json.dumps(answer).encode())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    finally:
        await stream.aclose()


async def serve(service: Loyalty, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                trio.serve_listeners, partial(serve_connection, service),
                await trio.open_tcp_listeners(port, host=host))
            bound = listeners[0].socket.getsockname()
            print(f"listening on {bound[0]}:{bound[1]}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def secret(key_dir: Path) -> bytes:
    key_dir.mkdir(parents=True, exist_ok=True)
    path = key_dir / "secret"
    if not path.exists():
        _write(path, secrets.token_hex(32).encode() + b"\n", private=True)
    return bytes.fromhex(path.read_text().strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payswitch sim loyalty", description="Loyalty sandbox (value-added service)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9401)
    parser.add_argument("--key-dir", type=Path, default=Path("sandbox-keys") / "loyalty")
    parser.add_argument("--hang", type=float, default=2.0, help="seconds a coupon ending 77 hangs")
    args = parser.parse_args(argv)
    trio.run(serve, Loyalty(secret(args.key_dir), args.hang), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
