"""The sandbox's public keys work in the sandbox only (spec 7; PCI DSS 3.6, 6.5.6).

The demo terminal keys of spec 7, the sandbox acquirers' zone keys, the
sandbox master key (and the key store sealed under it) and the HSM key table
under the simulator's LMK are published on purpose: anyone can compute MACs
and PIN blocks with them.  A configuration that does not say ``sandbox =
true`` (the embedded default does) is refused when it uses any of them:

- :func:`check_paths` (no file read; part of the configuration's own
  checks): the bundled key store or master key file named by path;
- :func:`master_problem`, :func:`store_problem`, :func:`table_problem`
  (``serve``, ``check-config`` and a reload, which read the files): the
  sandbox master key under another name, a demo key imported into another
  store, a demo key's cryptogram in an HSM key table.

``payswitch keys import`` refuses a demo key unless told ``--sandbox``
(:func:`is_demo_key`).
"""
from __future__ import annotations

import functools
import hmac
from pathlib import Path

__all__ = ["is_demo_key", "check_paths", "master_problem", "store_problem", "table_problem", "NOTE"]

NOTE = "the sandbox's public keys are refused outside the sandbox (sandbox = true)"


@functools.lru_cache(maxsize=1)
def _demo_keys() -> frozenset[bytes]:
    from . import sandbox

    return frozenset({bytes.fromhex(clear) for _, _, clear in sandbox.KEYS.values()}
                     | {bytes.fromhex(sandbox.MASTER_KEY_HEX), bytes.fromhex(sandbox.HSM_LMK_HEX)})


@functools.lru_cache(maxsize=1)
def _demo_tokens() -> frozenset[str]:
    from . import sandbox

    return frozenset(entry["token"].upper() for entry in sandbox.hsm_key_table().values())


def is_demo_key(key: bytes) -> bool:
    """Whether ``key`` is one of the sandbox's public keys (demo keys, zone keys, master key, LMK)."""
    found = False
    for demo in _demo_keys():  # every one compared: the time says nothing of which
        found |= hmac.compare_digest(bytes(key), demo)
    return found


def _same_file(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def check_paths(cfg, fail) -> None:
    """The bundled sandbox key store or master key file, named outside the sandbox."""
    from . import sandbox
    from .config import SoftwareModuleConfig

    module = cfg.security.module
    if getattr(cfg, "sandbox", False) or not isinstance(module, SoftwareModuleConfig):
        return
    if _same_file(module.key_store, sandbox.STORE):
        fail("security.module.key_store", f"{module.key_store} is the sandbox's key store: {NOTE}")
    if _same_file(module.master_key_file, sandbox.MASTER_KEY_FILE):
        fail("security.module.master_key_file", f"{module.master_key_file} is the sandbox's master key: {NOTE}")


def master_problem(master: bytes) -> str | None:
    """Why ``master`` may not open a key store outside the sandbox, or None."""
    return f"the master key is the sandbox's: {NOTE}" if is_demo_key(master) else None


def store_problem(entries: dict) -> str | None:
    """The first key of a loaded store (name -> Entry) that is a sandbox key, said without its value."""
    for name, entry in entries.items():
        if is_demo_key(entry.key):
            return f"key {name!r} ({entry.kind}, kcv {entry.kcv}) is a public sandbox key: {NOTE}"
    return None


def table_problem(table: dict) -> str | None:
    """The first entry of an HSM key table (name -> KeyRecord) that is the sandbox's cryptogram."""
    tokens = _demo_tokens()
    for name, record in table.items():
        token = getattr(record, "token", None)
        if isinstance(token, str) and token.upper() in tokens:
            return f"entry {name!r} is the sandbox's demo key table's (under the simulator's public LMK): {NOTE}"
    return None
