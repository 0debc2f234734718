"""The journal's guard against cardholder data, and its keyed PAN hash.

Every insert and update runs these checks on the event loop's thread, so they
live in a module of their own, which is compiled with the request path
(switch/compiled.py); a package ``__init__`` is not. :mod:`switch.journal`
re-exports every name, which is where callers import them from.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
from typing import Any, Iterable

from native.hmac256 import HmacSha256
from native.panguard import digit_count, is_pan_hash, luhn_run, mask_pan
from switch.keyed_hash import keyed

# String fields exempt from the PAN guard, and why:
# - fixed numeric or hex formats: stan, transmission_time, processing_code,
#   currency, response_code, rrn, pan_hash (checked to be 64 hex digits),
#   content_digest;
# - identifiers chosen by others, often 13-19 digits, of which one in ten
#   would pass Luhn by chance: merchant_id (field 42, ans15), acquirer_ref
#   (acquirer or wallet trade numbers), order_ref (merchant order numbers).
#   With an HMAC key the journal still refuses, in acquirer_ref and
#   order_ref, the very PAN whose hash the transaction carries.
LONG_NUMBER_FIELDS = frozenset(
    {
        "stan",
        "transmission_time",
        "processing_code",
        "currency",
        "response_code",
        "rrn",
        "pan_hash",
        "content_digest",
        "host_stan",
        "host_time",
        "local_time",
        "local_date",
        "entry_mode",
        "reversal_stan",
        "reversal_time",
        "merchant_id",
        "acquirer_ref",
        "order_ref",
    }
)

# Exempt from the Luhn guard but checked against the record's own pan_hash.
FREE_REFERENCE_FIELDS = ("acquirer_ref", "order_ref")

_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")  # what digit_runs finds


def digit_runs(text: str) -> list[str]:
    """``_DIGIT_RUN.findall(text)``: every run of 13 to 19 ASCII digits not part of a longer one.

    A loop, not the regex: compiled (pan_guard.pxd), it is a tenth of the
    regex's cost, and the journal's writer runs it for every answer that
    carries an acquirer reference (check_own_pan).
    """
    runs = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c < "0" or c > "9":
            i += 1
            continue
        start = i
        i += 1
        while i < n:
            c = text[i]
            if c < "0" or c > "9":
                break
            i += 1
        if 13 <= i - start <= 19:
            runs.append(text[start:i])
    return runs


def check_no_pan(fields: dict[str, Any]) -> None:
    """Raise ValueError if a field value looks like it holds cardholder data.

    ``fields`` maps column names to values (a whole record or an update).
    The message names the field, never the value.
    """
    check_luhn_runs(fields.items())
    check_pan_forms(fields.get("pan_masked"), fields.get("pan_hash"))


def check_luhn_runs(fields: Iterable[tuple[str, Any]]) -> None:
    """The Luhn part of :func:`check_no_pan`, over (column name, value) pairs."""
    names, values = [], []
    for name, value in fields:
        # Shorter than 13 characters, it holds no PAN candidate.
        if type(value) is str and len(value) >= 13 and name not in LONG_NUMBER_FIELDS:
            names.append(name)
            values.append(value)
    if values:
        check_luhn_values(names, tuple(values))


def check_luhn_values(names: tuple[str, ...] | list[str], values: tuple) -> None:
    """:func:`check_luhn_runs` for columns ``names`` holding ``values`` (none of LONG_NUMBER_FIELDS).

    The scan runs in C (``native.panguard.luhn_run``): the journal's caller
    side runs it for every insert, on the event loop's thread.
    """
    found = luhn_run(values)
    if found is not None:
        index, length = found
        raise ValueError(
            f"journal field {names[index]!r} holds a {length}-digit number that passes "
            "the Luhn check (a PAN?); store pan_protect() output instead"
        )


def check_pan_forms(masked: Any, pan_hash: Any) -> None:
    """pan_masked and pan_hash, when set, must look like pan_protect() output."""
    if masked is not None:
        if type(masked) is not str or digit_count(masked) > 10:
            raise ValueError(
                "journal field 'pan_masked' must show at most 10 digits "
                "(first 6 + last 4); store pan_protect() output"
            )
    if pan_hash is not None and (type(pan_hash) is not str or not is_pan_hash(pan_hash)):
        raise ValueError(
            "journal field 'pan_hash' must be a key version and 64 lower-case hex digits "
            "(\"v1:...\", HMAC-SHA256); store pan_protect() output"
        )


# The journal's one secret (journal.hmac_key_file / hmac_key_env) is never used
# as a key itself: the PAN-hash key and the content-digest key are derived
# from it with HKDF-SHA256 (RFC 5869) under distinct labels, so a digest key
# that leaks says nothing of the PAN hashes and no deployment needs a new file.
# Each pan_hash carries the version of the key that made it ("v1:<hex>");
# version 0 is the secret itself, as journals before the versioning hashed
# (migration 4 marks their rows "v0:").
PAN_KEY_VERSION = 1
_PAN_LABEL = b"payswitch journal pan-hash v%d"
_DIGEST_LABEL = b"payswitch content-digest v1"


def hkdf_sha256(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an all-zero salt."""
    prk = hmac.new(b"\0" * 32, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@functools.lru_cache(maxsize=16)
def pan_key(secret: bytes, version: int = PAN_KEY_VERSION) -> bytes:
    """The PAN-hash key of ``version`` derived from the journal secret."""
    return secret if version == 0 else hkdf_sha256(secret, _PAN_LABEL % version)


def digest_key(secret: bytes) -> bytes:
    """The key of the requests' content digest (never the PAN-hash key)."""
    return hkdf_sha256(secret, _DIGEST_LABEL)


# (secret, version) -> (its pan_hash prefix "v<version>:", keyed(pan_key(secret, version))):
# one dict look-up per PAN hash instead of two lru_cache calls and an f-string.
_PAN_MACS: dict[tuple[bytes, int], tuple[str, HmacSha256]] = {}


def _pan_mac(secret: bytes, version: int) -> tuple[str, HmacSha256]:
    """What hashes cards under ``secret`` and key ``version``: the last pair asked for by
    identity (a switch hashes every card under one secret), else by one dict look-up.
    A C function once compiled (pan_guard.pxd)."""
    global _LAST_PAN_MAC
    last = _LAST_PAN_MAC
    if last[0] is secret and last[1] == version:
        return last[2]
    found = _PAN_MACS.get((secret, version))
    if found is None:
        if len(_PAN_MACS) >= 16:  # a handful of secrets live for the process (pan_key keeps 16)
            _PAN_MACS.clear()
        found = _PAN_MACS[(secret, version)] = (f"v{version}:", keyed(pan_key(secret, version)))
    _LAST_PAN_MAC = (secret, version, found)  # one tuple, replaced whole: safe from any thread
    return found


# (secret, version, _pan_mac's answer) of the last call.
_LAST_PAN_MAC: tuple = (None, None, None)


def pan_hmac(pan: str, secret: bytes, version: int = PAN_KEY_VERSION) -> str:
    """The journal's ``pan_hash`` of ``pan``: ``"v<version>:<hex HMAC-SHA256>"``."""
    prefix, mac = _pan_mac(secret, version)
    return prefix + mac.hexdigest(pan.encode("ascii"))


def same_pan(pan: str, pan_hash: str, secret: bytes) -> bool:
    """Whether ``pan_hash`` (any key version) was made from ``pan``."""
    version, sep, _ = pan_hash.partition(":")
    if not sep or not version[1:].isdigit():
        return False
    return hmac.compare_digest(pan_hmac(pan, secret, int(version[1:])), pan_hash)


def check_own_pan(fields: dict[str, Any], pan_hash: str | None, key: bytes | None) -> None:
    """Raise ValueError if a free reference field holds the PAN hashed in ``pan_hash``."""
    if key is None or pan_hash is None:
        return
    for name in FREE_REFERENCE_FIELDS:
        value = fields.get(name)
        if type(value) is not str:
            continue
        for run in digit_runs(value):
            if same_pan(run, pan_hash, key):
                raise ValueError(f"journal field {name!r} holds the transaction's PAN")


def check_pan_digits(pan: str) -> None:
    """Raise ValueError unless ``pan`` is 8 to 19 ASCII digits (the message never quotes it)."""
    if not (pan.isascii() and pan.isdigit() and 8 <= len(pan) <= 19):
        raise ValueError(f"a PAN is 8 to 19 digits, got {len(pan)} characters")


def pan_digits(pan: str) -> bool:
    """Whether the str ``pan`` is 8 to 19 ASCII digits: what :func:`check_pan_digits` asks.

    Compiled (pan_guard.pxd), a loop over C characters instead of two method
    calls: every card payment asks it when it hashes its card and when it seals it.
    """
    n = len(pan)
    if n < 8 or n > 19:
        return False
    for c in pan:
        if c < "0" or c > "9":
            return False
    return True


def pan_protect(pan: str, key: bytes) -> tuple[str, str]:
    """Return (masked PAN, versioned HMAC-SHA256 of the PAN: ``"v1:<hex>"``) for the journal.

    The masked form is :func:`native.panguard.mask_pan`'s, the switch's one
    masking rule: the first 6 and last 4 digits (``"411111******1111"``); a
    PAN shorter than 13 digits keeps only its last 4.  The HMAC lets the switch find a card's transactions without
    storing its number; ``key`` is the journal secret (the HMAC key is
    derived from it, see :func:`pan_key`).
    """
    if type(pan) is not str or not pan_digits(pan):
        check_pan_digits(pan)  # raises, with its message
    if not key:
        raise ValueError("pan_protect needs a non-empty HMAC key")
    text = pan  # a str (pan_guard.pxd): encoded in C
    prefix, mac = _pan_mac(key, PAN_KEY_VERSION)
    return mask_pan(text), prefix + mac.hexdigest(text.encode("ascii"))
