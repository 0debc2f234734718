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
  without journaling: nothing could name it again.  Nor is a request MTI
  that section 3 does not know (0120, 0300, 1200 ...: 12): it is no
  transaction the journal holds (docs/terminal-interface.md, section 3).
- 0800s are never journaled (:mod:`switch.core.network` keeps their 0810s
  in memory); an unknown terminal's are not kept either.
- An undecodable request (30) whose MTI, 7, 11 and 41 can still be read in
  front of the first bad field (:func:`readable`) is journaled under that
  key like the refusals above, its content being the bytes as received (a
  keyed digest, :func:`raw_digest`): its retransmission gets the same
  answer, a request under the key with other bytes 94.  Only for a
  configured terminal whose merchant has security policy ``none``: under a
  MAC policy the message cannot be authenticated, and an unauthenticated
  message must not take the key of the terminal's next request (it is
  answered 30 without journaling, as is any other undecodable message:
  :func:`format_error`).
"""
from __future__ import annotations

from typing import Any

from native.iso8583 import DecodeError

from native.fields import values as _values

from switch.core import messages
from switch.core.messages import Rejection, check_icc, check_request
from switch.keyed_hash import keyed

KEY_FIELDS = (41, 11, 7)  # section 6: the key of a request
_TERMINAL_FIELDS = (41, 42)  # the terminal and its merchant, as screen reads them


def screen(engine: Any, msg: Any, mti: str) -> tuple[str | None, Rejection | None]:
    """The request's merchant (None: no configured terminal of it) and why the
    switch refuses it before routing (None: it does not).

    The request checks come first: a request missing a field is 30 from any
    terminal, as before the terminal is known.
    """
    refusal = None
    try:
        check_request(msg, mti)
        if 55 in msg:
            check_icc(msg[55])  # section 3: malformed EMV data is never forwarded
    except Rejection as r:
        refusal = r
    tid, mid = _values(msg, _TERMINAL_FIELDS)  # read at once (native/fields.pyx)
    merchant = engine.terminals.get(tid)
    if merchant is None or (42 in msg and mid != merchant):
        return None, refusal or Rejection("03", f"unknown terminal {tid!r} or merchant")
    return merchant, refusal


def journaled(msg: Any, mti: str, merchant: str | None) -> bool:
    """Whether a refused request is journaled under its key: a configured terminal's,
    with its key, of an MTI of section 3 but 0800."""
    if merchant is None or mti == "0800" or mti not in messages.MANDATORY:
        return False
    for n in KEY_FIELDS:
        if n not in msg:
            return False
    return True


def readable(engine: Any, body: bytes, codec: Any) -> Any:
    """The readable front of an undecodable request (``codec.salvage``) when it is
    journaled under its key (module docstring); otherwise None."""
    try:
        msg = codec.salvage(body)
    except DecodeError:
        return None
    if not messages.is_request(msg.mti):
        return None
    # A damaged bitmap shifts every field after it: only a configured terminal
    # ID shows that 41, and 7 and 11 before it, were read where they belong.
    merchant = engine.terminals.get(msg.get(41))
    if not journaled(msg, messages.base_mti(msg.mti), merchant) or (42 in msg and msg[42] != merchant):
        return None
    if engine.security.config.policy(merchant) != "none":
        return None
    return msg


def raw_digest(engine: Any, mti: str, body: bytes) -> str:
    """The content digest of an undecodable request: its bytes as received, a repeat's
    MTI read as its original's (the MTI is the first four bytes in every terminal
    dialect).  Never equal to a decoded request's (:func:`messages.content_digest`)."""
    return keyed(engine.digest_key).hexdigest(b"undecodable|" + mti.encode() + body[4:], 32)


def format_error(engine: Any, body: bytes, codec: Any) -> bytes:
    """Section 5 code 30 for a message we could not decode and do not journal, echoing
    what we can (MTI, 11, 41 of a configured terminal: a host multiplexing lanes
    matches the answer by them); nothing for a response MTI."""
    echo = messages.salvage_echo(body, codec, engine.terminals)
    return b"" if echo is None else codec.encode({**echo, 37: engine.rrns.next(), 39: "30"})
