"""Requests the switch refuses before routing them, and which of their answers it journals.

Spec sections 3, 5 and 6: every request gets a clear response code, and a
retransmitted request (same 41, 11 and 7) gets its original answer, other
content under that key 94.  The engine (:meth:`Engine._dispatch`) asks here
first:

- A request that breaks a rule of section 3 (a missing field, an impossible
  date, a zero amount, malformed field 55: :func:`messages.check_request`,
  :func:`messages.check_icc`) from a configured terminal is journaled under
  its key with its answer, as the switch's own answers after routing are: a
  retransmission gets that same answer from the journal (same 37), and
  another request under the key gets 94 and reaches no acquirer.
- A request from a terminal the configuration does not know (03, or the
  check's own code) is answered and counted, never journaled: any peer that
  reaches the port can make up terminal IDs, and must not fill the journal.
- A refused request without its key (41, 11 or 7 missing) is answered
  without journaling: nothing could name it again.
- 0800s are never journaled (:mod:`switch.core.network` keeps their 0810s
  in memory); an unknown terminal's are not kept either.
"""
from __future__ import annotations

from typing import Any

from switch.core import messages
from switch.core.messages import Rejection

KEY_FIELDS = (41, 11, 7)  # section 6: the key of a request


def screen(engine: Any, msg: Any, mti: str) -> tuple[str | None, Rejection | None]:
    """The request's merchant (None: no configured terminal of it) and why the
    switch refuses it before routing (None: it does not).

    The request checks come first: a request missing a field is 30 from any
    terminal, as before the terminal is known.
    """
    refusal = None
    try:
        messages.check_request(msg, mti)
        if 55 in msg:
            messages.check_icc(msg[55])  # section 3: malformed EMV data is never forwarded
    except Rejection as r:
        refusal = r
    tid = msg.get(41)
    merchant = engine.terminals.get(tid)
    if merchant is None or (42 in msg and msg[42] != merchant):
        return None, refusal or Rejection("03", f"unknown terminal {tid!r} or merchant")
    return merchant, refusal


def journaled(msg: Any, mti: str, merchant: str | None) -> bool:
    """Whether a refused request is journaled under its key: a configured terminal's,
    with its key, and no 0800."""
    if merchant is None or mti == "0800":
        return False
    for n in KEY_FIELDS:
        if n not in msg:
            return False
    return True
