"""How an error names a secret's file or environment variable without quoting a secret.

Keys and tokens are referenced from the configuration (``hmac_key_file``,
``admin_token_env``, ``secret_file`` ...), never written in it; but an
operator can paste the key itself where its file's name belongs, and the
error that follows ("cannot read journal key file ...", "environment
variable ... is not set") would then print the key to a terminal, a CI log
or a ticket. :func:`shown` quotes a reference only when it reads as one.

What reads as a secret: whitespace or a PEM armour line; 16 or more hex
digits in a row (every key the switch reads is hex); a run of 13 to 19
digits (a card number); for a file, 16 or more characters with neither
``/`` nor ``.`` (a token: a file name that long has a folder or an
extension); for a variable, anything but a variable name.

:func:`open_to_others` is the one check, and the one wording, of a secret
file its owner's group or anyone else may read or write: ``serve`` and
``check-config`` (:mod:`switch.preflight`) and ``payswitch keys`` warn with it.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

__all__ = ["shown", "looks_secret", "open_to_others", "shown_url", "url_credentials", "withheld", "strings_in",
           "NOT_SHOWN"]

_HEX_RUN = re.compile(r"[0-9A-Fa-f]{16,}")
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HIDDEN = {
    "file": "(its name is not shown: it reads as a key or token, not a file name)",
    "env": "(its name is not shown: it reads as a key or token, not a variable name)",
}


def looks_secret(value: str, kind: str) -> bool:
    """True if ``value``, given where a ``kind`` ("file" or "env") reference belongs, reads as a secret."""
    if kind not in _HIDDEN:
        raise ValueError(f"kind must be 'file' or 'env', got {kind!r}")
    if not value.isprintable() or any(c.isspace() for c in value) or "-----" in value:
        return True
    if _HEX_RUN.search(value) or _DIGIT_RUN.search(value):
        return True
    if kind == "env":
        return _VARIABLE.fullmatch(value) is None
    return len(value) >= 16 and "/" not in value and "." not in value


# scheme://userinfo@ : the user and password of a URL (RFC 3986 3.2.1).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'\"]+@")


def url_credentials(value: str) -> bool:
    """Whether ``value`` holds a URL with a user (and password) before its host."""
    return _USERINFO.search(value) is not None


def shown_url(text: str) -> str:
    """``text`` with the user and password of every URL in it shown as ``***``
    (``nats://relay:pw@h:4222`` -> ``nats://***@h:4222``): for anything that
    prints a URL, an error or a log line."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


#: What :func:`withheld` puts where a value of the file was.
NOT_SHOWN = "<value not shown>"
# A quoted value as ``{x!r}`` writes it (an apostrophe inside a word, "acquirer's", opens none).
_QUOTED = re.compile(r"(?<![\w'])'[^'\n]*'(?![\w'])|(?<![\w\"])\"[^\"\n]*\"(?![\w\"])")
_KEY_PATH = re.compile(r"(`\$[^`\n]*`)")  # `$.acquirers[0].endpoints[1]`: named, never withheld
_BARE = 6  # a value this long is withheld wherever it stands as a word; a shorter one only where quoted


def strings_in(node: object) -> set[str]:
    """Every string value in ``node`` (parsed TOML: tables, arrays, scalars); keys are not values."""
    if isinstance(node, str):
        return {node}
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return set().union(*(strings_in(item) for item in items))


def withheld(text: str, values: Iterable[str], keep: str = "") -> str:
    """``text`` (a configuration error) quoting none of ``values``, the strings of the file.

    For readers other than the file's owner (``POST /admin/reload``'s answer, the
    running switch's log, a refused start's stderr): any value may be a secret pasted where its reference
    belongs, and a URL may carry a password.  A quoted value, or a quoted part of
    one (a terminal of a range, a host inside brackets), and a longer value
    anywhere become :data:`NOT_SHOWN`; so do URL credentials, runs of 16 hex
    digits (key material) and of 13 to 19 digits (a card number).  The leading
    ``keep`` (the file's path) and the key paths (`` `$.…` ``) stay, as do numbers:
    the error still says where, and what, and the file holds the value."""
    values = {v for v in values if v}
    head = f"{keep}: " if keep and text.startswith(f"{keep}: ") else ""
    parts = _KEY_PATH.split(text[len(head):])
    # split() with a group: the key paths are the odd parts
    return head + "".join(part if i % 2 else _without(part, values) for i, part in enumerate(parts))


def _without(text: str, values: set[str]) -> str:
    values = values | {shown_url(v) for v in values}  # a URL as a message quotes it: its password already ***

    def quoted(m: re.Match) -> str:
        inner = m.group()[1:-1]
        if inner in values or (len(inner) >= 4 and any(inner in v for v in values)):
            return NOT_SHOWN
        return m.group()

    text = _QUOTED.sub(quoted, text)
    for value in sorted((v for v in values if len(v) >= _BARE), key=len, reverse=True):
        for form in {value, repr(value)[1:-1]}:  # as a word of its own: "acquirer" stays in "acquirers"
            text = re.sub(rf"(?<![\w-]){re.escape(form)}(?![\w-])", NOT_SHOWN, text)
    text = shown_url(text)
    return _DIGIT_RUN.sub(NOT_SHOWN, _HEX_RUN.sub(NOT_SHOWN, text))


def shown(value: object, kind: str) -> str:
    """``value`` as an error quotes a ``kind`` reference: itself, or a note that it is withheld."""
    text = str(value)
    return _HIDDEN[kind] if looks_secret(text, kind) else text


def open_to_others(file: str | os.PathLike) -> str | None:
    """Why the secret ``file`` is not kept to its owner (PCI DSS 3.5: access to keys restricted to
    the fewest custodians), or None: also when it cannot be stat'ed (reading it will say why)."""
    try:
        mode = os.stat(file).st_mode & 0o777
    except (OSError, ValueError):
        return None
    if not mode & 0o077:
        return None
    return f"secret file {os.fspath(file)} is open to others than its owner (mode {mode:04o}; chmod 600)"
