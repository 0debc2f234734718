"""A payShield-style HSM simulator (trio), speaking the subset of ``switch.security.thales``.

    payswitch sim hsm --port 1500 (--lmk-file FILE | --lmk-env VAR | --sandbox) [--header-length 4]
    payswitch sim hsm --sandbox --write-key-table FILE   # the sandbox keys under the sandbox LMK, then exit

The LMK (64 hex digits, see ``switch.security.thales_host.Lmk``) is read from
a file or an environment variable; ``--sandbox`` uses the public sandbox LMK
(sandbox only). Prints ``listening on HOST:PORT`` once it accepts
connections; exits 0 on SIGTERM or SIGINT. Nothing it logs quotes a PIN
block, a key or an account number: one line per command, code and error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import trio

from switch.security import sandbox, thales
from switch.security.thales_host import Host, Lmk
from switch.secret_refs import shown

log = logging.getLogger("payswitch.hsm.sim")

_RECEIVE_SIZE = 65536


class Server:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def serve(self, address: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=address)
        bound = listeners[0].socket.getsockname()
        task_status.started((bound[0], bound[1]))
        await trio.serve_listeners(self.handle_connection, listeners)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        framer = thales.Framer()
        async with stream:
            try:
                while data := await stream.receive_some(_RECEIVE_SIZE):
                    for body in framer.feed(data):
                        answer = self.host.handle(body)
                        log.debug("%s -> %s", body[self.host.header_length : self.host.header_length + 2], answer[2 + self.host.header_length :][:4])
                        await stream.send_all(answer)
            except thales.CodecError as exc:
                log.warning("closing a connection: %s", exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payswitch sim hsm", description="payShield-style HSM simulator (subset)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1500, help="0 picks a free port")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--lmk-file", help="file holding the LMK (64 hex digits)")
    g.add_argument("--lmk-env", help="environment variable holding the LMK")
    g.add_argument("--sandbox", action="store_true", help="the public sandbox LMK (sandbox only)")
    p.add_argument("--header-length", type=int, default=4)
    p.add_argument("--write-key-table", metavar="FILE", help="with --sandbox: write the sandbox key table and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command (code and error only)")
    return p


def _lmk(args) -> Lmk:
    if args.sandbox:
        return Lmk(sandbox.HSM_LMK_HEX)
    if args.lmk_file:
        try:
            return Lmk(Path(args.lmk_file).read_text().strip())
        except OSError as e:  # str(e) would quote the name: an LMK pasted in its place
            raise ValueError(f"LMK file {shown(args.lmk_file, 'file')}: {e.strerror}") from None
    text = os.environ.get(args.lmk_env, "")
    if not text:
        raise ValueError(f"LMK variable {shown(args.lmk_env, 'env')} is not set")
    return Lmk(text.strip())


async def _run(args: argparse.Namespace, host: Host) -> None:
    server = Server(host)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            address, port = await nursery.start(server.serve, args.host, args.port)
            print(f"listening on {address}:{port}", flush=True)
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
        lmk = _lmk(args)
    except (OSError, ValueError) as exc:
        print(f"hsm sim: {exc}", file=sys.stderr)
        return 2
    if args.write_key_table:
        if not args.sandbox:
            print("hsm sim: --write-key-table is for the sandbox keys (--sandbox)", file=sys.stderr)
            return 2
        Path(args.write_key_table).write_text(json.dumps(sandbox.hsm_key_table(), indent=2) + "\n")
        print(f"wrote {args.write_key_table}")
        return 0
    try:
        trio.run(_run, args, Host(lmk, args.header_length))
    except OSError as exc:
        print(f"hsm sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
