"""Value-added services on asyncio: the HTTP client, in-process plugins, token keys.

The driver (``switch.io.service``) hands every :class:`~switch.core.commands.Vas`
command to :meth:`Services.call`, which calls the named services at once,
each under its own deadline (``asyncio.timeout``), and maps each name to the
service's JSON answer or to what stopped it.  Nothing here raises into the
payment.

Service types are found like acquirer types: entry points ``payswitch.vas``,
each a factory ``(service config) -> object`` with ``async call(moment,
payload) -> dict`` (and optionally ``async close()``); the bundled ``http``
type (:mod:`adapters.vas.http`: signed JSON on a keep-alive pool) is always
there.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from native.panguard import mask_pans
from switch import config as config_mod
from switch.core.commands import Vas
from switch.secret_refs import shown

log = logging.getLogger("payswitch")

GROUP = "payswitch.vas"


def read_secret(src: str, what: str, file: str | None, env: str | None, where: str) -> bytes:
    """A hex secret from a file or an environment variable (at least 16 bytes)."""
    if env:
        raw = os.environ.get(env)
        if raw is None:
            raise config_mod.ConfigError(f"{src}: environment variable {shown(env, 'env')} is not set - at `$.{where}`")
    elif file:
        try:
            raw = Path(file).read_bytes().decode("ascii", "replace")  # not text: not hex either, said below
        except OSError as e:
            raise config_mod.ConfigError(f"{src}: cannot read {what} {shown(file, 'file')}: {e.strerror} - at `$.{where}`") from None
    else:
        raise config_mod.ConfigError(f"{src}: {what} needs a secret_file or secret_env - at `$.{where}`")
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise config_mod.ConfigError(f"{src}: {what} must hold at least 16 bytes as hex - at `$.{where}`")
    return key


def token_key_path(i: int, k) -> str:
    """The key path of configured token key ``i``'s secret: ``token_keys[i].key_env`` or ``.key_file``."""
    return f"token_keys[{i}].{'key_env' if k.key_env else 'key_file'}"


def check_token_key_folders(cfg: config_mod.Config) -> None:
    """Raise ConfigError for the first merchant group whose token key would be created where no
    key is kept: the journal key comes from an environment variable, so there is no key folder
    to put it beside (never the working directory, whatever it is when the switch starts).
    Called by :func:`load_token_keys` and by check-config (switch.preflight)."""
    from switch import wiring

    if wiring.journal_key_path(cfg) is not None or cfg.journal.url.endswith(":memory:"):
        return
    chosen, groups = _token_groups(cfg)
    given = {group for group, (_, (_, k)) in chosen.items() if k.key_env or k.key_file}
    for group in groups:
        if group not in given:
            raise config_mod.ConfigError(
                f"{cfg.source}: `$.token_keys`: merchant group {group!r} has value-added services and no token"
                " key file or variable, and with the journal key in [journal] hmac_key_env there is no key"
                f" folder to create one in: add [[token_keys]] group = {group!r} with key_file or key_env")


def _token_groups(cfg: config_mod.Config) -> tuple[dict[str, tuple[int, tuple[int, Any]]], list[str]]:
    """(group → (version, (index, key)) of its highest configured version; every group that needs a key)."""
    chosen: dict[str, tuple[int, tuple[int, Any]]] = {}
    for i, k in enumerate(cfg.token_keys):
        if k.group not in chosen or k.version > chosen[k.group][0]:
            chosen[k.group] = (k.version, (i, k))
    served = {merchant_id for s in cfg.vas for merchant_id in s.merchants}
    groups = {mc.group or mc.id for mc in cfg.merchants if mc.id in served}
    return chosen, sorted(groups | set(chosen))


def load_token_keys(cfg: config_mod.Config, create: bool = True) -> dict[str, tuple[int, bytes]]:
    """Group → (version, key) of the highest version configured for each merchant group.

    A group of a merchant that has services but no configured key gets one
    created beside the journal on first start (mode 0600), like the journal key.
    Never the journal's PAN key.
    """
    from switch import wiring

    check_token_key_folders(cfg)  # a key to create has a folder to go in (base is not None)
    chosen, groups = _token_groups(cfg)
    base = wiring.journal_key_path(cfg)
    out: dict[str, tuple[int, bytes]] = {}
    for group in groups:
        if group in chosen:
            version, (i, k) = chosen[group]
            if k.key_env or k.key_file:
                out[group] = (version, read_secret(cfg.source, "token key", k.key_file, k.key_env,
                                                   token_key_path(i, k)))
                continue
        else:
            version = 1
        if cfg.journal.url.endswith(":memory:"):
            out[group] = (version, secrets.token_bytes(32))  # a journal that forgets: tokens may too
            continue
        path = base.parent / f"{base.name.removesuffix('.key')}.token-{group}-v{version}.key"
        if not path.exists() and create:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            log.info("created customer-token key file %s (mode 0600)", path)
        out[group] = (version, read_secret(cfg.source, "token key", str(path), None, "token_keys"))
    return out


# Bundled types, found even without an installed distribution (like switch.wiring.BUNDLED).
BUNDLED = {"http": "adapters.vas.http:http"}


def vas_types() -> dict:
    """Registered value-added service types by name (entry points of :data:`GROUP`)."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    for name, value in BUNDLED.items():
        found.setdefault(name, EntryPoint(name, value, GROUP))
    return found


class Services:
    """Every configured service, by name."""

    def __init__(self, cfg: config_mod.Config) -> None:
        self.services: dict = {}
        self.deadlines: dict[str, float] = {}
        types = vas_types() if cfg.vas else {}
        for i, s in enumerate(cfg.vas):
            ep = types.get(s.type)
            if ep is None:
                raise config_mod.ConfigError(
                    f"{cfg.source}: unknown value-added service type {s.type!r} "
                    f"(registered under {GROUP}: {', '.join(sorted(types))}) - at `$.vas[{i}].type`")
            try:
                service = ep.load()(s)
            except config_mod.ConfigError:
                raise  # already names the file and the key (read_secret): said once, not wrapped again
            except (ImportError, AttributeError, ValueError, TypeError, OSError) as e:
                raise config_mod.ConfigError(f"{cfg.source}: service {s.name!r}: {e} - at `$.vas[{i}]`") from None
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
            # Masked: a partner's error text may quote a card number back.
            log.debug("service %s failed: %s", name, mask_pans(str(e)))
            return e

    async def close(self) -> None:
        for s in self.services.values():
            close = getattr(s, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
