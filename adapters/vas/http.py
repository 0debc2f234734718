"""The bundled ``http`` value-added service type: JSON over HTTP, HMAC-signed, keep-alive.

``POST <url>/vas/<moment>`` with the payload as JSON and
``X-Payswitch-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``
under the service's secret, on the wallets' h11 keep-alive pool.  Any
failure raises; the switch's driver turns it into "no service this time".
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from adapters.wallet.http import ConnectionPool, TransportError
from switch.core.vas import sign
from switch.secret_refs import shown

SIGNATURE_HEADER = "X-Payswitch-Signature"


def read_hex_secret(file: str | None, env: str | None) -> bytes:
    """A hex secret of at least 16 bytes from a file or an environment variable (ValueError if not)."""
    if env:
        raw = os.environ.get(env)
        if raw is None:
            raise ValueError(f"environment variable {shown(env, 'env')} is not set")
    elif file:
        try:
            raw = Path(file).read_text()
        except OSError as e:
            raise ValueError(f"cannot read {shown(file, 'file')}: {e.strerror}") from None
    else:
        raise ValueError("needs secret_file or secret_env")
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError("the secret must hold at least 16 bytes as hex")
    return key


class HttpService:
    def __init__(self, s) -> None:
        self.name = s.name
        self._files = (s.secret_file, s.secret_env)
        try:
            self.secret: bytes | None = read_hex_secret(*self._files)
        except ValueError:
            # Checked at start-up (switch.preflight) unless a bundled simulator
            # writes it when it starts: then read at the first call.
            self.secret = None
        self.pool = ConnectionPool(s.url, size=s.connections)
        self.deadline = s.deadline

    async def call(self, moment: str, payload: dict) -> dict:
        if self.secret is None:
            self.secret = read_hex_secret(*self._files)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [(SIGNATURE_HEADER, sign(self.secret, body, int(time.time())))]
        try:
            resp = await self.pool.request("POST", f"/vas/{moment}", body, timeout=self.deadline, headers=headers)
        except TransportError as e:
            raise ConnectionError(str(e)) from None
        if resp.status != 200:
            raise ConnectionError(f"HTTP {resp.status}")
        answer = json.loads(resp.body)
        if not isinstance(answer, dict):
            raise ValueError("answer is not a JSON object")
        return answer

    async def close(self) -> None:
        await self.pool.close()


def http(s) -> HttpService:
    """Factory of the ``payswitch.vas`` entry point ``http``."""
    if s.options:  # the table is for in-process plugins: here it would be ignored without a word
        raise ValueError(f"http services take no options table (got {', '.join(sorted(s.options))})")
    return HttpService(s)
