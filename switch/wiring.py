"""Entry-level wiring: acquirer adapters by type, and the journal's key.

Acquirer types are registered as entry points in the group
``payswitch.acquirers``; each names a factory ``factory(acquirer, index,
on_state) -> adapter`` taking the configured :class:`switch.config.Acquirer`,
its index in ``[[acquirers]]`` (for error key paths) and the wallet order-state
hook.  The bundled types (card, citycard, wallet-tradepay, wallet-micropay)
are registered the same way in pyproject.toml.  A factory may carry a
``kinds`` attribute, the route kinds it serves (``{"card", "wallet"}``); a
route of another kind naming it is a configuration error.  See
docs/adapters.md.

A factory checks its options and reads its files but does no network I/O:
``payswitch check-config`` builds every adapter and throws it away.  Whatever
it raises as ValueError, TypeError or OSError becomes a
:class:`~switch.config.ConfigError` naming the acquirer's key path.

This is the only switch module that loads adapters; switch/core and switch/io
never import them.
"""
from __future__ import annotations

import logging
import os
import secrets
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable

from switch import config as config_mod
from switch.secret_refs import shown

__all__ = ["GROUP", "BUNDLED", "acquirer_types", "acquirer_factory", "build_acquirer", "load_hmac_key", "journal_key_path"]

log = logging.getLogger("payswitch")

GROUP = "payswitch.acquirers"

# The bundled types as pyproject.toml registers them.  Used only when the
# installed metadata lacks them (a source checkout run with PYTHONPATH, or an
# editable install made before they were registered); tests keep the two equal.
BUNDLED = {
    "card": "adapters.card.plugin:card",
    "citycard": "adapters.citycard.plugin:citycard",
    "wallet-tradepay": "adapters.wallet.plugin:tradepay",
    "wallet-micropay": "adapters.wallet.plugin:micropay",
}

Factory = Callable[[config_mod.Acquirer, int, Any], Any]


def acquirer_types() -> dict[str, EntryPoint]:
    """Registered acquirer types by name (entry points of :data:`GROUP`), sorted by name."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    for name, value in BUNDLED.items():
        found.setdefault(name, EntryPoint(name, value, GROUP))
    return dict(sorted(found.items()))


def _where(a: config_mod.Acquirer, index: int, key: str = "") -> str:
    return f"`$.acquirers[{index}]{'.' + key if key else ''}`"


def acquirer_factory(a: config_mod.Acquirer, index: int = 0, source: str | None = None,
                     types: dict[str, EntryPoint] | None = None) -> Factory:
    """The factory registered for ``a.type``; ConfigError if none is or it cannot be loaded.

    ``types``: :func:`acquirer_types` when the caller has it already (a scan
    of the installed distributions takes about 10 ms).
    """
    src = source or "configuration"
    types = acquirer_types() if types is None else types
    ep = types.get(a.type)
    if ep is None:
        raise config_mod.ConfigError(
            f"{src}: unknown acquirer type {a.type!r} (registered: {', '.join(types)}) - at {_where(a, index, 'type')}"
        )
    try:
        return ep.load()
    except (ImportError, AttributeError) as e:
        raise config_mod.ConfigError(
            f"{src}: acquirer type {a.type!r} is registered as {ep.value} but cannot be loaded: {e} - at {_where(a, index, 'type')}"
        ) from None


def build_acquirer(a: config_mod.Acquirer, index: int = 0, on_state=None, *, source: str | None = None):
    """An adapter object for one configured acquirer, from the factory registered for its type.

    ``on_state(order_no, state)`` (wallets) is awaited before every call to the
    wallet, so the order's state is journaled first.
    """
    factory = acquirer_factory(a, index, source)
    try:
        return factory(a, index, on_state)
    except config_mod.ConfigError as e:
        if source and not str(e).startswith(source):
            raise config_mod.ConfigError(f"{source}: {e}") from None
        raise
    except (ValueError, TypeError, OSError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise config_mod.ConfigError(
            f"{source or 'configuration'}: acquirer {a.name!r}: {why} - at {_where(a, index)}"
        ) from None


def journal_key_path(cfg: config_mod.Config) -> Path | None:
    """Where the journal's PAN-hash key is read from (None: an environment variable)."""
    j = cfg.journal
    if j.hmac_key_env:
        return None
    if j.hmac_key_file:
        return Path(j.hmac_key_file)
    base = j.url.removeprefix("sqlite://") if j.url.startswith("sqlite://") else "payswitch-journal"
    if base in ("", ":memory:"):
        base = "payswitch-journal"
    return Path(base + ".key")


def load_hmac_key(cfg: config_mod.Config, create: bool = True) -> bytes | None:
    """The journal's PAN-hash key: from a file or an environment variable, never from the config text.

    With neither ``hmac_key_file`` nor ``hmac_key_env`` the key lives beside
    the journal and is created on first start (mode 0600) when ``create``;
    with ``create=False`` (``check-config``) nothing is written and None
    means "would be created": its directory must exist and be writable.
    """
    j = cfg.journal
    src = cfg.source
    if j.hmac_key_env:
        raw = os.environ.get(j.hmac_key_env)
        if raw is None:
            raise config_mod.ConfigError(
                f"{src}: environment variable {shown(j.hmac_key_env, 'env')} is not set - at `$.journal.hmac_key_env`"
            )
        what, where = f"environment variable {shown(j.hmac_key_env, 'env')}", "journal.hmac_key_env"
    else:
        path = journal_key_path(cfg)
        where = "journal.hmac_key_file" if j.hmac_key_file else "journal.url"
        if not j.hmac_key_file and not path.exists():
            folder = path.parent
            if not folder.is_dir():
                raise config_mod.ConfigError(
                    f"{src}: directory {folder} for the journal key does not exist - at `$.{where}`"
                )
            if not os.access(folder, os.W_OK | os.X_OK):
                raise config_mod.ConfigError(
                    f"{src}: cannot create journal key file {path}: directory not writable - at `$.{where}`"
                )
            if not create:
                return None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            log.info("created journal key file %s (mode 0600)", path)
        try:
            raw = path.read_text()
        except OSError as e:
            raise config_mod.ConfigError(
                f"{src}: cannot read journal key file {shown(path, 'file')}: {e.strerror} - at `$.{where}`"
            ) from None
        except UnicodeDecodeError:
            raw = ""
        what = f"journal key file {shown(path, 'file')}"
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise config_mod.ConfigError(f"{src}: {what} must hold at least 16 bytes as hex - at `$.{where}`")
    return key
