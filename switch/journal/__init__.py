"""The transaction journal: every transaction's life, written durably.

The switch writes a request before it leaves for an acquirer and the outcome
before the terminal is answered.  A backend runs every operation on one
writer thread that group-commits: it takes as many queued operations as there
are (up to a bound), runs them in one database transaction, commits once
(one fsync for the lot) and only then resolves their futures.  Reads go
through the same queue, so a read sees every write submitted before it.

Every method returns a :class:`concurrent.futures.Future` and never raises;
the asyncio side awaits ``asyncio.wrap_future(journal.insert(rec))``.  This
package does not import asyncio (only ``switch.io`` does).

An event loop can have the results handed over in bulk instead:
``open_journal(url, future=loop.create_future, deliver=loop.call_soon_threadsafe)``
makes every method return an asyncio future (which ``asyncio.wrap_future``
passes through unchanged), and the writer hands each batch's results to the
loop in one callback rather than one thread-safe call per operation.  The
methods must then be called on the loop's thread.

Errors, as delivered through the futures:

- a bad argument (unknown column, a full PAN in a field, ...) fails that
  operation's future with :class:`ValueError` before anything is queued;
- an operation that fails in the database (for example a second transaction
  with the same ``order_ref``: :class:`sqlite3.IntegrityError`) is rolled back
  to its own savepoint and fails alone; the rest of its batch commits;
- a failed commit fails every other operation of the batch with
  :class:`JournalError`: none of them was written;
- after :meth:`Journal.close`, operations fail with :class:`JournalClosed`.

Cardholder data: the journal never holds a full PAN in clear, nor track 2,
CVV or PIN block.  Callers store ``pan_masked`` and ``pan_hash`` made by
:func:`pan_protect`, and insert/update reject any string field holding a run
of 13-19 digits that passes the Luhn check (see :data:`LONG_NUMBER_FIELDS`
for the fields that legitimately hold long numbers and are exempt).  The
PANs it keeps are those of card payments at their acquirer and of approved
ones for ``card_retention`` (``card_sealed``: cleared when a payment leaves
``sent`` unless its approval keeps it, then by :meth:`Journal.forget_cards`)
and of transactions waiting for their reversal (dropped when the reversal
ends), sealed by the switch with AES-256-GCM
(:mod:`switch.journal.reversal_card`), for the reversal's field 2.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

import msgspec


__all__ = [
    "TxnRecord",
    "Totals",
    "Journal",
    "JournalError",
    "JournalClosed",
    "JournalUncertain",
    "StaleState",
    "open_journal",
    "pan_protect",
    "pan_key",
    "digest_key",
    "same_pan",
    "PAN_KEY_VERSION",
    "check_no_pan",
    "REVERSED_STATES",
    "LONG_NUMBER_FIELDS",
]


# gc=False: a record holds only strings, numbers and bytes, so it can never be
# part of a reference cycle, and the collector need not track the several a
# payment makes (faster to build and to free, fewer young-generation passes).
class TxnRecord(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    id: int = 0  # assigned by insert
    terminal_id: str  # field 41
    merchant_id: str  # field 42
    mti: str  # the terminal's request MTI: 0100 0200 0220 0400 0500
    stan: str  # field 11
    transmission_time: str  # field 7, MMDDhhmmss
    processing_code: str | None = None  # field 3
    amount: int | None = None  # field 4, minor units
    currency: str | None = None  # field 49
    kind: str = "card"  # card | wallet | citycard | network
    acquirer: str | None = None  # name of the acquirer endpoint it went to
    pan_masked: str | None = None  # first 6 + last 4, from pan_protect()
    pan_hash: str | None = None  # "v1:" + hex HMAC-SHA256 of the PAN (key version first), from pan_protect()
    # Digest of the request content, computed by the switch: a retransmission
    # (same key, same digest) gets the stored response, a different digest 94.
    content_digest: str = ""
    rrn: str = ""  # assigned by insert: "%012d" % id (field 37)
    state: str = "received"  # received | sent | answered | reversal_pending | reversed | failed ...
    response_code: str | None = None  # field 39
    auth_code: str | None = None  # field 38
    acquirer_ref: str | None = None  # opaque to the switch, from the adapter's Result
    order_ref: str | None = None  # wallet merchant order number / idempotency key; unique when set
    order_state: str | None = None  # wallet order: the call about to be made / final disposition
    response: bytes | None = None  # the encoded response sent to the terminal
    original_id: int | None = None  # 0400/0220: the transaction it refers to
    reversal_attempts: int = 0
    created_at: float = 0.0  # unix time, set by insert
    updated_at: float = 0.0  # unix time, set by insert and every update
    # The STAN and field 7 the switch gave the request on its acquirer link,
    # written with the insert (or the update that moves it to another
    # acquirer) before it leaves: a reversal names the original with them.
    host_stan: str | None = None
    host_time: str | None = None
    # Fields 12, 13 and 22 of the request, which a host may want repeated in a reversal.
    local_time: str | None = None
    local_date: str | None = None
    entry_mode: str | None = None
    # The reversal's own STAN and field 7 on the link, the same on every
    # repeat (0420, then 0421), and when it was queued (unix time).
    reversal_stan: str | None = None
    reversal_time: str | None = None
    reversal_started: float | None = None
    # Set by the journal when an update stores the response: the settlement
    # cut-off (spec section 6.1) orders transactions by when they were answered.
    answered_at: float | None = None
    # 0 while the record owns its key (41, 11, 7); a retired record (outside
    # the retransmission window, or an advice sent again) gets its own id here
    # and frees the key for a new request.
    key_epoch: int = 0
    # The payer's pseudonym for value-added services (switch.core.vas): a keyed
    # hash under the merchant group's token key, never the PAN key's.
    customer_token: str | None = None
    # A card payment's PAN while the payment is at its acquirer, sealed
    # (switch.journal.reversal_card.seal_in_flight), so that its reversal
    # repeats field 2 even after a crash; cleared when it leaves "sent".
    card_sealed: bytes | None = None
    # The acquirer's answer to a reversal it refused for good (its field 39:
    # 12, 30, 64...), written with the move to "reversal_refused": the operator
    # settling it names this code to the acquirer long after the logs rotated.
    reversal_code: str | None = None
    # A city-card offline upload (0220): a keyed hash of its card and counter
    # (switch.journal.uploads.upload_key), and, once the centre approved it, the
    # id of the upload of that (card, counter) that counts: its own, or the
    # first's for an upload sent again under a new STAN (counted nowhere).
    upload_key: str | None = None
    upload_of: int | None = None

    def __reduce__(self):
        # Pickled (the writer process's frames, switch.journal.process) as a msgpack
        # array: msgspec's own reduction rebuilds a record from a dict of all its
        # fields by keyword, about 4 us each way, against 1 us.  A value of any
        # type but these keeps the keyword form, so that it arrives as it was.
        values = msgspec.structs.astuple(self)
        if _PLAIN.issuperset(map(type, values)):
            try:
                return _record_from_msgpack, (_record_encoder.encode(self),)
            except OverflowError:  # an int beyond 64 bits
                pass
        return _record_from_values, (values,)


_PLAIN = frozenset((str, int, float, bytes, bool, type(None)))
_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(TxnRecord)


def _record_from_values(values: tuple | list) -> TxnRecord:
    return TxnRecord(**dict(zip(TxnRecord.__struct_fields__, values)))


def _record_from_msgpack(data: bytes) -> TxnRecord:
    """A :class:`TxnRecord` from its pickled msgpack array."""
    try:
        return _record_decoder.decode(data)
    except msgspec.ValidationError:
        # A value of another type than its field says (str for int, say): the
        # journal stores what it is given, as sqlite3 would, so it is not refused here.
        return _record_from_values(msgspec.msgpack.decode(data))


class Totals(msgspec.Struct):
    """Settlement totals in the order of 0500 fields 74, 76, 86, 88."""

    credits_count: int
    debits_count: int
    credits_amount: int
    debits_amount: int


class JournalError(Exception):
    """The journal could not do it; nothing of the operation was written."""


class StaleState(Exception):
    """update_if(): the record is no longer in the state the caller read; nothing written."""


class JournalClosed(JournalError):
    """The journal is closed (or its writer thread died)."""


class JournalUncertain(JournalClosed):
    """The journal's writer process died with this operation handed to it and not confirmed:
    unlike every other :class:`JournalError`, it may have been committed just before the
    death.  A caller that would tell a terminal the outcome of such a write must not say
    it failed (a 96 over an approval the journal holds would charge the card for a sale
    that did not happen): see switch.core.engine, which then gives no answer at all."""


# A transaction in one of these states counts in no settlement totals
# (switch.core.states: reversed, reversal pending, unknown to its acquirer, or
# its reversal refused there: the terminal was told it is undone, and an
# operator settles the rest with the acquirer, then closes it).
REVERSED_STATES = ("reversed", "reversal_pending", "unmatched", "reversal_refused", "reversal_closed")

from switch.journal.pan_guard import (  # noqa: F401 (re-exported: callers import them from here)
    LONG_NUMBER_FIELDS,
    FREE_REFERENCE_FIELDS,
    check_no_pan,
    check_luhn_runs,
    check_luhn_values,
    check_pan_forms,
    PAN_KEY_VERSION,
    hkdf_sha256,
    pan_key,
    digest_key,
    pan_hmac,
    same_pan,
    check_own_pan,
    check_pan_digits,
    pan_protect,
)


class Journal(Protocol):
    """What the switch codes against; SQLite now, PostgreSQL next."""

    # commits, ops, max_batch, failed_commits (for metrics); updated by the writer.
    stats: dict[str, int]

    def insert(self, rec: TxnRecord) -> Future[tuple[TxnRecord, bool]]:
        """Store a new transaction under (terminal_id, stan, transmission_time).

        That is the spec's retransmission key (section 6: fields 41, 11, 7); the
        MTI is not part of it, so another MTI under the same key finds the
        existing record (the switch answers 94).

        New key: assigns id, rrn, created_at, updated_at; result (stored record, True).
        Existing key: writes nothing; result (existing record, False).
        """

    def update(self, txn_id: int, **changes: Any) -> Future[TxnRecord]:
        """Change columns of a transaction (updated_at is set); result: the updated record.

        KeyError if there is no such id; ValueError for an unknown or
        read-only column (id, rrn, created_at, updated_at).
        """

    def update_if(self, txn_id: int, expect: str, /, **changes: Any) -> Future[TxnRecord]:
        """update() only while the record is in state ``expect``; :class:`StaleState` otherwise.

        For transitions made from a record read earlier: another request may
        have moved it on meanwhile.
        """

    def store(self, txn_id: int, expect: str | None = None, /, **changes: Any) -> Future[Any]:
        """update() (``expect`` None) or update_if() for a caller that does not read the record back
        (a request's outcome, stored before its answer goes out): it resolves once the change is
        durable, and a journal in another process answers None instead of shipping the record
        back (:mod:`switch.journal.process`).  Errors as update() and update_if().
        """

    def get(self, txn_id: int) -> Future[TxnRecord | None]: ...

    def find(self, terminal_id: str, stan: str, transmission_time: str) -> Future[TxnRecord | None]: ...

    def find_original(
        self, terminal_id: str, mtis: tuple[str, ...], stan: str, transmission_time: str
    ) -> Future[TxnRecord | None]:
        """The transaction a reversal's or completion's field 90 names (newest if several)."""

    def find_by_order(self, order_ref: str) -> Future[TxnRecord | None]: ...

    def in_states(self, states: tuple[str, ...], limit: int = 100) -> Future[list[TxnRecord]]:
        """Transactions in these states, least recently updated first.

        Untouched transactions come in creation order; one a sweeper updates
        (for example reversal_attempts + 1) goes behind the others, so one
        that keeps failing does not starve the rest.  The states transactions
        wait in (received, sent, reversal_pending) are indexed; any other is
        found by a scan of the journal.
        """

    def totals(self, terminal_id: str, currency: str | None = None) -> Future[Totals]:
        """The terminal's totals since its last accepted settlement (spec sections 3 and 6.1, 0500).

        Debits: approved ("00") 0200 purchases (processing code 00xxxx) and
        approved 0220 completions.  Credits: approved 0200 refunds (20xxxx).
        Transactions in :data:`REVERSED_STATES` count in neither, nor do
        balance inquiries, top-ups, 0100 and 0400, nor a city-card upload
        sent again under a new STAN (``upload_of`` another's).  The period runs by when
        transactions were answered; ``currency`` (field 49) limits it to one
        currency, None counts all.
        """

    def settle(
        self, terminal_id: str, totals: Totals, accepted: bool, currency: str | None = None
    ) -> Future[None]:
        """Record a 0500 outcome; when accepted, later totals() count only later answers."""

    def settle_totals(
        self, terminal_id: str, currency: str | None, theirs: Totals, txn_id: int | None = None
    ) -> Future[tuple[Totals | None, bool]]:
        """totals() and settle() in one step, the cut-off taken with the totals: (ours, accepted).

        ``txn_id``: the 0500's own record, which takes its code (00 or 95) in
        the same step.  When it already has one (the 0500 is handled again,
        its answer lost), nothing is settled twice: (None, accepted as then).
        """

    def insert_refund(
        self, rec: TxnRecord, limit: int, since: float, currency: str, home: str
    ) -> Future[tuple[TxnRecord | None, bool]]:
        """insert() of a 0200 refund only if it keeps its merchant within ``limit`` (spec section 6.1).

        One operation: the merchant's refunds in ``currency`` (those without
        field 49 are in ``home``, the merchant's) created since ``since`` (unix
        time), approved and standing or still ``sent``, are summed and
        ``rec`` is inserted only if the sum plus its amount is at most
        ``limit`` (:mod:`switch.journal.refunds`).  Result as insert()'s, or
        (None, False) when it does not fit: nothing is written.
        """

    def find_completion(self, original_id: int) -> Future[TxnRecord | None]:
        """An approved, not reversed 0220 that completed the pre-authorization ``original_id``."""

    def claim_upload(self, txn_id: int) -> Future[TxnRecord | None]:
        """Which upload of a city-card (card, counter) counts (:mod:`switch.journal.uploads`):
        None if ``txn_id`` does, else the record of the upload it duplicates."""

    def reversing_completion(self, original_id: int, other_than: int) -> Future[TxnRecord | None]:
        """A 0220 of the pre-authorization ``original_id``, other than ``other_than``, waiting for its reversal."""

    def pending_reversals(self, limit: int = 1000) -> Future[list[TxnRecord]]:
        """Transactions waiting for a reversal, in the order they were queued."""

    def reversal_backlog(self) -> Future[tuple[int, float | None, int]]:
        """(how many wait for a reversal, when the oldest was queued, how many
        reversals the acquirer refused for good) — uncapped."""

    def retire(self, txn_id: int) -> Future[None]:
        """Free the record's key (41, 11, 7) for a new request; the record stays."""

    def reserve_stans(self, acquirer: str, count: int) -> Future[int]:
        """Reserve ``count`` host STANs for ``acquirer``: the first of them (1..999999, wrapping)."""

    def stan_position(self, acquirer: str) -> Future[int]:
        """The first host STAN the next :meth:`reserve_stans` for ``acquirer`` hands out."""

    # Spec 8 key state (switch.journal.terminal_keys).

    def store_terminal_keys(self, terminal_id: str, slot: str, keys) -> Future[None]:
        """Keep a terminal's TAK and TPK (``StoredKey``s, never clear) as its ``current`` or ``pending`` set."""

    def terminal_keys(self, terminal_id: str) -> Future[dict]:
        """The terminal's stored sets: slot -> kind -> (kind, algorithm, kcv, blob)."""

    def all_terminal_keys(self) -> Future[dict]:
        """Every terminal's stored sets: terminal -> slot -> kind -> row (read at start-up)."""

    def promote_terminal_keys(self, terminal_id: str, tak_kcv: str) -> Future[bool]:
        """The pending set with this TAK check value becomes current (True if it is current now)."""

    def advance_ksn(self, device: str, counter: int) -> Future[bool]:
        """Raise a DUKPT device's highest KSN counter; True if ``counter`` was above it."""

    # A queued reversal's card number, sealed (switch.journal.reversal_card).

    def keep_reversal_card(self, txn_id: int, sealed: bytes) -> Future[None]:
        """Keep ``reversal_card.seal()`` output for the reversal of ``txn_id`` (replacing one kept before).

        ValueError for anything that is not sealed output: the journal never takes a clear PAN.
        """

    def reversal_card(self, txn_id: int) -> Future[bytes | None]:
        """The sealed card kept for the reversal of ``txn_id``, or None."""

    def end_reversal(self, txn_id: int, expect: str, /, **changes: Any) -> Future[TxnRecord]:
        """update_if() that ends a reversal: the sealed card of ``txn_id`` goes in the same operation."""

    def purge_reversal_cards(self) -> Future[int]:
        """Drop the sealed cards of transactions that wait for no reversal (start-up); how many went."""

    def forget_cards(self, before: float) -> Future[int]:
        """Clear ``card_sealed`` of transactions created before ``before`` that are no longer
        ``sent`` (approved payments keep it for card_retention); how many were cleared."""

    def close(self) -> None:
        """Run what is queued, stop the writer thread, close the database."""


WRITERS = ("thread", "process")


def open_journal(url: str, *, hmac_key: bytes | None = None, writer: str = "thread", **options: Any) -> Journal:
    """Open the journal named by ``url``.

    ``sqlite://`` followed by a file path: ``sqlite:///var/lib/payswitch/journal.sqlite``
    (absolute), ``sqlite://payswitch-journal.sqlite`` (relative to the working
    directory), ``sqlite://:memory:`` (for tests).  ``options`` go to the
    backend (for SQLite: max_batch, clock; future and deliver, see the module
    documentation).  ``hmac_key`` is the key given to
    :func:`pan_protect`: with it the journal also refuses the transaction's own
    PAN in acquirer_ref and order_ref, which the Luhn guard cannot check.

    ``writer`` (``[journal] writer``): ``"thread"`` runs the database on a
    writer thread of this process; ``"process"`` in a writer process of its
    own (:mod:`switch.journal.process`), which takes ``loop`` too (an event
    loop, to be read without a thread).  The thread writer ignores ``loop``.
    """
    if writer not in WRITERS:
        raise ValueError(f"unknown journal writer {writer!r} (expected one of {', '.join(WRITERS)})")
    if writer == "process":
        journal_url_checked(url)
        from switch.journal.process import ProcessJournal

        return ProcessJournal(url, hmac_key=hmac_key, **options)
    options.pop("loop", None)
    return _open_here(url, hmac_key, options)


def journal_url_checked(url: str) -> None:
    """Raise ValueError for a URL no backend here opens (never quoting it: it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("journal URL must look like scheme://..., e.g. sqlite://payswitch-journal.sqlite")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        raise ValueError(f"journal URL scheme {scheme!r} is not supported yet")
    if scheme != "sqlite":
        raise ValueError(f"unknown journal URL scheme {scheme!r} (expected 'sqlite')")
    if not rest:
        raise ValueError("journal URL 'sqlite://' names no file (use sqlite://:memory: for a throwaway one)")


def _open_here(url: str, hmac_key: bytes | None, options: dict[str, Any]) -> Journal:
    """The backend for ``url`` in this process."""
    journal_url_checked(url)
    from switch.journal.sqlite import SqliteJournal

    return SqliteJournal(url.partition("://")[2], hmac_key=hmac_key, **options)
