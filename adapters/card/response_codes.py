"""A card acquirer's field 39 as a terminal may be told it (spec section 5).

A bank host answers in the full ISO 8583:1987 range of response codes; a
terminal is promised only the codes of section 5.  Every answer to an 0100,
0200 or 0220 goes through :func:`terminal_answer`, sans-I/O like the rest of
the host link:

- a decline becomes the nearest section-5 decline (:data:`TABLE`);
- an approval (00, 08, 11, 16, 85) is 00 when the amount the host approved
  (its field 4, when it sends one) is the amount requested.  Anything else the
  terminal cannot be told, because the money stays authorized at the host:
  a partial approval (10) of less than the amount requested is declined to
  the terminal (51: the card did not cover the amount), and an approval of
  another amount, or in another currency (field 49) than the one sent, is
  answered 96; either way it is reversed at the acquirer, for the amount and
  in the currency the acquirer approved, the way the switch reverses an
  answer it could not trust;
- a code outside the table, or one that is not two ASCII letters or digits,
  says nothing about the money: 96 and reversed, as for no answer at all (a
  reversal of a decline moves nothing).

An 0430's field 39 means something else (:func:`reversal_answer`): 00 the
reversal is done, 25 the host has no such original, a transient code (91,
96, 68...) try again later (and 94 to a first try, 0420: it is repeated as
an 0421, :func:`adapters.card.answers.reversal_outcome`), and any other code of the table a refusal that
repeating the reversal cannot change (12, 13, 14, 30, 64...): the switch
stops and flags it for an operator (state ``reversal_refused``).

A balance inquiry (31xxxx) authorizes no money: its approvals are 00
whatever field 4 holds.  The host's own code is kept for reconciliation
(``acquirer_ref``, see :func:`adapters.card.messages.acquirer_ref`), logged,
and counted (``payswitch_hostlink_host_codes_total``).
"""
from __future__ import annotations

from typing import NamedTuple

# Host code -> (section-5 code, meaning).  Declines keep their code when
# section 5 has it; the others take the nearest one a terminal can act on:
# 05 when the cardholder should use another card or ask the bank, 62 when the
# card is not to be used again (lost, stolen, pick up: a terminal cannot keep
# the card), 14 when the card number is not known, 91 when the host may
# answer later, 96 when something between the switch and the issuer broke.
TABLE: dict[str, tuple[str, str]] = {
    # approvals: money authorized (see APPROVALS, PARTIAL)
    "00": ("00", "approved"),
    "08": ("00", "honour with identification"),
    "10": ("00", "approved for a partial amount"),
    "11": ("00", "approved (VIP)"),
    "16": ("00", "approved, update track 3"),
    "85": ("00", "no reason to decline"),
    # referrals: no voice authorization at a terminal
    "01": ("05", "refer to card issuer"),
    "02": ("05", "refer to card issuer, special condition"),
    # declines
    "03": ("03", "invalid merchant"),
    "04": ("62", "pick up card"),
    "05": ("05", "do not honour"),
    "06": ("05", "error"),
    "07": ("62", "pick up card, special condition"),
    "09": ("96", "request in progress"),
    "12": ("12", "invalid transaction"),
    "13": ("13", "invalid amount"),
    "14": ("14", "invalid card number"),
    "15": ("14", "no such issuer"),
    "17": ("05", "customer cancellation"),
    "19": ("96", "re-enter transaction"),
    "20": ("96", "invalid response"),
    "21": ("05", "no action taken"),
    "22": ("96", "suspected malfunction"),
    "25": ("25", "unable to locate record"),
    "30": ("96", "format error at the host"),
    "31": ("14", "bank not supported by switch"),
    "33": ("62", "expired card, pick up"),
    "34": ("62", "suspected fraud, pick up"),
    "35": ("62", "card acceptor contact acquirer, pick up"),
    "36": ("62", "restricted card, pick up"),
    "37": ("62", "card acceptor call acquirer security, pick up"),
    "38": ("62", "allowable PIN tries exceeded, pick up"),
    "39": ("05", "no credit account"),
    "40": ("12", "requested function not supported"),
    "41": ("62", "lost card, pick up"),
    "42": ("05", "no universal account"),
    "43": ("62", "stolen card, pick up"),
    "44": ("05", "no investment account"),
    "51": ("51", "not sufficient funds"),
    "52": ("05", "no checking account"),
    "53": ("05", "no savings account"),
    "54": ("05", "expired card"),
    "55": ("55", "incorrect PIN"),
    "56": ("14", "no card record"),
    "57": ("05", "transaction not permitted to cardholder"),
    "58": ("58", "transaction not permitted to terminal"),
    "59": ("05", "suspected fraud"),
    "60": ("05", "card acceptor contact acquirer"),
    "61": ("05", "exceeds withdrawal amount limit"),
    "62": ("62", "restricted card"),
    "63": ("05", "security violation"),
    "64": ("13", "original amount incorrect"),
    "65": ("05", "exceeds withdrawal frequency limit"),
    "66": ("05", "card acceptor call acquirer security"),
    "67": ("62", "hard capture, pick up"),
    "68": ("68", "response received too late"),
    "75": ("55", "allowable number of PIN tries exceeded"),
    "90": ("91", "cut-off in process"),
    "91": ("91", "issuer or switch inoperative"),
    "92": ("91", "issuer cannot be found for routing"),
    "93": ("05", "transaction cannot be completed, violation of law"),
    "94": ("96", "duplicate transmission at the host"),
    "95": ("96", "reconcile error at the host"),
    "96": ("96", "system malfunction"),
    "A0": ("96", "MAC verification failed on the host link"),
}

APPROVALS = frozenset(code for code, (to, _) in TABLE.items() if to == "00")
PARTIAL = "10"  # approved for less than requested (or exactly the amount, then a full approval)
# Codes that leave the money's fate unknown at the host, reversed like no answer.
UNCERTAIN = frozenset({"09"})

# An 0430 refusing the reversal's amount (field 4 is not what the original holds).
AMOUNT_REFUSALS = frozenset({"13", "64"})

# An 0430 with one of these may be answered 00 to a later repeat: the host (or
# something before it) could not deal with the reversal now.
TRANSIENT_FOR_REVERSAL = frozenset({"09", "19", "68", "90", "91", "92", "96", "A0"})

BALANCE = "31"  # processing code of a balance inquiry: authorizes no money


class Answer(NamedTuple):
    """What the terminal is told, and whether the acquirer must be sent a reversal."""

    code: str  # section 5
    reverse: bool
    why: str  # for the log: the host's code and what it means


def well_formed(code: object) -> bool:
    """Two ASCII letters or digits: what field 39 (an2) can mean anything as."""
    return isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalnum()


def terminal_answer(host_code: object, *, requested: str | None, approved: str | None,
                    processing_code: str | None, currency: str | None = None,
                    host_currency: str | None = None) -> Answer:
    """The section-5 code for a host's answer to an 0100/0200/0220.

    ``requested``: field 4 as sent (None when the request had none);
    ``approved``: field 4 of the answer (None when the host sent none: a
    full approval is then of the amount requested).  ``currency`` /
    ``host_currency``: field 49 as sent and as answered (None: the answer
    has none, and approves in the currency sent).  An approval in another
    currency holds money the terminal never asked for: 96, reversed.
    """
    if not well_formed(host_code):
        shown = repr(host_code) if not isinstance(host_code, str) or len(host_code) <= 2 else f"of {len(host_code)} characters"
        return Answer("96", True, f"response code {shown} is not two letters or digits")
    entry = TABLE.get(host_code)
    if entry is None:
        return Answer("96", True, f"unknown response code {host_code}")
    code, meaning = entry
    why = f"{host_code} ({meaning})"
    if host_code in UNCERTAIN:
        return Answer(code, True, why)
    if code != "00" or (processing_code or "")[:2] == BALANCE:
        return Answer(code, False, why)
    if host_currency is not None and host_currency != currency:
        return Answer("96", True, f"{why} in currency {host_currency!r}, {currency} requested")
    if approved is None and host_code != PARTIAL:
        return Answer("00", False, why)
    if approved is None or not approved.isdigit():
        return Answer("51" if host_code == PARTIAL else "96", True, f"{why} without a readable approved amount")
    wanted = int(requested) if requested and requested.isdigit() else None
    if wanted is None or int(approved) == wanted:
        return Answer("00", False, why)
    if int(approved) < wanted and host_code == PARTIAL:
        return Answer("51", True, f"{why}: {int(approved)} of {wanted} approved")
    if int(approved) < wanted:  # a full approval of less: the host and the switch disagree on the sale
        return Answer("96", True, f"{why}: {int(approved)} approved, {wanted} requested")
    return Answer("96", True, f"{why}: {int(approved)} approved, {wanted} requested")


def reversal_answer(host_code: object) -> tuple[str, str]:
    """What an 0430's field 39 means: ("reversed" | "not_found" | "retry" | "refused", why).

    00: done.  25: no such original (the switch repeats it for a while: the
    original may be late at the host).  A transient code, none, or one that
    is not in the table (it says nothing that can be acted on): repeat later.
    Any other code of the table (12 invalid transaction, 13/64 wrong amount,
    14 no such card, 30 format error...) is the host's considered answer to
    this very message, and every repeat carries the same content: refused.
    """
    if host_code == "00":
        return "reversed", "00 (approved)"
    if not well_formed(host_code) or host_code not in TABLE:
        return "retry", f"response code {host_code!r} not understood"
    why = f"{host_code} ({TABLE[host_code][1]})"
    if host_code == "25":
        return "not_found", why
    if host_code in TRANSIENT_FOR_REVERSAL:
        return "retry", why
    return "refused", why


def amount_held(host_code: object, *, requested: str | None, approved: str | None,
                currency: str | None = None, host_currency: str | None = None) -> tuple[int, str | None] | None:
    """What an approval of another amount or in another currency than requested
    holds at the host: (its field 4 in minor units, else the amount requested;
    its field 49, None when it is the one sent), else None.  The amount and
    currency its reversal must carry, since a strict host refuses a reversal
    of any other."""
    entry = TABLE.get(host_code) if well_formed(host_code) else None
    if entry is None or entry[0] != "00" or host_code in UNCERTAIN:
        return None
    other_currency = host_currency if host_currency is not None and host_currency != currency else None
    if not approved or not approved.isdigit():
        if other_currency is None or not requested or not requested.isdigit():
            return None
        approved = requested
    if other_currency is None and requested and requested.isdigit() and int(approved) == int(requested):
        return None
    return int(approved), other_currency
