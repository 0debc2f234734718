"""Terminal security in the request pipeline (spec section 8), without I/O.

The engine asks this module three things, and it answers with generators
that yield :class:`~switch.core.commands.Sec` commands (the driver awaits
the security module; the engine never holds a clear key):

- :meth:`TerminalSecurity.dispatch` / :meth:`~TerminalSecurity.guarded` — a request from a terminal whose
  merchant has a policy other than ``none``: the MAC of field 64/128 is
  checked over the request's bytes *as received* (from the MTI, in the
  listener's own dialect: an ``iso87-ascii`` listener's codec rebuilds the
  message, so the wire bytes are what the terminal MACed) before anything
  else; missing or wrong, A0 without journaling or forwarding.  The answer
  to a MACed request carries a MAC under the same key.  0800/101 (and a
  sign-on 001 of a terminal the module holds no session keys for) answers
  new session keys in field 48 (TA, TP, CA, CP).
- :meth:`TerminalSecurity.pin` — field 52 of a request, re-encrypted per
  acquirer from the terminal's TPK or DUKPT key to that acquirer's ZPK just
  before the call.  A block that does not decrypt to an accepted format, or
  a KSN that cannot be used, answers 55 (never 96); a PIN block from a
  terminal without a PIN key is never forwarded (55).  The block lives in
  the request only while it is at the acquirer.  AES terminals put their
  ISO 9564 format 4 block (16 bytes, which field 52's b8 cannot carry) in
  field 48 tag ``PB`` as 32 hex digits: a project addition, translated the
  same way and never forwarded as a tag.

Session keys are issued *pending* and become current when a request
verifies under them (:mod:`switch.core.session_keys`, which keeps them in
the journal across restarts).  A DUKPT request's KSN counter must be above
the highest seen for its device (kept in the journal): a new request with an
old KSN is a replay and answers A0; a retransmission (same 41, 11, 7) goes
on to the engine, which answers it from the journal.

Network messages (0800) need no MAC: a terminal asking for keys has none to
MAC with.  The keys it gets are under its TMK, with their check values, so
only the terminal that holds the TMK can use them.  An 0800 that does carry
a MAC is verified like any request (A0 if wrong) and answered MACed.

Terminal IDs: an unknown terminal answers 03 on every MTI, 0800 included,
as spec 7 says.  IDs are not secrets under section 8: a terminal is
authenticated by its keys, so an ID alone moves no money at a merchant with
a policy (a request without the right MAC answers A0, whatever its ID).
"""
from __future__ import annotations

import logging
from typing import Any, Generator, NamedTuple

from native.iso8583 import DecodeError, build_tlv48, parse_tlv48

from switch.core import messages
from switch.core import network, session_keys, undelivered
from switch.core.acquirer import Result
from switch.core.commands import Op, Sec
from switch.core.macwire import MAC_LEN, ends_with_mac, mac_tail, wire_mac_length
from switch.security.config import Security
from switch.security.dukpt import KsnError, ksn_device
from switch.security.keys import previous_key_names, session_key_names
from switch.security.module import (DukptKey, ModuleKeyError, ModuleUnavailable, SecurityModuleError, SessionKey,
                                    UnknownKey)
from switch.security.pinblock import UNUSABLE, PinBlockError

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

KEY_EXCHANGE = "101"  # 0800 field 70: new session keys, please (spec 8)
SIGN_ON = "001"
MAC_INVALID = "A0"
PIN_INVALID = "55"
PIN_TAG = "PB"  # field 48: an ISO 9564 format 4 block as 32 hex digits (project addition, AES terminals)
# The MAC's place on the wire is shared with the card host link (switch.core.macwire).
_MAC_LEN = MAC_LEN
_wire_mac_length = wire_mac_length
_mac_tail = mac_tail


class Verified(NamedTuple):
    """The current TAK a session-key request verified under, as of the terminal's ``switchovers``-th switch-over."""

    key: SessionKey
    terminal: str
    switchovers: int

    def now(self, switchovers: dict[str, int], kind: int) -> SessionKey:
        """The TAK (``kind`` 0) or TPK (1) of the set the request verified under, by its name now:
        the previous set's after one switch-over since (spec 8: the answer under the request's key)."""
        since = switchovers.get(self.terminal, 0) - self.switchovers
        if since == 1:
            return SessionKey(previous_key_names(self.terminal)[kind])
        if since:
            log.warning("terminal %s: keys switched over %d times during one request: "
                        "the newest keys serve it", self.terminal, since)
        return SessionKey(session_key_names(self.terminal)[kind])


def _rejected(msg) -> "messages.Rejection | None":
    """Why an 0800 is no request the switch takes (section 3), or None."""
    try:
        messages.check_request(msg, "0800")
    except messages.Rejection as r:
        return r
    return None


def _refused(engine, msg, codec, reason: str, kind: str = "unknown") -> tuple[str, str, bytes]:
    """A0, unjournaled and unMACed, logged with ``reason`` and counted (payswitch_terminal_mac_failures_total)."""
    tid = msg[41]
    what = msg.mti if msg.mti != "0800" else f"0800/{msg.get(70)}"
    log.info("terminal %s: %s %s (%s)", tid, what, MAC_INVALID, reason)
    engine.metrics.terminal_mac_failure(_failure(reason))
    return engine._reply(msg, MAC_INVALID, codec, kind)


def _failure(reason: str) -> str:
    """The label of an A0's ``reason`` (as :meth:`TerminalSecurity._authenticate` and ``_fresh_ksn`` word it)."""
    if reason == "no MAC":
        return "missing"
    if reason == "wrong MAC":
        return "wrong"
    if reason.endswith("(a replay)"):
        return "replay"
    if reason.startswith("KSN"):
        return "ksn"
    if reason.startswith(("both field", "field ")):
        return "malformed"
    return "no_key"  # no keys, no session keys yet, a key the module does not hold


def _unverifiable(engine, msg, codec, e: ModuleUnavailable, kind: str = "unknown") -> tuple[str, str, bytes]:
    """96, unjournaled and unMACed, for a request whose MAC the module is not there to check: our fault,
    not the terminal's (A0), and no bug of ours either (one line, no traceback)."""
    log.error("terminal %s: %s answered 96: the security module cannot check its MAC: %s",
              msg.get(41), msg.mti, e)
    return engine._reply(msg, "96", codec, kind)


class PinRefused(Exception):
    """Field 52 cannot go to the acquirer; ``code`` is the terminal's answer (55, or 96 for our own fault)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _key_label(key) -> str:
    """A PIN key as a log names it: the module's name for it (a DUKPT key: its BDK's), never its value."""
    if isinstance(key, DukptKey):
        return f"DUKPT key of BDK {key.bdk}"
    return f"key {key.name}"


def _mac_in_place(msg, field: int, body: bytes, codec) -> bool:
    """Whether the MAC field is 8 bytes and the last thing of the message as received."""
    return ends_with_mac(codec, field, msg[field], body)


def _ksn(msg) -> str | None:
    if 48 not in msg:
        return None
    try:
        return parse_tlv48(msg[48]).get("KS")
    except DecodeError:
        return None


class TerminalSecurity:
    """The configuration's ``security`` section as the engine uses it."""

    def __init__(self, security: Security, previous: TerminalSecurity | None = None) -> None:
        self.config = security
        # Each terminal's switch-overs to new session keys in this process (session_keys.verify):
        # a request in flight at one is answered under the TAK it verified under, now the previous one.
        self.switchovers: dict[str, int] = {}
        self._held: dict[tuple, Verified] = {}  # (41, 11, 7) -> the keys of a request being dispatched
        if previous is not None:
            # A reload: requests in flight keep the keys they verified under, and a switch-over
            # after it still tells them that theirs are now the previous ones.
            self.switchovers, self._held = previous.switchovers, previous._held

    def dispatch(self, engine, msg, mti: str, codec, body: bytes) -> Gen:
        """The engine's ``_dispatch``, behind the MAC check of the terminal's policy (spec 8).

        A request whose terminal is unknown, or whose merchant has policy
        ``none`` (and is no key exchange), goes straight to ``_dispatch``:
        its own checks answer it.  Not a generator itself: it returns the one
        that answers the request, so that the commands of an unguarded
        request do not pass through one more generator on their way.
        """
        terminals, tid = engine.terminals, msg[41] if 41 in msg else None
        merchant = terminals[tid] if tid in terminals else None  # a dict's own operations, not .get calls
        if merchant is None or (42 in msg and msg[42] != merchant) or not (
            self.config.policy(merchant) != "none" or (mti == "0800" and msg.get(70) == KEY_EXCHANGE)
        ):
            return engine._dispatch(msg, mti, codec)
        return self.guarded(engine, msg, mti, merchant, body, codec)

    # -- MAC and key exchange ------------------------------------------------------

    def guarded(self, engine, msg, mti: str, merchant: str, body: bytes, codec) -> Gen:
        """The request of a terminal under a policy: (kind, code, encoded answer)."""
        tid = msg[41]
        if mti == "0800":
            return (yield from self._network(engine, msg, merchant, body, codec))
        try:
            key, reason = yield from self._authenticate(msg, merchant, body, codec)
        except ModuleUnavailable as e:
            return _unverifiable(engine, msg, codec, e)
        if key is not None and isinstance(key, DukptKey):
            reason = yield from self._fresh_ksn(engine, msg, key)
            if reason:
                key = None
        if key is None:
            return _refused(engine, msg, codec, reason)
        txn_key = (tid, msg.get(11), msg.get(7))
        held = txn_key if isinstance(key, Verified) else None
        if held is not None:
            self._held[held] = key  # for its PIN's key (pin)
        answers = engine.answering.enter(txn_key)  # from before the journal is read: switch.core.undelivered
        try:
            try:
                kind, code, out = yield from engine._dispatch(msg, mti, codec)
            except Exception:  # as Engine.handle does, but the 96 is MACed: the request was authenticated
                engine.metrics.internal_error()
                log.exception("internal error on %s from terminal %s", msg.mti, tid)
                kind, code = "unknown", "96"
                out = codec.encode(messages.build_response(msg, "96", engine.rrns.next()))
            finally:
                if held is not None and self._held.get(held) is key:
                    del self._held[held]
            # The journal keeps the answer without a MAC; a retransmission gets it
            # MACed again, here, under the key its own MAC was checked with.
            out = yield from self._signed_or_nothing(out, key, codec, msg.mti, tid, code)
            if code == "00":  # an approval no one can tell the terminal is reversed by the switch
                code, out = yield from undelivered.settle(engine, msg, answers, out)
            return kind, code, out
        finally:
            engine.answering.leave(txn_key, answers)

    def _signed_or_nothing(self, out: bytes, key, codec, mti: str, tid: str, code: str) -> Gen:
        """``out`` MACed, or b"" (no answer) when the module cannot make the MAC.

        The outcome is journaled already: an unMACed 96 would contradict it (an
        approval the terminal takes for a decline, never reversed).  Without an
        answer the terminal retransmits, and gets the journaled one MACed, or
        reverses (section 6); an approval the switch reverses itself, the
        terminal may do neither (:mod:`switch.core.undelivered`).
        """
        try:
            return (yield from self._sign(out, key, codec))
        except SecurityModuleError as e:
            log.error("terminal %s: %s answered %s but not sent: its MAC cannot be made (%s); %s", tid, mti, code, e,
                      "an approval is reversed" if code == "00" else "the terminal's retransmission gets it")
            return b""

    def _authenticate(self, msg, merchant: str, body: bytes, codec) -> Gen:
        """(the key the request's MAC verifies under, or None; why not)."""
        field = 128 if 128 in msg else 64 if 64 in msg else None
        if field is None:
            return None, "no MAC"
        if field == 128 and 64 in msg:
            # Section 8: the MAC is field 64, or field 128 under a secondary bitmap, never both;
            # a message with both is refused, not read as whichever one a reader happens to pick.
            return None, "both field 64 and field 128"
        tid = msg[41]
        try:
            refs = self.config.key_refs(merchant, tid, _ksn(msg))
        except KsnError as e:
            return None, f"KSN: {e}"
        if refs is None:
            return None, "the terminal has no keys"
        if not _mac_in_place(msg, field, body, codec):
            return None, f"field {field} is not an 8-byte MAC at the end of the message"
        if isinstance(refs[0], SessionKey):
            # Current keys, else pending ones (made current by this use): session_keys.verify.
            key, reason, count = yield from session_keys.verify(
                tid, lambda key: self._verify(msg, field, key, body, codec), self.switchovers)
            return (None if key is None else Verified(key, tid, count)), reason
        try:
            ok = yield from self._verify(msg, field, refs[0], body, codec)
        except KsnError as e:
            return None, f"KSN: {e}"
        except UnknownKey as e:
            return None, str(e)
        return (refs[0], "") if ok else (None, "wrong MAC")

    def _verify(self, msg, field: int, key, body: bytes, codec) -> Gen:
        """Whether the request's MAC is right under ``key`` (UnknownKey, KsnError as the module raises)."""
        n = _wire_mac_length(codec, field)
        return bool((yield Sec("verify_mac", key, bytes(body[:-n]), bytes(msg[field]))))

    def _fresh_ksn(self, engine, msg, key: DukptKey) -> Gen:
        """Why a DUKPT request must be refused as a replay, or "" (X9.24: a device's counter only goes up).

        The counter is raised in the journal in one step (right with several
        processes, and across restarts).  A counter not above the highest
        seen is a retransmission only if the engine has the request (41, 11,
        7) in flight or journaled; then the engine answers it as section 6 says.
        """
        device, counter = ksn_device(key.ksn)
        if (yield Op("advance_ksn", f"{key.bdk}:{device}", counter)):
            return ""
        tid, stan, sent = msg[41], msg.get(11), msg.get(7)
        if stan is not None and sent is not None:
            if (tid, stan, sent) in engine.inflight or engine.network_answers.holds(
                    (tid, stan, sent), engine.clock(), engine.cfg.retransmission_window):
                return ""  # a retransmission of a request in flight, or of an 0800 answered (kept in memory)
            if (yield Op("find", tid, stan, sent)) is not None:
                return ""
        return f"KSN counter {counter} is not above the highest seen for its device (a replay)"

    def _sign(self, out: bytes, key, codec) -> Gen:
        """``out`` (an encoded answer) with field 64, or 128 when it has fields above 64, MACed under ``key``.

        A :class:`Verified` key is the current TAK of when the request verified:
        after a switch-over since, the previous one (spec 8: the answer is MACed
        under the request's key).
        """
        if isinstance(key, Verified):
            key = key.now(self.switchovers, 0)
        msg = codec.decode(out)
        fields: dict = msg.fields()
        fields.pop(64, None)
        fields.pop(128, None)
        field = 128 if any(n > 64 for n in fields) else 64
        fields[field] = bytes(_MAC_LEN)
        fields["mti"] = msg.mti
        wire = codec.encode(fields)
        n = _wire_mac_length(codec, field)
        mac = yield Sec("generate_mac", key, wire[:-n])
        return wire[:-n] + _mac_tail(codec, field, mac)

    def _network(self, engine, msg, merchant: str, body: bytes, codec) -> Gen:
        """0800 of a terminal under a policy, or any 0800/101."""
        tid, code = msg[41], msg.get(70)
        keys = self.config.terminal_keys(merchant, tid)
        tmk = keys.tmk if keys is not None else None
        mac_key = None
        if (64 in msg or 128 in msg) and (keys is not None or self.config.policy(merchant) != "none"):
            # Not required (a terminal asking for keys may have none), but a MAC that is there must be
            # right, under session keys or DUKPT alike (spec 8.1), and a DUKPT counter must go up.
            try:
                mac_key, reason = yield from self._authenticate(msg, merchant, body, codec)
            except ModuleUnavailable as e:
                return _unverifiable(engine, msg, codec, e, "network")
            if mac_key is not None and isinstance(mac_key, DukptKey):
                reason = yield from self._fresh_ksn(engine, msg, mac_key)
                if reason:
                    mac_key = None
            if mac_key is None:
                return _refused(engine, msg, codec, reason, "network")
        if tmk is None:
            if code == KEY_EXCHANGE:
                # No session keys to give: a terminal without keys or a DUKPT one.
                log.info("terminal %s: 0800/101 without a TMK configured: 12", tid)
                kind, code39, out = yield from network.answer(engine, msg, "12", codec)  # kept, as every 0810
            else:
                kind, code39, out = yield from engine._dispatch(msg, "0800", codec)
        elif code == SIGN_ON and (yield from session_keys.has_keys(tid)):
            kind, code39, out = yield from engine._dispatch(msg, "0800", codec)
        elif code not in (SIGN_ON, KEY_EXCHANGE):
            kind, code39, out = yield from engine._dispatch(msg, "0800", codec)
        elif (rejected := _rejected(msg)) is not None:
            # Checked as engine._dispatch checks every 0800 (section 3), and answered as it is:
            # keys are never issued to an 0800 that no retransmission could name (no 11 or 7).
            log.info("rejected %s: %s (%s)", msg.mti, rejected.code, rejected.reason)
            kind, code39, out = yield from network.answer(engine, msg, rejected.code, codec)
        elif (first := (yield from network.earlier(engine, msg))) is False:
            # spec 6: the key of an earlier 0800 with other content, or of a payment
            kind, code39, out = engine._reply(msg, "94", codec, "network")
        elif first is not None:
            # A retransmission (spec 6): the first 0810, with the keys it gave, and no new ones.
            kind, code39, out = "network", first[39], codec.encode(first)
        else:
            # 101, or a sign-on of a terminal without keys (spec 8): new keys, pending until used.
            new = yield from session_keys.issue(tid, tmk)
            log.info("terminal %s: new session keys, pending (TAK check %s, TPK check %s)", tid, new.tak_kcv, new.tpk_kcv)
            resp = messages.build_response(msg, "00", engine.rrns.next(), tlv=new.field48(), build_tlv48=build_tlv48)
            network.keep(engine, msg, resp)
            kind, code39, out = "network", "00", codec.encode(resp)
        if mac_key is not None:
            out = yield from self._signed_or_nothing(out, mac_key, codec, msg.mti, tid, code39)
        return kind, code39, out

    # -- PIN -----------------------------------------------------------------------

    def pin(self, msg, request) -> "PinSource | None":
        """The terminal's PIN block and key for :meth:`PinSource.to`, or None without field 52.

        The request's own ``pin_block`` is cleared: it holds an acquirer's
        block only while that acquirer has the request.
        """
        block = request.pin_block
        tagged = request.tlv.pop(PIN_TAG, None) if request.tlv else None  # never forwarded as a tag
        if block is None and tagged is None:
            return None
        request.pin_block = None
        refused = None
        if tagged is not None:
            if block is not None:
                refused = "a PIN block in both field 52 and field 48 tag PB"
            elif len(tagged) != 32 or not tagged.isascii():
                refused = f"field 48 tag PB is not 32 hex digits ({len(tagged)} characters)"
            else:
                try:
                    block = bytes.fromhex(tagged)
                except ValueError:
                    refused = "field 48 tag PB is not 32 hex digits"
        if request.kind == "citycard":
            # A city card has no PIN, and its centre no zone PIN key: the block is the terminal's
            # mistake (55, section 8), never a configuration fault of ours (96).
            refused = refused or "a PIN block on a city-card payment (a city card has no PIN)"
        source = PinSource(self.config, request.merchant_id or "", request.terminal_id, request.pan,
                           request.tlv.get("KS") if request.tlv else _ksn(msg), block or b"")
        source.refused = refused
        held = self._held.get((request.terminal_id, msg.get(11), msg.get(7)))
        if held is not None:
            source.held, source.switchovers = held, self.switchovers
        return source


class PinSource:
    """One request's PIN block under the terminal's key, until the request ends."""

    __slots__ = ("config", "merchant", "terminal", "pan", "ksn", "_block", "refused", "held", "switchovers")

    def __init__(self, config: Security, merchant: str, terminal: str, pan: str | None, ksn: str | None,
                 block: bytes) -> None:
        self.config = config
        self.merchant = merchant
        self.terminal = terminal
        self.pan = pan
        self.ksn = ksn
        self._block = block
        self.refused: str | None = None  # why the block cannot be used at all (answered 55)
        # The session keys the request verified under (TerminalSecurity.pin): after a switch-over
        # its block is still under the TPK of that set.
        self.held: Verified | None = None
        self.switchovers: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PinSource(terminal={self.terminal!r})"

    def to(self, acquirer: str) -> Gen:
        """The block under ``acquirer``'s ZPK in its format; :class:`PinRefused` otherwise."""
        if self.refused is not None:
            raise PinRefused(PIN_INVALID, self.refused)
        keys = self.config.terminal_keys(self.merchant, self.terminal)
        if keys is None:
            raise PinRefused(PIN_INVALID, "a PIN block from a terminal without a PIN key")
        if not self.pan:
            raise PinRefused(PIN_INVALID, "a PIN block without a card number")
        zone = self.config.acquirer_keys(acquirer)
        if zone is None:
            log.error("acquirer %s has no ZPK (security.acquirers): a PIN cannot be sent to it", acquirer)
            raise PinRefused("96", f"acquirer {acquirer} has no zone PIN key")
        try:
            refs = self.config.key_refs(self.merchant, self.terminal, self.ksn)
            if self.held is not None and isinstance(refs[1], SessionKey):
                refs = (refs[0], self.held.now(self.switchovers, 1))
            return (yield Sec("translate_pin", refs[1], self._block, self.pan, zone.zpk, zone.pin_format,
                              tuple(keys.pin_formats)))
        except PinBlockError as e:
            # Which key and formats, never why: what is wrong inside a decrypted block is an oracle
            # to whoever can send blocks and read logs, and pinblock says only UNUSABLE of it.  What
            # is public (the block's length, a ZPK that cannot carry its pin_format) is said.
            public = "" if str(e) == UNUSABLE else f": {e}"
            raise PinRefused(PIN_INVALID, f"PIN block not usable under {_key_label(refs[1])}, format "
                                          f"{'/'.join(map(str, keys.pin_formats))} accepted{public}") from None
        except KsnError as e:
            raise PinRefused(PIN_INVALID, str(e)) from None
        except UnknownKey as e:
            if isinstance(refs[1], SessionKey) and repr(refs[1].name) in str(e):
                raise PinRefused(PIN_INVALID, "no session keys: the terminal must sign on") from None
            raise PinRefused("96", str(e)) from None
        except ModuleKeyError as e:
            raise PinRefused("96", str(e)) from None
        except ModuleUnavailable as e:
            # The module down or silent: the request never left, so it is answered 96 and
            # journaled as answered (nothing to reverse), as an acquirer's own 96 would be.
            raise PinRefused("96", f"security module unavailable: {e}") from None

    def give(self, request, acquirer: str, rrn: str) -> Gen:
        """Put the block for ``acquirer`` in ``request``; or leave it out and return the Result to answer."""
        try:
            request.pin_block = yield from self.to(acquirer)
        except PinRefused as e:
            (log.warning if e.code == "96" else log.info)(
                "terminal %s rrn %s: PIN not sent to %s: %s (%s)", self.terminal, rrn, acquirer, e.code, e.reason)
            request.pin_block = None
            return Result(response_code=e.code)
        return None

    def forget(self, request) -> None:
        request.pin_block = None
        self._block = b""
