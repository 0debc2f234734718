"""City-card offline uploads sent again under a new STAN: which one counts (spec 4.1, section 3).

A terminal that got no answer to its 0220 upload sends the same offline
debit again under a new key (41, 11, 7), so the journal's retransmission
check does not see it.  The clearing centre de-duplicates on (card,
counter): it answers the second upload 00 with the first's authorization
code and books nothing.  The journal does the same, so that the switch's
books match the centre's:

- every upload carries ``upload_key``, a keyed hash of card and counter
  (:func:`upload_key`), from its insert, and so does every online debit
  (0200, processing code 00): the centre books a card and counter once,
  whether it was debited online or uploaded;
- when the centre approves one, :meth:`Uploads.claim_upload` decides in one
  operation on the writer (so two uploads answered together cannot both
  win) which upload counts, and writes its id into ``upload_of``: the
  record's own id for the first, that first's id for a duplicate.  An
  earlier upload counts if it is approved and standing, or still waiting for
  its answer; one the switch answered otherwise (68, 91, 96: the centre's
  answer never came) does not, and the upload that the centre confirms next
  is the one that counts.  An online debit of that card and counter counts
  once approved and standing (its own ``upload_of`` stays empty: it claims
  nothing, it is counted as the debit it is);
- an online debit of that card and counter still undecided (journaled,
  neither answered nor reversed) may yet be approved, and would count: the
  claim then writes nothing and names that debit, and the upload asks again
  once the debit is decided (:func:`switch.core.uploads.counted`).  With
  both at the centre together, the centre books one of them: whichever the
  journal finds approved counts, the other is its duplicate or declined;
- an online debit that uploads duplicate and that is reversed since (the
  terminal's 0400 of a 0200 whose answer it never got) stays booked at the
  centre, which keeps a debit the card uploaded: the count moves to its
  first approved duplicate in the step that reverses it (:data:`RECOUNT`);
- settlement totals leave out every record whose ``upload_of`` is another's
  (``statements.TOTALS``), and its outbox event is ``duplicate``, not
  ``approved``.

The key never reveals the card number: HMAC-SHA256 under a key derived
from the journal secret (its own HKDF label, as the PAN-hash and
content-digest keys), written in the letters a-p only so that the PAN guard
has no digits to look at.
"""
from __future__ import annotations

import functools
from concurrent.futures import Future

from switch.journal import REVERSED_STATES, TxnRecord, hkdf_sha256
from switch.journal.outbox import narrow_migration, outcome_trigger
from switch.journal.statements import BY_ID, record
from switch.keyed_hash import keyed

__all__ = ["upload_key", "MIGRATION", "NARROW_EVENTS", "RECOUNT", "Uploads", "FIRST_UPLOAD"]

_LABEL = b"payswitch citycard-upload v1"
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


@functools.lru_cache(maxsize=8)
def _key(secret: bytes) -> bytes:
    return hkdf_sha256(secret, _LABEL)


def upload_key(card: str, counter: str, secret: bytes) -> str:
    """``u1`` + 64 letters: HMAC-SHA256 of ``card:counter`` under a key derived from the journal secret."""
    if not secret:
        raise ValueError("upload_key needs the journal secret")
    digest = keyed(_key(secret)).hexdigest(f"{card}:{counter}".encode("ascii"))
    return "u1" + digest.translate(_LETTERS)


_OUTCOME_EVENT = (
    "CASE WHEN NEW.upload_of IS NOT NULL AND NEW.upload_of <> NEW.id THEN 'duplicate' "
    "WHEN NEW.response_code = '00' THEN 'approved' ELSE 'declined' END"
)

MIGRATION: tuple[str, ...] = (
    "ALTER TABLE txn ADD COLUMN upload_key TEXT",
    "ALTER TABLE txn ADD COLUMN upload_of INTEGER",
    "CREATE INDEX txn_upload ON txn (upload_key) WHERE upload_key IS NOT NULL",
    # The outcome event of a duplicate upload says so: a partner counting
    # approvals (points) must not count the debit twice.
    "DROP TRIGGER outbox_outcome",
    outcome_trigger(_OUTCOME_EVENT),
)
# Schema 14: the outbox's payment events as narrow rows (switch.journal.outbox), duplicates still named.
NARROW_EVENTS: tuple[str, ...] = narrow_migration(_OUTCOME_EVENT)

_REVERSED = ", ".join(f"'{s}'" for s in REVERSED_STATES)
# The debit that counts for this upload's (card, counter), other than itself:
# an upload approved and standing, or not answered yet (the other one of two
# at the centre together), or an online debit approved and standing.  The
# partial index txn_upload finds them.
FIRST_UPLOAD = f"""
    SELECT id FROM txn
    WHERE upload_key = ?1 AND upload_key IS NOT NULL AND id <> ?2
      AND (upload_of = id OR (mti = '0200' AND response_code = '00'))
      AND (response_code = '00' OR response_code IS NULL) AND state NOT IN ({_REVERSED})
    ORDER BY id LIMIT 1
"""
# An online debit of this upload's (card, counter) that is journaled but not
# decided yet (workers share the journal: it may be at the centre in another).
UNDECIDED_DEBIT = """
    SELECT id FROM txn
    WHERE upload_key = ?1 AND upload_key IS NOT NULL AND id <> ?2
      AND mti = '0200' AND response_code IS NULL AND state IN ('received', 'sent')
    ORDER BY id LIMIT 1
"""
CLAIM = "UPDATE txn SET upload_of = ?1 WHERE id = ?2 AND upload_key IS NOT NULL"
# Schema 15: an online debit that uploads duplicate, reversed since (the
# terminal's 0400 of a 0200 whose 00 it never got, sent after the card's
# upload of it).  The centre keeps a debit the card uploaded (the card paid)
# and answers that reversal 00, so the count moves to the first approved
# upload duplicating it, in the statement that starts the reversal: its
# ``upload_of`` becomes its own id, the other duplicates point at it.  Every
# reversal starts as reversal_pending (switch.core.states); the condition
# compares, without an IN list (switch.journal.outbox).  The subquery names
# no row of the UPDATE: SQLite runs it once.
RECOUNT: tuple[str, ...] = (
    """
    CREATE TRIGGER upload_recount AFTER UPDATE OF state ON txn
    WHEN NEW.upload_key IS NOT NULL AND NEW.mti = '0200'
         AND NEW.state = 'reversal_pending' AND OLD.state <> 'reversal_pending'
    BEGIN
        UPDATE txn SET upload_of = (
            SELECT min(id) FROM txn
            WHERE upload_key = NEW.upload_key AND upload_of = NEW.id AND response_code = '00'
        )
        WHERE upload_key = NEW.upload_key AND upload_of = NEW.id;
    END
    """,
)


class Uploads:
    """Mixed into :class:`switch.journal.sqlite.SqliteJournal` (its caller's side and writer's side)."""

    def claim_upload(self, txn_id: int) -> Future[TxnRecord | None]:
        """Decide which upload of the record's (card, counter) counts; write it into ``upload_of``.

        Result: None when ``txn_id`` is the one that counts (the first
        approved), or the record of the upload it duplicates; or, with
        nothing written, the record of an online debit of the same card and
        counter not decided yet (``response_code`` None: ask again once it
        is).  KeyError if ``txn_id`` has no ``upload_key`` (not a city-card
        upload).
        """
        if type(txn_id) is not int:
            return self._failed(TypeError(f"claim_upload takes a record id, got {type(txn_id).__name__}"))
        return self._submit(self._claim_upload, (txn_id,), True)

    def _claim_upload(self, txn_id: int) -> TxnRecord | None:
        conn = self._conn
        row = conn.execute("SELECT upload_key FROM txn WHERE id = ?", (txn_id,)).fetchone()
        if row is None or row[0] is None:
            raise KeyError(txn_id)
        found = conn.execute(FIRST_UPLOAD, (row[0], txn_id)).fetchone()
        if found is None:
            undecided = conn.execute(UNDECIDED_DEBIT, (row[0], txn_id)).fetchone()
            if undecided is not None:  # about to change: not remembered
                return record(conn.execute(BY_ID, (undecided[0],)).fetchone())
        first = txn_id if found is None else found[0]
        conn.execute(CLAIM, (first, txn_id))
        self._known.pop(txn_id, None)  # upload_of changed behind the remembered record
        return None if found is None else self._remember(record(conn.execute(BY_ID, (first,)).fetchone()))
