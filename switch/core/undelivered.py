"""An approval the terminal cannot be told is reversed by the switch (spec sections 6 and 8).

Section 8 makes the answer to a MACed request carry a MAC; section 6 has every
well-formed request answered.  With the security module down (or silent) no
answer can carry a MAC, so the switch sends none
(:meth:`switch.core.security.TerminalSecurity.guarded`).  Its outcome is
journaled already; if it is an approval, and the terminal neither
retransmits nor reverses, the customer pays for a sale the terminal never
completed.  So the switch does what it does with an approval that came too
late for the terminal: it queues the reversal (``answered`` →
``reversal_pending``, the reversal queue sends it) and journals 68 as the
answer, in one journal operation.  From then on:

- a retransmission gets the journaled 68 (MACed if the module is back, else
  nothing again), never the 00 of money given back;
- a terminal 0400 for it finds the reversal queued and is answered 00
  without a second reversal at the acquirer (reversals are idempotent).

A declined answer moved no money and stays as journaled, as do a balance
inquiry and a city-card offline upload (the card paid already: the terminal
uploads it again).

A request and its retransmission may be answered at once (the module slow
to fail the first MAC, back for the second): the terminal must never hold a
00 that the switch reverses.  :class:`Answering` keeps, per key (41, 11, 7)
of a request being answered in this process, whether an approval went out
or a reversal began; whichever comes first excludes the other (a 00 found
reversing is withheld: the terminal's next retransmission gets 68).
"""
from __future__ import annotations

import logging
from typing import Any, Generator

from switch.core import messages, pipeline, states
from switch.core.commands import Op
from switch.core.reversal import REVERSIBLE, about
from switch.journal import JournalError, StaleState, TxnRecord

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

CODE = "68"  # what the journal answers a retransmission: the late approval's answer (section 5)


def reversible(rec: TxnRecord) -> bool:
    """Whether ``rec`` is an approval standing at its acquirer that a reversal undoes."""
    if rec.state != states.ANSWERED or rec.response_code != "00" or rec.mti not in REVERSIBLE or not rec.acquirer:
        return False
    if pipeline.is_inquiry(rec.processing_code):
        return False  # authorized no money
    return not (rec.mti == "0220" and rec.kind == "citycard" and rec.original_id is None)  # offline upload


def reverse(engine: Any, msg) -> Gen:
    """The answer to ``msg``, an approval, could not be sent: reverse it and journal 68.

    Returns the code the journal now holds for the request (68), or None when
    there was nothing to reverse (not an approval standing, or reversed by
    the terminal meanwhile)."""
    key = (msg[41], msg[11], msg[7])
    queue = engine.reversals
    while True:
        try:
            rec = yield Op("find", *key)
            if rec is None or not reversible(rec):
                return None
            card = queue.card_for(rec, messages.pan_of(msg))
            body = engine.term.encode(messages.build_response(msg, CODE, rec.rrn))
            changes = yield from queue.start_fields(rec.acquirer, rec.id, card)
            yield Op("update_if", rec.id, states.ANSWERED, state=states.advance(rec.state, "reverse"),
                     response=body, response_code=CODE, **changes)
        except StaleState:
            continue  # moved on meanwhile (a terminal 0400 on another worker): look again
        except Exception as e:
            # The journal refused (its writer died, the disk is full): the approval stays as journaled,
            # and still nothing is sent (an unMACed answer, 96 least of all, would contradict it).  The
            # terminal's retransmission gets the 00 MACed, or its 0400 reverses it, as before this module.
            refused = isinstance(e, JournalError)
            log.error("approval (%s/%s) not delivered, its MAC cannot be made, and its reversal cannot be "
                      "journaled%s: it stands until the terminal retransmits or reverses it", msg[41], msg[11],
                      f" ({e})" if refused else "", exc_info=not refused)
            return None
        log.warning("rrn %s: approval not delivered, its MAC cannot be made; reversed at %s and journaled %s"
                    " (runbook: \"Security module failing\")", rec.rrn, rec.acquirer, CODE, **about(rec))
        queue.queued(rec.id, card, "undelivered")
        return CODE


class Answers:
    """The answers under one key being given in this process: how many, and what happened."""

    __slots__ = ("count", "sent", "reversing")

    def __init__(self) -> None:
        self.count = 0
        self.sent = False  # an approval went out MACed
        self.reversing = False  # an approval that could not be MACed is being reversed


class Answering:
    """:class:`Answers` by key (41, 11, 7), from a MACed request's arrival to its answer."""

    def __init__(self) -> None:
        self._keys: dict[tuple, Answers] = {}

    def enter(self, key: tuple) -> Answers:
        answers = self._keys.get(key)
        if answers is None:
            answers = self._keys[key] = Answers()
        answers.count += 1
        return answers

    def leave(self, key: tuple, answers: Answers) -> None:
        answers.count -= 1
        if answers.count == 0 and self._keys.get(key) is answers:
            del self._keys[key]


def settle(engine: Any, msg, answers: Answers, signed: bytes) -> Gen:
    """(code, bytes to send) for an approval of ``msg`` once its MAC was made (``signed``) or not (b"")."""
    which = f" ({msg[41]}/{msg[11]})"
    if signed:
        if answers.reversing:
            log.warning("approval%s not sent: being reversed, its first answer's MAC could not be made;"
                        " a retransmission gets %s", which, CODE)
            return CODE, b""
        answers.sent = True
        return "00", signed
    if answers.sent:
        log.warning("approval%s not reversed: the terminal got it MACed under the same key meanwhile", which)
        return "00", b""
    answers.reversing = True
    return ((yield from reverse(engine, msg)) or "00"), b""
