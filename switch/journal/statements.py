"""The SQL of the SQLite journal (``switch.journal.sqlite``) and the types of its columns.

Kept apart from the writer so that the statements can be read, and checked
against the spec, in one place.
"""
from __future__ import annotations

import operator

from switch.journal import FREE_REFERENCE_FIELDS, LONG_NUMBER_FIELDS, REVERSED_STATES, TxnRecord

FIELDS: tuple[str, ...] = TxnRecord.__struct_fields__
# Set by the journal, never by the caller.
ASSIGNED = frozenset({"id", "rrn", "created_at", "updated_at", "answered_at"})
INSERTED = tuple(f for f in FIELDS if f not in ASSIGNED)
UPDATABLE = frozenset(INSERTED)
INSERTED_INDEX = tuple(FIELDS.index(f) for f in INSERTED)
COLUMNS = ", ".join(FIELDS)


# Its parameters are a record's values, all of them in field order (astuple),
# then created_at and updated_at: numbered, so that those set by the journal
# (id, rrn, ...) are bound and not used, and the caller need not pick out the
# inserted ones (36 of 41).
INSERT = (
    f"INSERT INTO txn ({', '.join(INSERTED)}, created_at, updated_at) "
    f"VALUES ({', '.join(f'?{i + 1}' for i in (*INSERTED_INDEX, len(FIELDS), len(FIELDS) + 1))}) "
    "ON CONFLICT (terminal_id, stan, transmission_time, key_epoch) DO NOTHING"
)
BY_ID = f"SELECT {COLUMNS} FROM txn WHERE id = ?"
BY_KEY = (
    f"SELECT {COLUMNS} FROM txn "
    "WHERE terminal_id = ? AND stan = ? AND transmission_time = ? AND key_epoch = 0"
)
BY_ORDER = f"SELECT {COLUMNS} FROM txn WHERE order_ref = ?"

REVERSED = ", ".join(f"'{s}'" for s in REVERSED_STATES)
# Spec section 3, 0500: debits are approved purchases (0200, 00xxxx) and
# completions (0220); credits approved refunds (0200, 20xxxx); reversed ones
# count in neither, nor does a city-card upload sent again under a new STAN
# (upload_of names another record: switch.journal.uploads).  Section 6.1:
# the period runs from the terminal's last accepted settlement in that
# currency (its cut-off) to this one's, by when each transaction was
# answered.  ?2 is the currency (NULL: every currency).
LAST_CUTOFF = """
    SELECT coalesce(max(cutoff), 0) FROM settlement
    WHERE terminal_id = ?1 AND accepted = 1 AND (?2 IS NULL OR currency IS NULL OR currency = ?2)
"""
TOTALS = f"""
    SELECT coalesce(sum(credit), 0), coalesce(sum(debit), 0),
           coalesce(sum(CASE WHEN credit THEN amount END), 0),
           coalesce(sum(CASE WHEN debit THEN amount END), 0)
    FROM (
        SELECT amount,
               mti = '0200' AND substr(processing_code, 1, 2) = '20' AS credit,
               (mti = '0200' AND substr(processing_code, 1, 2) = '00') OR mti = '0220' AS debit
        FROM txn
        WHERE terminal_id = ?1
          AND (?2 IS NULL OR currency = ?2)
          AND answered_at > ({LAST_CUTOFF}) AND answered_at <= ?3
          AND response_code = '00'
          AND state NOT IN ({REVERSED})
          AND (upload_of IS NULL OR upload_of = id)
    )
"""
SETTLE = """
    INSERT INTO settlement (terminal_id, accepted, credits_count, debits_count,
                            credits_amount, debits_amount, last_txn_id, created_at, currency, cutoff)
    VALUES (?, ?, ?, ?, ?, ?, (SELECT coalesce(max(id), 0) FROM txn), ?, ?, ?)
"""
# The code an 0500 took with its totals (settle_totals), before its answer is
# stored: NULL until then.  Its outcome event (``settled``) fires here.
SETTLED_AS = "SELECT response_code FROM txn WHERE id = ? AND mti = '0500'"
SETTLED = "UPDATE txn SET response_code = ?, updated_at = ? WHERE id = ? AND response_code IS NULL"
COMPLETION = (
    f"SELECT {COLUMNS} FROM txn WHERE original_id = ? AND mti = '0220' AND response_code = '00' "
    f"AND state NOT IN ({REVERSED}) ORDER BY id LIMIT 1"
)
# A completion of the pre-authorization waiting for its reversal (the txn_original index).
COMPLETION_REVERSING = (
    f"SELECT {COLUMNS} FROM txn WHERE original_id = ? AND mti = '0220' AND state = 'reversal_pending' "
    "AND id <> ? ORDER BY id LIMIT 1"
)
PENDING_REVERSALS = (
    f"SELECT {COLUMNS} FROM txn WHERE state = 'reversal_pending' "
    "ORDER BY coalesce(reversal_started, updated_at), id LIMIT ?"
)
# (waiting, when the oldest was queued, refused for good and waiting for an operator)
BACKLOG = (
    "SELECT count(*) FILTER (WHERE state = 'reversal_pending'), "
    "min(coalesce(reversal_started, updated_at)) FILTER (WHERE state = 'reversal_pending'), "
    "count(*) FILTER (WHERE state = 'reversal_refused') "
    "FROM txn WHERE state = 'reversal_pending' OR state = 'reversal_refused'"
)


# Python types that a STRICT column of the table stores and gives back
# unchanged.  A value of another type may be converted on the way in (an int
# into a TEXT column becomes text, a float into an INTEGER column an int, a
# bytearray a bytes), so a record holding one is read back from the database
# instead of being built from the values as given.
INTEGER_COLUMNS = frozenset({"amount", "original_id", "reversal_attempts", "key_epoch", "upload_of"})
BLOB_COLUMNS = frozenset({"response", "card_sealed"})
REAL_COLUMNS = frozenset({"reversal_started"})
TEXT, INTEGER, BLOB = frozenset({str, type(None)}), frozenset({int, type(None)}), frozenset({bytes, type(None)})
REAL = frozenset({float, type(None)})
COLUMN_TYPES: dict[str, frozenset] = {
    f: INTEGER if f in INTEGER_COLUMNS else BLOB if f in BLOB_COLUMNS else REAL if f in REAL_COLUMNS else TEXT
    for f in INSERTED
}
INSERTED_TYPES = tuple(COLUMN_TYPES[f] for f in INSERTED)
# The same, as native.sqlbatch's parameter kinds (t str, i int, r float, b bytes; NULL in any).
KIND_OF_TYPES = {TEXT: "t", INTEGER: "i", REAL: "r", BLOB: "b"}
COLUMN_KINDS: dict[str, str] = {f: KIND_OF_TYPES[t] for f, t in COLUMN_TYPES.items()}
# Every field (those set by the journal are not used: any kind), then created_at, updated_at.
INSERT_KINDS = "".join(COLUMN_KINDS.get(f, "*") for f in FIELDS) + "rr"


def as_stored(types: tuple[frozenset, ...], values: tuple) -> bool:
    """True if every value would be stored, and read back, as it is."""
    return all(map(frozenset.__contains__, types, map(type, values)))


def record(row: tuple) -> TxnRecord:
    return TxnRecord(**dict(zip(FIELDS, row)))


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def update_plan(columns: tuple[str, ...], guarded: bool) -> tuple:
    """What an update of ``columns`` needs, made once per set of columns (switch.journal.sqlite keeps them).

    ``(statements, luhn_names, pick, forms, free_refs)``: the SQL (UPDATE,
    UPDATE ... RETURNING, column types, whether it stores the answer,
    native.sqlbatch's parameter kinds); the columns the Luhn guard scans
    and how to pick their values out of the changes' (None: all of
    them); whether pan_masked or pan_hash is set; whether a free
    reference field is (checked against the record's own PAN).
    """
    assignments = ", ".join(f"{c} = ?" for c in columns)
    # Storing the answer (its response code) stamps answered_at too.
    answers = "response_code" in columns
    stamps = "updated_at = ?, answered_at = ?" if answers else "updated_at = ?"
    where = "id = ? AND state = ?" if guarded else "id = ?"
    sql = f"UPDATE txn SET {assignments}, {stamps} WHERE {where}"
    # native.sqlbatch's parameter kinds: the columns', then the stamps, id and expected state.
    kinds = "".join(COLUMN_KINDS[c] for c in columns) + ("rri" if answers else "ri") + ("t" if guarded else "")
    statements = (sql, f"{sql} RETURNING {COLUMNS}", tuple(COLUMN_TYPES[c] for c in columns), answers, kinds)
    scanned = [i for i, c in enumerate(columns) if c not in LONG_NUMBER_FIELDS]
    luhn_names = tuple(columns[i] for i in scanned)
    if not scanned or len(scanned) == len(columns):
        pick = None
    elif len(scanned) == 1:
        pick = (lambda values, i=scanned[0]: (values[i],))
    else:
        pick = operator.itemgetter(*scanned)
    forms = "pan_masked" in columns or "pan_hash" in columns
    free_refs = any(c in columns for c in FREE_REFERENCE_FIELDS)
    return statements, luhn_names, pick, forms, free_refs
