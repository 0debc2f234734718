"""Value-added services on asyncio: the HTTP client, in-process plugins, token keys.

The driver (``switch.io.service``) hands every :class:`~switch.core.commands.Vas`
command to :meth:`Services.call`, which calls the named services at once,
each under its own deadline (``asyncio.timeout``), and maps each name to the
service's JSON answer or to what stopped it.  Nothing here raises into the
payment.

- ``type = "http"``: ``POST <url>/vas/<moment>`` with the payload as JSON,
  signed (``X-Payswitch-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t." + body>``)
  under the service's secret, on a keep-alive pool (the wallet adapters' h11 pool).
- any other type: a plugin registered under the entry points ``payswitch.vas``,
  a factory ``(service config) -> object`` with ``async call(moment, payload) -> dict``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from importlib.metadata import entry_points
from pathlib import Path

from switch import config as config_mod
from switch.core.commands import Vas
from switch.core.vas import sign

log = logging.getLogger("payswitch")

GROUP = "payswitch.vas"
SIGNATURE_HEADER = "X-Payswitch-Signature"


def read_secret(src: str, what: str, file: str | None, env: str | None, where: str) -> bytes:
    """A hex secret from a file or an environment variable (at least 16 bytes)."""
    if env:
        raw = os.environ.get(env)
        if raw is None:
            raise config_mod.ConfigError(f"{src}: environment variable {env} is not set - at `$.{where}`")
    elif file:
        try:
            raw = Path(file).read_text()
        except OSError as e:
            raise config_mod.ConfigError(f"{src}: cannot read {what} {file}: {e.strerror} - at `$.{where}`") from None
    else:
        raise config_mod.ConfigError(f"{src}: {what} needs a secret_file or secret_env - at `$.{where}`")
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise config_mod.ConfigError(f"{src}: {what} must hold at least 16 bytes as hex - at `$.{where}`")
    return key


def load_token_keys(cfg: config_mod.Config, create: bool = True) -> dict[str, tuple[int, bytes]]:
    """Group → (version, key) of the highest version configured for each merchant group.

    A group of a merchant that has services but no configured key gets one
    created beside the journal on first start (mode 0600), like the journal key.
    Never the journal's PAN key.
    """
    from switch import wiring

    chosen: dict[str, tuple[int, object]] = {}
    for i, k in enumerate(cfg.token_keys):
        if k.group not in chosen or k.version > chosen[k.group][0]:
            chosen[k.group] = (k.version, (i, k))
    served = {m for s in cfg.vas for m in s.merchants}
    groups = {mc.group or mc.id for mc in cfg.merchants if mc.id in served}
    base = wiring.journal_key_path(cfg)
    out: dict[str, tuple[int, bytes]] = {}
    for group in groups | set(chosen):
        if group in chosen:
            version, (i, k) = chosen[group]
            if k.key_env or k.key_file:
                out[group] = (version, read_secret(cfg.source, "token key", k.key_file, k.key_env,
                                                   f"token_keys[{i}]"))
                continue
        else:
            version = 1
        if cfg.journal.url.endswith(":memory:"):
            out[group] = (version, secrets.token_bytes(32))  # a journal that forgets: tokens may too
            continue
        folder = base.parent if base is not None else Path(".")
        stem = base.name.removesuffix(".key") if base is not None else "payswitch-journal"
        path = folder / f"{stem}.token-{group}-v{version}.key"
        if not path.exists() and create:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            log.info("created customer-token key file %s (mode 0600)", path)
        out[group] = (version, read_secret(cfg.source, "token key", str(path), None, "token_keys"))
    return out


class HttpService:
    """A service over HTTP: JSON, HMAC-signed, keep-alive."""

    def __init__(self, s: config_mod.config_vas.VasService, index: int, source: str, simulated: bool) -> None:
        from adapters.wallet.http import ConnectionPool  # the house keep-alive pool (h11)

        self.name = s.name
        self._secret_args = (source, f"service {s.name!r} secret", s.secret_file, s.secret_env, f"vas[{index}]")
        self.secret = None
        try:
            self.secret = read_secret(*self._secret_args)
        except config_mod.ConfigError:
            if not simulated:
                raise  # a bundled simulator writes its secret when it starts: read at the first call
        self.pool = ConnectionPool(s.url, size=s.connections)
        self.deadline = s.deadline

    async def call(self, moment: str, payload: dict) -> dict:
        from adapters.wallet.http import TransportError

        if self.secret is None:
            self.secret = read_secret(*self._secret_args)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers_sig = sign(self.secret, body, int(time.time()))
        try:
            resp = await self.pool.request("POST", f"/vas/{moment}", body, timeout=self.deadline,
                                           headers=[(SIGNATURE_HEADER, headers_sig)])
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


def vas_types() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


class Services:
    """Every configured service, by name."""

    def __init__(self, cfg: config_mod.Config) -> None:
        self.services: dict = {}
        self.deadlines: dict[str, float] = {}
        types = None
        for i, s in enumerate(cfg.vas):
            if s.type == "http":
                service = HttpService(s, i, cfg.source, s.name in {sim.name for sim in cfg.simulators})
            else:
                types = vas_types() if types is None else types
                ep = types.get(s.type)
                if ep is None:
                    raise config_mod.ConfigError(
                        f"{cfg.source}: unknown value-added service type {s.type!r} "
                        f"(http or registered under {GROUP}: {', '.join(types) or 'none'}) - at `$.vas[{i}].type`")
                service = ep.load()(s)
            self.services[s.name] = service
            self.deadlines[s.name] = s.deadline

    async def call(self, command: Vas) -> dict:
        names = command.services
        results = await asyncio.gather(*(self._one(n, command) for n in names))
        return dict(zip(names, results))

    async def _one(self, name: str, command: Vas):
        service = self.services.get(name)
        if service is None:
            return LookupError(name)
        try:
            async with asyncio.timeout(min(self.deadlines[name], command.deadline)):
                return await service.call(command.moment, command.payload)
        except TimeoutError as e:
            return e
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a service's failure is never the payment's
            log.debug("service %s failed: %s", name, e)
            return e

    async def close(self) -> None:
        for s in self.services.values():
            close = getattr(s, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
