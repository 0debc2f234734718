"""How the card simulators' ledgers name a card: masked PAN and a keyed hash.

A ledger line must tell the cards apart (balances per card) without naming
one: the masked PAN leaves only the 6 middle digits unknown, and a plain
hash of the PAN (SHA-256) gives them back after at most a million tries.
The hash is HMAC-SHA256 under a key of the ledger's own, kept beside it
(``<ledger>.key``, mode 0600, created on first start) so that a simulator
started again replays the ledger under the same names; a simulator
without a ledger uses a random key for its life.

Field 55 (ICC data) is named the same way, by :func:`icc_digest`: it carries the
PAN (tag 5A) and the track 2 equivalent (57), so a plain hash of it could be
tested against guesses as a PAN's could.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from switch.core.messages import mask_pan

__all__ = ["card_key", "icc_digest", "ledger_key", "use_key"]

_fresh = secrets.token_bytes(32)
_key = _fresh
_names: dict[str, str] = {}


def use_key(key: bytes | None) -> None:
    """Name cards under ``key`` from now on (None: this process's random key)."""
    global _key
    _key = key if key is not None else _fresh
    _names.clear()


def ledger_key(ledger: str) -> bytes:
    """The card-name key of the ledger file ``ledger``: read from ``<ledger>.key``, created there if missing."""
    path = ledger + ".key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as f:
            return bytes.fromhex(f.read().strip())
    with os.fdopen(fd, "w") as f:
        key = secrets.token_bytes(32)
        f.write(key.hex() + "\n")
    return key


def card_key(pan: str | None) -> str | None:
    """How the ledger names a card: ``<masked PAN>#<16 hex digits of HMAC-SHA256>`` (no PAN)."""
    if not pan:
        return None
    name = _names.get(pan)
    if name is None:
        # Cached: a sandbox sees the same few test cards over and over (0200 hot path).
        if len(_names) >= 4096:
            _names.clear()
        digest = hmac.new(_key, pan.encode(), hashlib.sha256).hexdigest()[:16]
        name = _names[pan] = f"{mask_pan(pan)}#{digest}"
    return name


# Apart from the card names under the same key: an ICC digest is never a card's name.
_ICC_LABEL = b"payswitch sandbox field 55\0"


def icc_digest(icc: bytes, key: bytes | None = None) -> str:
    """How the ledger names the field 55 it received: HMAC-SHA256 (hex) under the ledger's
    key (``key``: a ledger's, as :func:`ledger_key` reads it, for a reader of its file)."""
    return hmac.new(_key if key is None else key, _ICC_LABEL + icc, hashlib.sha256).hexdigest()
