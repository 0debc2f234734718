"""The words a configuration's keys choose from: never a secret, so an error may quote them.

A configuration error read by others quotes no value of the file
(:func:`switch.config.error_for_others`): any may be a key or a card number
pasted where it does not belong.  A value that is one of the fixed choices of
its key (a route's ``kind``, a length ``header``, a registered acquirer
``type``, a shipped ``dialect``) is a word of the documentation, not of the
operator: withholding it would only blur the error, and, as a word of the
message (``serves wallet routes``, ``registered: card, citycard, ...``), the
message itself.
"""
from __future__ import annotations

from msgspec import inspect

__all__ = ["choices"]

# Choices checked by hand rather than by a Literal type (switch.config, switch.config_vas).
_BY_HAND = ("thread", "process", "auto", "sqlite", "http", "before", "after")


def choices(config_type: type) -> frozenset[str]:
    """Every string a key of ``config_type`` (and the Structs below it) takes from a fixed
    list, the acquirer types registered and the dialects shipped."""
    from native.iso8583 import available_dialects
    from switch.wiring import acquirer_types

    found = set(_BY_HAND) | set(acquirer_types()) | set(available_dialects())
    _literals(inspect.type_info(config_type), found, set())
    return frozenset(found)


def _literals(t: inspect.Type, found: set[str], seen: set[type]) -> None:
    if isinstance(t, inspect.LiteralType):
        found.update(v for v in t.values if isinstance(v, str))
    elif isinstance(t, inspect.StructType):
        if t.cls not in seen:
            seen.add(t.cls)
            for field in t.fields:
                _literals(field.type, found, seen)
    elif isinstance(t, inspect.UnionType):
        for member in t.types:
            _literals(member, found, seen)
    elif isinstance(t, (inspect.ListType, inspect.SetType, inspect.FrozenSetType, inspect.VarTupleType)):
        _literals(t.item_type, found, seen)
    elif isinstance(t, inspect.DictType):
        _literals(t.key_type, found, seen)
        _literals(t.value_type, found, seen)
    elif isinstance(t, inspect.TupleType):
        for member in t.item_types:
            _literals(member, found, seen)
