"""The card number of a queued reversal, sealed, for hosts that match reversals on field 2.

Many acquirers refuse a 0420 without the PAN of the original.  The process
that queues a reversal knows it (the terminal's request carried it), but the
one that sends it may be another (``serve --workers``: only worker 0 sends
reversals) or the same one after a restart.  So a reversal queued with a
known PAN also keeps it here, and only reversals pay for it: nothing is
written for a payment that is answered.

``reversal_card``: one row per transaction waiting for its reversal, its PAN
sealed with AES-256-GCM (:func:`seal`) under a key derived from the journal
secret with its own HKDF label (never the PAN-hash or content-digest key),
a random 96-bit nonce, and as associated data the key version and the
transaction id, so a sealed value copied onto another row does not open.
The row goes in the journal operation that ends the reversal
(:meth:`switch.journal.Journal.end_reversal`), and at start-up
:func:`purge` drops the rows of transactions no longer waiting (a crash
between the two).  A reversal ended ``unmatched`` (the host kept saying it
knows no such original) keeps its row: a late approval from the host reopens
it, and a host that matches reversals on field 2 needs the card again; it is
dropped after ``card_retention`` (:func:`forget_unmatched`, through
``Journal.forget_cards``).

The journal never sees the clear PAN: the switch seals before it hands the
value over and opens what it reads back, so the clear number crosses
neither the writer process's socket nor any column.

A card payment on its way to the acquirer keeps its card the same way, in
its own row (``txn.card_sealed``, :func:`seal_in_flight`): a switch killed
while the payment was at the acquirer finds it ``sent`` at start-up and
reverses it, and its 0420 repeats field 2 like any other.  Its row has no id
before the insert, so the associated data is the request's key (41, 11, 7)
and content digest instead.  The journal clears the column in the update
that moves the payment on from ``sent`` (answered, or queued for its
reversal, which then keeps the card here as above), unless the update
keeps it: an approved card payment keeps it for ``card_retention`` (24 h),
so that a terminal's 0400 that does not repeat the card still gets an 0420
with field 2; then :func:`forget` (through ``Journal.forget_cards``, which
the reversal sender calls about once a minute) clears it.
"""
from __future__ import annotations

import functools
import sqlite3
from typing import Callable

from native.aead import AesGcm, InvalidTag
from native.panguard import luhn_run
from switch.journal import check_luhn_values, check_pan_digits, hkdf_sha256
from switch.journal.pan_guard import pan_digits

__all__ = ["MIGRATION", "IN_FLIGHT_MIGRATION", "KEY_VERSION", "SealError", "card_key", "seal", "open_sealed",
           "check_sealed", "seal_in_flight", "open_in_flight", "keep", "load", "drop", "purge", "forget_unmatched"]

# The first byte of every sealed value names the key that sealed it, as
# pan_hash's "v1:" does.
KEY_VERSION = 1
_LABEL = b"payswitch journal reversal-card v%d"
_NONCE = 12
_TAG = 16
# A PAN is 8 to 19 digits: version byte, nonce, ciphertext, tag.
_MIN_SIZE = 1 + _NONCE + 8 + _TAG
_MAX_SIZE = 1 + _NONCE + 19 + _TAG
_SIZES = range(_MIN_SIZE, _MAX_SIZE + 1)

MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE reversal_card (
        txn_id INTEGER PRIMARY KEY,  -- the transaction whose reversal waits
        sealed BLOB NOT NULL,        -- key version, nonce, AES-256-GCM ciphertext and tag of the PAN
        created_at REAL NOT NULL
    ) STRICT
    """,
)

# Schema 8: the card of a payment while it is at the acquirer (seal_in_flight).
IN_FLIGHT_MIGRATION: tuple[str, ...] = ("ALTER TABLE txn ADD COLUMN card_sealed BLOB",)


class SealError(ValueError):
    """A sealed card number that does not open: another key, another row, or damaged.

    The message says which transaction, never what was sealed.
    """


@functools.lru_cache(maxsize=16)
def card_key(secret: bytes, version: int = KEY_VERSION) -> bytes:
    """The AES-256 key of sealed reversal cards, derived from the journal secret."""
    if not secret:
        raise ValueError("sealing a card number needs a non-empty journal secret")
    return hkdf_sha256(secret, _LABEL % version)


@functools.lru_cache(maxsize=16)
def _aead(secret: bytes, version: int) -> AesGcm:
    # One expanded key per secret and version for the process (native/aead.pyx):
    # cryptography's AESGCM sets its cipher up again on every call, 20 µs of
    # the loop per card payment in the request path.
    return AesGcm(card_key(secret, version))


def _aad(txn_id: int, version: int) -> bytes:
    return b"payswitch reversal-card v%d txn %d" % (version, txn_id)


def _in_flight_aad(key: tuple[str, str, str], digest: str, version: int) -> bytes:
    if version == KEY_VERSION and len(key) == 3:
        # Every card payment seals: its prefix formatted once, and one join.
        terminal_id, stan, transmission_time = key
        if type(terminal_id) is str and type(stan) is str and type(transmission_time) is str and type(digest) is str:
            # The same text as the join below, joined by Cython in one allocation.
            return f"{_IN_FLIGHT_PREFIX}{terminal_id}|{stan}|{transmission_time}|{digest}".encode()
        return "|".join((_IN_FLIGHT_PREFIX + terminal_id, stan, transmission_time, digest)).encode()
    return b"payswitch in-flight card v%d " % version + "|".join((*key, digest)).encode()


_VERSION_BYTE = bytes((KEY_VERSION,))
_IN_FLIGHT_PREFIX = "payswitch in-flight card v%d " % KEY_VERSION


# secret -> _aead(secret, KEY_VERSION): what every seal takes, one dict look-up
# instead of an lru_cache call (a handful of secrets live for the process).
_SEALERS: dict[bytes, AesGcm] = {}
# (the secret _seal was last given, its sealer): a switch seals every card under
# one secret, so the next seal needs only an identity check.
_LAST_SEALER: tuple = (None, None)


def _seal(secret: bytes, pan: str, aad: bytes) -> bytes:
    if type(pan) is not str or not pan_digits(pan):
        check_pan_digits(pan)  # raises, with its message
    text = pan  # a str (reversal_card.pxd): encoded in C
    global _LAST_SEALER
    last = _LAST_SEALER
    if last[0] is secret:
        aead = last[1]
    else:
        aead = _SEALERS.get(secret)
        if aead is None:
            if len(_SEALERS) >= 16:
                _SEALERS.clear()
            aead = _SEALERS[secret] = _aead(secret, KEY_VERSION)
        _LAST_SEALER = (secret, aead)  # one tuple, replaced whole: safe from any thread
    # Version byte, a fresh nonce (switch.entropy's block: no system call, the
    # loop keeps the GIL), ciphertext and tag, in one buffer.
    return aead.seal(_VERSION_BYTE, text.encode("ascii"), aad)


def _open(sealed: bytes, aad_of: Callable[[int], bytes], secret: bytes, whose: str) -> str:
    if type(sealed) is not bytes or len(sealed) not in _SIZES or sealed[0] == 0:
        raise SealError(f"{whose}: the sealed card number is not seal() output")
    version = sealed[0]
    try:
        clear = _aead(secret, version).decrypt(sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :], aad_of(version))
    except InvalidTag:
        raise SealError(
            f"{whose}: the sealed card number does not open (another journal secret, another "
            "transaction's row, or damaged)"
        ) from None
    return clear.decode("ascii")


def seal(secret: bytes, txn_id: int, pan: str) -> bytes:
    """``pan`` sealed for the reversal of transaction ``txn_id``: version byte + nonce + ciphertext and tag."""
    if type(txn_id) is not int or txn_id < 1:
        raise ValueError(f"a sealed card belongs to a transaction id, got {txn_id!r}")
    return _seal(secret, pan, _aad(txn_id, KEY_VERSION))


def open_sealed(secret: bytes, txn_id: int, sealed: bytes) -> str:
    """The PAN :func:`seal` sealed for ``txn_id``; :class:`SealError` if it does not open."""
    return _open(sealed, functools.partial(_aad, txn_id), secret, f"txn {txn_id}")


def seal_in_flight(secret: bytes, key: tuple[str, str, str], digest: str, pan: str) -> bytes:
    """``pan`` sealed for the row of the request ``key`` (41, 11, 7) with content digest ``digest``."""
    return _seal(secret, pan, _in_flight_aad(key, digest, KEY_VERSION))


def open_in_flight(secret: bytes, rec) -> str:
    """The PAN :func:`seal_in_flight` sealed into ``rec.card_sealed``; :class:`SealError` if it does not open."""
    key = (rec.terminal_id, rec.stan, rec.transmission_time)
    aad_of = functools.partial(_in_flight_aad, key, rec.content_digest)
    return _open(rec.card_sealed, aad_of, secret, f"txn {rec.id}")


def check_sealed_form(column: str, sealed: bytes) -> None:
    """Raise ValueError unless ``sealed`` looks like seal output (never a clear PAN); names ``column`` only."""
    if type(sealed) is not bytes:
        raise ValueError(f"journal field {column!r} keeps seal() output (bytes), got {type(sealed).__name__}")
    data = sealed  # typed (reversal_card.pxd): its length, first byte and decoding in C, for every card payment
    if not (_MIN_SIZE <= len(data) <= _MAX_SIZE) or data[0] != KEY_VERSION:
        raise ValueError(f"journal field {column!r}: not seal() output of key version {KEY_VERSION}")
    # Belt and braces: a clear PAN among the bytes is refused like in any column.
    text = (data.decode("latin-1"),)
    if luhn_run(text) is not None:
        check_luhn_values((column,), text)  # raises, with its message


def check_sealed(txn_id: int, sealed: bytes) -> None:
    """Raise ValueError unless ``sealed`` looks like :func:`seal` output (never a clear PAN)."""
    if type(txn_id) is not int:
        raise ValueError(f"reversal card: a transaction id is an int, got {type(txn_id).__name__}")
    check_sealed_form(f"reversal_card of txn {txn_id}", sealed)


# -- the journal's side (writer thread or process) ----------------------------


def keep(conn: sqlite3.Connection, now: float, txn_id: int, sealed: bytes) -> None:
    """Keep (or replace) the sealed card of ``txn_id``'s reversal."""
    conn.execute(
        "INSERT INTO reversal_card (txn_id, sealed, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (txn_id) DO UPDATE SET sealed = excluded.sealed, created_at = excluded.created_at",
        (txn_id, sealed, now),
    )


def load(conn: sqlite3.Connection, txn_id: int) -> bytes | None:
    """The sealed card of ``txn_id``'s reversal, or None."""
    row = conn.execute("SELECT sealed FROM reversal_card WHERE txn_id = ?", (txn_id,)).fetchone()
    return None if row is None else row[0]


def drop(conn: sqlite3.Connection, txn_id: int) -> None:
    conn.execute("DELETE FROM reversal_card WHERE txn_id = ?", (txn_id,))


def purge(conn: sqlite3.Connection) -> int:
    """Drop the cards of transactions that wait for no reversal; how many went.

    A transaction still ``sent`` keeps its card: the switch seals the card
    before the update that queues the reversal, and start-up recovery
    queues the reversal of one it finds ``sent``.
    """
    return conn.execute(PURGE).rowcount


# forget_cards (switch.journal.sqlite) reads this many ids per round, and at
# most this many rounds per call (the first calls after a start walk the
# whole journal once).
FORGET_BATCH = 10_000
FORGET_ROUNDS = 20


def last_created_before(conn: sqlite3.Connection, after_id: int, before: float) -> tuple[int, bool]:
    """(the last id after ``after_id`` of a row created before ``before``, whether more rows may be).

    Reads ids in order from ``after_id`` by the primary key, one batch.
    """
    rows = conn.execute("SELECT id, created_at FROM txn WHERE id > ? ORDER BY id LIMIT ?",
                        (after_id, FORGET_BATCH)).fetchall()
    last = after_id
    for txn_id, created_at in rows:
        if created_at >= before:
            return last, False
        last = txn_id
    return last, len(rows) == FORGET_BATCH


def forget_before(conn: sqlite3.Connection, after_id: int, before: float, known: dict,
                  waiting: set[int]) -> tuple[int, int]:
    """Clear the cards of rows after ``after_id`` created before ``before`` (and not sent).

    Walks ids in order from ``after_id`` (ids and created_at grow together),
    at most FORGET_ROUNDS batches; drops the rows it cleared from ``known``
    (the writer's memory of records).  A row the walk passes while it is still
    at its acquirer ('sent') goes into ``waiting`` and is cleared by a later
    call once it has moved on: the walk never comes back, and an approval
    answered late would otherwise keep its card for as long as the process
    lives.  Returns (how many were cleared, the id to start from next time).
    """
    gone = forget_waiting(conn, waiting, known)
    for _ in range(FORGET_ROUNDS):
        up_to, more = last_created_before(conn, after_id, before)
        if up_to > after_id:
            waiting.update(txn_id for txn_id, in conn.execute(
                "SELECT id FROM txn WHERE id > ? AND id <= ? AND card_sealed IS NOT NULL AND state = 'sent'",
                (after_id, up_to)))
            gone += forget(conn, after_id, up_to)
            for txn_id in [i for i in known if after_id < i <= up_to]:
                del known[txn_id]  # remembered with its card
            after_id = up_to
        if not more:
            break
    return gone, after_id


def forget_waiting(conn: sqlite3.Connection, waiting: set[int], known: dict) -> int:
    """Clear the cards of the ``waiting`` rows that are no longer at their acquirer."""
    gone = 0
    ids = sorted(waiting)
    for at in range(0, len(ids), 500):
        chunk = ids[at:at + 500]
        marks = ",".join("?" * len(chunk))
        moved = [txn_id for txn_id, in conn.execute(
            f"SELECT id FROM txn WHERE id IN ({marks}) AND state <> 'sent'", chunk)]
        if moved:
            marks = ",".join("?" * len(moved))
            gone += conn.execute(
                f"UPDATE txn SET card_sealed = NULL WHERE id IN ({marks}) AND card_sealed IS NOT NULL", moved).rowcount
            waiting.difference_update(moved)
            for txn_id in moved:
                known.pop(txn_id, None)
    return gone


def forget(conn: sqlite3.Connection, after_id: int, up_to_id: int) -> int:
    """Clear the sealed cards of rows after_id < id <= up_to_id that are no longer at their acquirer."""
    return conn.execute(
        "UPDATE txn SET card_sealed = NULL WHERE id > ? AND id <= ? AND card_sealed IS NOT NULL AND state <> 'sent'",
        (after_id, up_to_id),
    ).rowcount


# Each row's transaction looked up by its id (the rows are few, the journal is not).
# An unmatched reversal keeps its card: a late approval reopens it
# (switch.core.late_answers), and its 0420 repeats field 2 like every try before;
# forget_unmatched drops it after card_retention.
PURGE = ("DELETE FROM reversal_card WHERE IFNULL((SELECT state FROM txn WHERE txn.id = reversal_card.txn_id), '')"
         " NOT IN ('reversal_pending', 'sent', 'unmatched')")
KEPT_WHEN_ENDED = "unmatched"


FORGET_UNMATCHED = ("DELETE FROM reversal_card WHERE created_at < ? AND "
                    "(SELECT state FROM txn WHERE txn.id = reversal_card.txn_id) = 'unmatched'")


def forget_unmatched(conn: sqlite3.Connection, before: float) -> int:
    """Drop the cards of unmatched reversals kept since before ``before``; how many went."""
    return conn.execute(FORGET_UNMATCHED, (before,)).rowcount
