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
  the request only while it is at the acquirer.

Network messages (0800) need no MAC: a terminal asking for keys has none to
MAC with.  The keys it gets are under its TMK, with their check values, so
only the terminal that holds the TMK can use them.

Terminal IDs: an unknown terminal answers 03 on every MTI, 0800 included,
as spec 7 says.  IDs are not secrets under section 8: a terminal is
authenticated by its keys, so an ID alone moves no money at a merchant with
a policy (a request without the right MAC answers A0, whatever its ID).
"""
from __future__ import annotations

import logging
from typing import Any, Generator

from native.iso8583 import DecodeError, build_tlv48, parse_tlv48

from switch.core import messages as m
from switch.core.acquirer import Result
from switch.core.commands import Sec
from switch.core.macwire import MAC_LEN, mac_tail, wire_mac_length
from switch.security.config import Security
from switch.security.dukpt import KsnError
from switch.security.keys import session_key_names
from switch.security.module import ModuleKeyError, SessionKey, UnknownKey
from switch.security.pinblock import PinBlockError

log = logging.getLogger("payswitch")

Gen = Generator[Any, Any, Any]

KEY_EXCHANGE = "101"  # 0800 field 70: new session keys, please (spec 8)
SIGN_ON = "001"
MAC_INVALID = "A0"
PIN_INVALID = "55"
# The MAC's place on the wire is shared with the card host link (switch.core.macwire).
_MAC_LEN = MAC_LEN
_wire_mac_length = wire_mac_length
_mac_tail = mac_tail


class PinRefused(Exception):
    """Field 52 cannot go to the acquirer; ``code`` is the terminal's answer (55, or 96 for our own fault)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _ksn(msg) -> str | None:
    if 48 not in msg:
        return None
    try:
        return parse_tlv48(msg[48]).get("KS")
    except DecodeError:
        return None


class TerminalSecurity:
    """The configuration's ``security`` section as the engine uses it."""

    def __init__(self, security: Security) -> None:
        self.config = security

    def dispatch(self, engine, msg, mti: str, codec, body: bytes) -> Gen:
        """The engine's ``_dispatch``, behind the MAC check of the terminal's policy (spec 8).

        A request whose terminal is unknown, or whose merchant has policy
        ``none`` (and is no key exchange), goes straight to ``_dispatch``:
        its own checks answer it.
        """
        merchant = engine.terminals.get(msg.get(41))
        if merchant is None or (42 in msg and msg[42] != merchant) or not (
            self.config.policy(merchant) != "none" or (mti == "0800" and msg.get(70) == KEY_EXCHANGE)
        ):
            return (yield from engine._dispatch(msg, mti, codec))
        return (yield from self.guarded(engine, msg, mti, merchant, body, codec))

    # -- MAC and key exchange ------------------------------------------------------

    def guarded(self, engine, msg, mti: str, merchant: str, body: bytes, codec) -> Gen:
        """The request of a terminal under a policy: (kind, code, encoded answer)."""
        tid = msg[41]
        if mti == "0800":
            return (yield from self._network(engine, msg, merchant, codec))
        field = 128 if 128 in msg else 64 if 64 in msg else None
        key = None
        if field is not None:
            key, reason = self._mac_key(merchant, tid, msg)
            if key is not None:
                ok, reason = yield from self._verify(msg, field, key, body, codec)
                if not ok:
                    key = None
        else:
            reason = "no MAC"
        if key is None:
            log.info("terminal %s: %s %s (%s)", tid, msg.mti, MAC_INVALID, reason)
            return engine._reply(msg, MAC_INVALID, codec)
        try:
            kind, code, out = yield from engine._dispatch(msg, mti, codec)
        except Exception:  # as Engine.handle does, but the 96 is MACed: the request was authenticated
            engine.metrics.internal_error()
            log.exception("internal error on %s from terminal %s", msg.mti, tid)
            kind, code = "unknown", "96"
            out = codec.encode(m.build_response(msg, "96", engine.rrns.next()))
        # The journal keeps the answer without a MAC; a retransmission gets it
        # MACed again, here, under the key its own MAC was checked with.
        out = yield from self._sign(out, key, codec)
        return kind, code, out

    def _mac_key(self, merchant: str, tid: str, msg):
        try:
            refs = self.config.key_refs(merchant, tid, _ksn(msg))
        except KsnError as e:
            return None, f"KSN: {e}"
        if refs is None:
            return None, "the terminal has no keys"
        return refs[0], ""

    def _verify(self, msg, field: int, key, body: bytes, codec) -> Gen:
        mac = msg[field]
        n = _wire_mac_length(codec, field)
        if len(mac) != _MAC_LEN or len(body) <= n or body[-n:] != _mac_tail(codec, field, mac):
            return False, f"field {field} is not an 8-byte MAC at the end of the message"
        try:
            ok = yield Sec("verify_mac", key, bytes(body[:-n]), bytes(mac))
        except UnknownKey:
            return False, "no session keys: the terminal must sign on (0800/101)"
        except KsnError as e:
            return False, f"KSN: {e}"
        return bool(ok), "" if ok else "wrong MAC"

    def _sign(self, out: bytes, key, codec) -> Gen:
        """``out`` (an encoded answer) with field 64, or 128 when it has fields above 64, MACed under ``key``."""
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

    def _network(self, engine, msg, merchant: str, codec) -> Gen:
        """0800 of a terminal under a policy, or any 0800/101."""
        tid, code = msg[41], msg.get(70)
        keys = self.config.terminal_keys(merchant, tid)
        tmk = keys.tmk if keys is not None else None
        if tmk is None:
            if code == KEY_EXCHANGE:
                # No session keys to give: a terminal without keys or a DUKPT one.
                log.info("terminal %s: 0800/101 without a TMK configured: 12", tid)
                return engine._reply(msg, "12", codec, "network")
            return (yield from engine._dispatch(msg, "0800", codec))
        tak, tpk = session_key_names(tid)
        if code == SIGN_ON:
            try:
                yield Sec("key_info", tak)
                return (yield from engine._dispatch(msg, "0800", codec))
            except UnknownKey:
                pass  # spec 8: a terminal that needs keys and has none gets them at sign-on
        elif code != KEY_EXCHANGE:
            return (yield from engine._dispatch(msg, "0800", codec))
        new = yield Sec("generate_session_keys", tmk, tak, tpk)
        log.info("terminal %s: new session keys (TAK check %s, TPK check %s)", tid, new.tak_kcv, new.tpk_kcv)
        resp = m.build_response(msg, "00", engine.rrns.next(), tlv=new.field48(), build_tlv48=build_tlv48)
        return "network", "00", codec.encode(resp)

    # -- PIN -----------------------------------------------------------------------

    def pin(self, msg, request) -> "PinSource | None":
        """The terminal's PIN block and key for :meth:`PinSource.to`, or None without field 52.

        The request's own ``pin_block`` is cleared: it holds an acquirer's
        block only while that acquirer has the request.
        """
        block = request.pin_block
        if block is None:
            return None
        request.pin_block = None
        return PinSource(self.config, request.merchant_id or "", request.terminal_id, request.pan,
                         request.tlv.get("KS") if request.tlv else _ksn(msg), block)


class PinSource:
    """One request's PIN block under the terminal's key, until the request ends."""

    __slots__ = ("config", "merchant", "terminal", "pan", "ksn", "_block")

    def __init__(self, config: Security, merchant: str, terminal: str, pan: str | None, ksn: str | None,
                 block: bytes) -> None:
        self.config = config
        self.merchant = merchant
        self.terminal = terminal
        self.pan = pan
        self.ksn = ksn
        self._block = block

    def __repr__(self) -> str:
        return f"PinSource(terminal={self.terminal!r})"

    def to(self, acquirer: str) -> Gen:
        """The block under ``acquirer``'s ZPK in its format; :class:`PinRefused` otherwise."""
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
            return (yield Sec("translate_pin", refs[1], self._block, self.pan, zone.zpk, zone.pin_format,
                              tuple(keys.pin_formats)))
        except (PinBlockError, KsnError) as e:
            raise PinRefused(PIN_INVALID, str(e)) from None
        except UnknownKey as e:
            if isinstance(refs[1], SessionKey) and repr(refs[1].name) in str(e):
                raise PinRefused(PIN_INVALID, "no session keys: the terminal must sign on") from None
            raise PinRefused("96", str(e)) from None
        except ModuleKeyError as e:
            raise PinRefused("96", str(e)) from None

    def give(self, request, acquirer: str, rrn: str) -> Gen:
        """Put the block for ``acquirer`` in ``request``; or leave it out and return the Result to answer."""
        try:
            request.pin_block = yield from self.to(acquirer)
        except PinRefused as e:
            log.info("rrn %s: PIN not sent to %s: %s (%s)", rrn, acquirer, e.code, e.reason)
            request.pin_block = None
            return Result(response_code=e.code)
        return None

    def forget(self, request) -> None:
        request.pin_block = None
        self._block = b""
