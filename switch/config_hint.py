"""What to say about a configuration key the switch does not know.

msgspec names the key and where it is (``Object contains unknown field
`hmac_key` - at `$.journal```); an operator also wants the key that was
meant.  :func:`unknown_key_hint` finds the keys that table does take and
says which one is close, or lists them; a secret written in clear
(``hmac_key`` where ``hmac_key_file`` is taken) is told where it belongs,
and so is a top-level key written below a table header (TOML puts it in
that table).
"""
from __future__ import annotations

import difflib
import re

import msgspec

_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`(?: - at `([^`]*)`)?\s*$")
_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]")
_LIST_AT_MOST = 16  # keys listed when none is close; a longer list says nothing


def unknown_key_hint(message: str, root: type, hidden: frozenset[str] = frozenset()) -> str:
    """A sentence to append to msgspec's ``message`` about an unknown key ('' if it is not one).

    ``root``: the msgspec Struct the file was converted to; ``hidden``: its
    fields that are never keys of the file (set by the loader).
    """
    match = _UNKNOWN.search(message)
    if match is None:
        return ""
    name, path = match.group(1), match.group(2) or "$"
    info = msgspec.inspect.type_info(root)
    if path != "$" and any(f.encode_name == name and name not in hidden for f in info.fields):
        # TOML's own trap: a key belongs to the table whose header is above it.
        return f"; `{name}` is a top-level key: write it above the file's first [table] header"
    struct = _struct_at(info, path)
    if struct is None:
        return ""
    known = [f.encode_name for f in struct.fields if not (path == "$" and f.encode_name in hidden)]
    kept = [k for k in (f"{name}_file", f"{name}_env") if k in known]
    if kept:
        where = "a file" if len(kept) == 1 and kept[0].endswith("_file") else "a file or an environment variable"
        return f"; it is read from {where} ({' or '.join(f'`{k}`' for k in kept)}), never written in the configuration"
    close = _closest(name, known)
    if close:
        return "; did you mean " + " or ".join(f"`{k}`" for k in close) + "?"
    if known and len(known) <= _LIST_AT_MOST:
        return "; the keys taken here: " + ", ".join(known)
    return ""


def _closest(name: str, known: list[str]) -> list[str]:
    """The keys like ``name`` (difflib's ratio at least 0.6), as close as the closest within 0.1."""
    ratios = sorted(((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known), reverse=True)
    ratios = [(r, k) for r, k in ratios if r >= 0.6]
    return [k for r, k in ratios[:3] if r >= ratios[0][0] - 0.1]


def _struct_at(info, path: str):
    """The StructType that ``path`` (``$.listeners[0]``, ``$.journal``) leads to, or None."""
    for field, index in _STEP.findall(path[1:]):
        info = _unwrap(info)
        if field:
            if not isinstance(info, msgspec.inspect.StructType):
                return None
            info = next((f.type for f in info.fields if f.encode_name == field), None)
            if info is None:
                return None
        else:
            if not isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.TupleType)):
                return None
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else None
            if info is None:
                return None
    info = _unwrap(info)
    return info if isinstance(info, msgspec.inspect.StructType) else None


def _unwrap(info):
    """The struct or list inside an optional or a union of one struct (``Tls | None``)."""
    if isinstance(info, msgspec.inspect.UnionType):
        inner = [t for t in info.types if isinstance(t, (msgspec.inspect.StructType, msgspec.inspect.ListType))]
        if len(inner) == 1:
            return inner[0]
    return info
