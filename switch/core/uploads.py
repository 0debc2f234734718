"""A city-card offline upload sent again under a new STAN: answered 00, counted once (spec 4.1, section 3).

The terminal that got no answer to its 0220 uploads the same offline debit
again under a new key (41, 11, 7), or uploads a debit whose online 00 never
reached it.  The clearing centre books a (card,
counter) once and answers the second upload 00 with the first's
authorization code; the terminal, which counts the debit once, must get that
00 to stop uploading.  The switch journals the second upload too, marked as
the duplicate it is (:mod:`switch.journal.uploads`): it counts in no 0500
totals, its outbox event is ``duplicate`` and the after-approval services
(points) are not called for it.  The same (card, counter) with other
content is the centre's 94, answered as it is.

An online debit (0200) of that card and counter and its upload may be at
the centre together: the centre books one, and answers the other 00 with
the same authorization code (the upload) or 94 (the debit).  An upload
approved while the debit is undecided waits for the journal to show the
debit's outcome, so that exactly one of the two counts whatever the order
of their answers, in any worker.
"""
from __future__ import annotations

import logging
from typing import Any, Generator

import msgspec

from switch.core.acquirer import Result
from switch.core.commands import Op, Pause
from switch.core.elsewhere import POLL
from switch.core.messages import PURCHASE
from switch.core.reversal import about
from switch.journal import TxnRecord
from switch.journal.uploads import upload_key

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

# Share of response_timeout an upload waits for its card and counter's online
# debit to be decided; the rest is for journaling and answering.
_WAIT_SHARE = 0.9


class Undecided(Exception):
    """The online debit of the upload's card and counter was still undecided at the upload's deadline.

    An outcome, not a failure: the journal answered every claim (:func:`counted` answers it 96)."""


def key_of(secret: bytes, msg, mti: str, kind: str, pan: str | None, tlv: dict) -> str | None:
    """The journal's ``upload_key`` of a city-card purse debit, else None.

    An offline upload (0220 without field 90) and an online debit (0200,
    processing code 00) both spend a card and counter, which the centre books
    once: an upload of a debit approved online (its 00 lost on the way to the
    terminal) is a duplicate of that debit.
    """
    cc = tlv.get("CC")
    if kind != "citycard" or not pan or not cc:
        return None
    if not (mti == "0220" and 90 not in msg) and not (mti == "0200" and msg[3][:2] == PURCHASE):
        return None
    return upload_key(pan, cc[:5], secret)  # the card's transaction counter: CC's first 5 digits (spec 4)


def counted(engine, rec: TxnRecord, result: Result, used: str) -> Gen:
    """After the centre approved the upload ``rec``: (the result to answer with, whether it is a duplicate).

    A duplicate is answered with the authorization code of the upload that
    counts, as the centre does (its own when the centre gave none: the
    last six characters of that upload's RRN, section 3).  If the journal
    cannot decide (it failed), the upload is answered 96 and not counted:
    the terminal uploads it again.  An upload whose card and counter's
    online debit is still undecided at its deadline (its worker died with
    it at the centre) gets a result of 96, answered and journaled as any
    outcome (a retransmission gets that 96), counted nowhere: recovery
    reverses the debit, and the upload sent again under a new STAN counts.
    """
    if rec.upload_key is None:
        return result, False
    try:
        first = yield from _claim(engine, rec)
    except Undecided as e:
        log.warning("rrn %s: %s; answered 96, the terminal uploads it again", rec.rrn, e, **about(rec))
        return Result(response_code="96", acquirer_ref=result.acquirer_ref), False
    except Exception:
        log.exception("rrn %s: cannot journal which upload of this card and counter counts", rec.rrn,
                      **about(rec))
        yield from engine.reversals.strand(rec, used, None, reverse=False, event="unconfirmed")
        raise
    if first is None:
        return result, False
    log.info("rrn %s: offline upload sent again (card and counter of rrn %s); approved, counted once",
             rec.rrn, first.rrn, **about(rec))
    return msgspec.structs.replace(result, auth_code=first.auth_code or first.rrn[-6:]), True


def _claim(engine, rec: TxnRecord) -> Gen:
    """The journal's claim of ``rec``, asked again while an online debit of its card and counter is undecided."""
    deadline = rec.created_at + engine.cfg.response_timeout * _WAIT_SHARE
    first = yield Op("claim_upload", rec.id)
    if _undecided_debit(first):
        log.info("rrn %s: the online debit of this card and counter (rrn %s) is not decided yet; "
                 "the upload counts or not once it is", rec.rrn, first.rrn, **about(rec))
    while _undecided_debit(first):
        left = deadline - engine.clock()
        if left <= 0:
            raise Undecided(f"the online debit of this card and counter (rrn {first.rrn}) is still undecided")
        yield Pause(min(POLL, left))
        first = yield Op("claim_upload", rec.id)
    return first


def _undecided_debit(first: TxnRecord | None) -> bool:
    # An upload that counts may be unanswered too (claimed, its answer being journaled): that one is final.
    return first is not None and first.mti == "0200" and first.response_code is None
