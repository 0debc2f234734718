"""The journal's schema, one migration per version (SQLite).

Each entry of :data:`MIGRATIONS` is one schema version, applied in order,
each in one transaction, by :class:`switch.journal.sqlite.SqliteJournal` when
it opens a database; ``schema_version`` records how far a database is.  Never
change a migration that has shipped: append one.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time

from switch.journal import JournalError, files, outbox, reversal_card, terminal_keys, uploads

# Each entry is one schema version; applied in order, each in one transaction.
# The states a transaction waits in (states.py): the only ones the journal
# looks rows up by (start-up recovery, the reversal queue, the sealed-card
# purge).  A partial index on them keeps a finished transaction out of it: an
# answered purchase leaves the index in its update instead of moving to an
# "answered" entry that nothing reads, and the index stays as small as the
# traffic in flight.  SQLite uses a partial index only for a query whose
# WHERE names one of these terms literally (state = 'sent'), not through a
# bound parameter.
# (Schema 9 indexed the first three; schema 10 adds ``reversal_refused``: a
# reversal the acquirer refused for good waits for an operator, and the
# reversal sender counts them at every sweep.)
_OPEN_STATES_9 = ("received", "sent", "reversal_pending")
OPEN_STATES = (*_OPEN_STATES_9, "reversal_refused")
OPEN_STATES_WHERE = " OR ".join(f"state = '{s}'" for s in OPEN_STATES)
OPEN_STATES_MIGRATION = (
    "DROP INDEX txn_state",
    "CREATE INDEX txn_state ON txn (state, updated_at) WHERE " + " OR ".join(f"state = '{s}'" for s in _OPEN_STATES_9),
)
REFUSED_MIGRATION = (
    "DROP INDEX txn_state",
    f"CREATE INDEX txn_state ON txn (state, updated_at) WHERE {OPEN_STATES_WHERE}",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE txn (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            terminal_id TEXT NOT NULL,
            merchant_id TEXT NOT NULL,
            mti TEXT NOT NULL,
            stan TEXT NOT NULL,
            transmission_time TEXT NOT NULL,
            processing_code TEXT,
            amount INTEGER,
            currency TEXT,
            kind TEXT NOT NULL,
            acquirer TEXT,
            pan_masked TEXT,
            pan_hash TEXT,
            content_digest TEXT NOT NULL,
            rrn TEXT GENERATED ALWAYS AS (printf('%012d', id)) VIRTUAL,
            state TEXT NOT NULL,
            response_code TEXT,
            auth_code TEXT,
            acquirer_ref TEXT,
            order_ref TEXT,
            order_state TEXT,
            response BLOB,
            original_id INTEGER,
            reversal_attempts INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT
        """,
        # The retransmission / duplicate key (spec section 6: same 41, 11 and 7,
        # whatever the MTI; a different MTI under the same key is a 94).
        "CREATE UNIQUE INDEX txn_key ON txn (terminal_id, stan, transmission_time)",
        # Sweepers: in_states() orders by updated_at (then id, implicit in the index).
        "CREATE INDEX txn_state ON txn (state, updated_at)",
        "CREATE UNIQUE INDEX txn_order_ref ON txn (order_ref) WHERE order_ref IS NOT NULL",
        "CREATE INDEX txn_original ON txn (original_id) WHERE original_id IS NOT NULL",
        # Settlement totals scan a terminal's transactions after a cut-off id.
        "CREATE INDEX txn_terminal ON txn (terminal_id, id)",
        """
        CREATE TABLE settlement (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            terminal_id TEXT NOT NULL,
            accepted INTEGER NOT NULL,
            credits_count INTEGER NOT NULL,
            debits_count INTEGER NOT NULL,
            credits_amount INTEGER NOT NULL,
            debits_amount INTEGER NOT NULL,
            last_txn_id INTEGER NOT NULL,  -- cut-off: the highest txn id when it was recorded
            created_at REAL NOT NULL
        ) STRICT
        """,
        "CREATE INDEX settlement_terminal ON settlement (terminal_id, accepted, last_txn_id)",
    ),
    (
        # Host STAN / field 7 journaled with the request, the reversal's own,
        # the fields a host wants repeated in a reversal (spec section 6.1).
        "ALTER TABLE txn ADD COLUMN host_stan TEXT",
        "ALTER TABLE txn ADD COLUMN host_time TEXT",
        "ALTER TABLE txn ADD COLUMN local_time TEXT",
        "ALTER TABLE txn ADD COLUMN local_date TEXT",
        "ALTER TABLE txn ADD COLUMN entry_mode TEXT",
        "ALTER TABLE txn ADD COLUMN reversal_stan TEXT",
        "ALTER TABLE txn ADD COLUMN reversal_time TEXT",
        "ALTER TABLE txn ADD COLUMN reversal_started REAL",
        # The settlement cut-off goes by when a transaction was answered, not by
        # when it arrived: one in flight at the 0500 belongs to the next period.
        "ALTER TABLE txn ADD COLUMN answered_at REAL",
        "UPDATE txn SET answered_at = updated_at WHERE response_code IS NOT NULL",
        # A key (41, 11, 7) identifies a request for the retransmission window
        # only: a retired record moves out of the way (key_epoch = its id).
        "ALTER TABLE txn ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 0",
        "DROP INDEX txn_key",
        "CREATE UNIQUE INDEX txn_key ON txn (terminal_id, stan, transmission_time, key_epoch)",
        # Refund limits per merchant and day (section 6.1); refunds are rare, so
        # a partial index costs the hot path nothing.
        "CREATE INDEX txn_refund ON txn (merchant_id, created_at) WHERE substr(processing_code, 1, 2) = '20'",
        "ALTER TABLE settlement ADD COLUMN currency TEXT",
        "ALTER TABLE settlement ADD COLUMN cutoff REAL",
        "UPDATE settlement SET cutoff = created_at",
        # Host STANs survive restarts: blocks are reserved here before use.
        "CREATE TABLE stan_block (acquirer TEXT PRIMARY KEY, next INTEGER NOT NULL) STRICT",
    ),
    (
        # Issue 8: every PAN hash names its key version; those made before
        # were keyed with the journal secret itself, version 0.
        "UPDATE txn SET pan_hash = 'v0:' || pan_hash WHERE pan_hash IS NOT NULL AND pan_hash NOT LIKE 'v%:%'",
    ),
    outbox.MIGRATION,  # customer tokens and the transaction event outbox (switch.journal.outbox)
    terminal_keys.MIGRATION,  # session keys and DUKPT counters that survive restarts (switch.journal.terminal_keys)
    (
        # Issue 9: the outbox triggers' conditions without IN lists (see
        # switch.journal.outbox), and no txn_terminal: settlement totals find
        # a terminal's transactions through txn_key, whose first column is the
        # terminal, as well; one index less to write per transaction.
        *outbox.CHEAPER_CONDITIONS,
        "DROP INDEX txn_terminal",
    ),
    reversal_card.MIGRATION,  # a queued reversal's card number, sealed (switch.journal.reversal_card)
    reversal_card.IN_FLIGHT_MIGRATION,  # a card payment's, sealed, while it is at the acquirer
    OPEN_STATES_MIGRATION,
    REFUSED_MIGRATION,  # refused reversals in txn_state too (switch.core.states.REVERSAL_REFUSED)
    # The acquirer's code for a reversal it refused for good (TxnRecord.reversal_code).
    ("ALTER TABLE txn ADD COLUMN reversal_code TEXT",),
    # Room the journal's ping writes and gives back after a write failed
    # (switch.journal.files.writable): empty otherwise.
    ("CREATE TABLE journal_probe (room BLOB NOT NULL) STRICT",),
    uploads.MIGRATION,  # city-card uploads sent again under a new STAN count once (switch.journal.uploads)
    uploads.NARROW_EVENTS,  # payment events as narrow rows, their body written when read (switch.journal.outbox)
    uploads.RECOUNT,  # an online debit reversed after its upload counted as its duplicate: the upload counts
)
SCHEMA_VERSION = len(MIGRATIONS)

log = logging.getLogger(__name__)


def _backup_before_migrating(path: str, version: int) -> str | None:
    """A whole, checked copy of the journal at ``path`` (schema ``version``) beside it, before a
    migration changes it: the way back to the payswitch it was upgraded from.  None for a journal
    that is not a file of ours.  A copy that cannot be made refuses the migration (JournalError):
    nothing is changed without it.

    Called inside migrate()'s write transaction, which has changed nothing yet: the copy is read
    by another connection (a reader beside a reserved write lock), as of the last commit.
    """
    if not files.on_disk(path):
        return None
    from switch.journal import backup  # it imports this module

    stem = f"{path}.schema-{version}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    dest = f"{stem}.bak"
    n = 1
    while os.path.lexists(dest):  # a migration tried again in the same second (the first one failed)
        n += 1
        dest = f"{stem}-{n}.bak"
    try:
        backup.backup(path, dest)
    except JournalError as e:
        raise JournalError(f"journal {path} was not migrated from schema version {version}: the backup taken "
                           f"before a migration could not be made ({e}); it was left as it was") from None
    return dest


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the journal at ``path`` up to :data:`SCHEMA_VERSION`, in one transaction.

    A journal newer than this code is refused, and a failed migration leaves
    the file as it was.
    """
    target = SCHEMA_VERSION  # read when called: a benchmark may stop at an older version
    version = number = 0
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT")
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        if version > target:
            raise JournalError(
                f"journal {path} has schema version {version}, newer than this payswitch knows ({target}); "
                "it was not changed: run the payswitch version that wrote it (or a newer one), or restore "
                f"the backup taken before the upgrade ({files.WHAT_TO_DO})"
            )
        saved = _backup_before_migrating(path, version) if 0 < version < target else None
        for number in range(version + 1, target + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        conn.execute("COMMIT")
        # Never silently: a journal created where one was expected (a wrong url, another working
        # directory) starts RRNs from 1 and forgets the reversal queue; a migrated one is refused
        # by the payswitch it was upgraded from.
        if version == 0:
            log.info("journal %s created, empty (schema version %d): if a journal was expected here, "
                     "stop the switch and check [journal] url (runbook: \"Journal will not open\")", path, target)
        elif version < target:
            log.warning("journal %s migrated from schema version %d to %d: a payswitch older than this one no "
                        "longer opens it; the journal as it was is in %s (runbook: \"Start, stop, reload\", "
                        "upgrades)", path, version, target, saved or "no backup (not a file)")
    except BaseException as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.DatabaseError):
            if number and getattr(e, "sqlite_errorname", "") in ("SQLITE_ERROR", "SQLITE_CONSTRAINT"):
                raise JournalError(
                    f"journal {path} could not be migrated to schema version {number} ({e}); it was left "
                    f"as it was, at version {version}: report this with the log ({files.WHAT_TO_DO})"
                ) from None
            raise JournalError(files.cannot_open(path, e)) from None
        raise
