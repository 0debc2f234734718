"""The simulated acquirer's decisions and memory, without I/O.

Sandbox rules (terminal-interface spec, section 7): 0100/0200 are answered by
the last two digits of the amount (field 4): 05, 13, 51, 55, 96 give that
response code, 68 is never answered, anything else is approved (00) with a
6-character authorization code.  With ``bank_codes``, amounts ending in one
of :data:`BANK_CODES` answer that ISO 8583 code (08 and 11 approve, 10
approves half the amount and answers it in field 4).

Strict (the default), as a bank host is:

- reversals (0400/0401/0420/0421) and completions (0220/0221) name their
  original by field 90 only (original MTI, STAN, field 7, acquirer id) among
  the authorizations seen; an unknown original gets 25;
- a reversal undoes its original once: a repeat (0421, or another 0420 for the
  same original) answers 00 and moves no money;
- a reversal's field 4 is the amount the original holds at the host: what it
  approved (half the amount requested, for a partial approval), or the amount
  of a decline or of an authorization never answered.  Another amount gets 64
  (original amount incorrect) and moves no money: a bank host will not guess
  which amount is meant;
- a reversal of an authorization whose answer (with its authorization code,
  field 38) reached the switch must carry that code in field 38: without it,
  or with another, it gets 12 (invalid transaction) and moves no money, as a
  host that matches reversals by 11/7/37/38 answers.  An answer the switch
  may not have got asks for no field 38: the simulator calls
  :meth:`Sandbox.delivered` once an answer was written in time (not dropped,
  late, garbled or badly MACed; uvloop's ``--fast`` never does), and an
  authorization read back from the ledger after a restart asks for none;
- a completion completes an approved pre-authorization (0100) at most once
  (a second one: 94, the same one repeated: its first answer again), never
  above the pre-authorized amount (13), and only for the same card (12);
- a reversal of a completion gives back what the completion took and reopens
  its pre-authorization, as a bank host does: a new completion may follow
  (the switch reverses a completion whose answer came late, and forwards the
  terminal's next one).

Lenient (``strict=False``, the old behaviour): 00 to every reversal and
completion, and a reversal whose field 90 names nothing is matched by field 37.

PINs (spec 7, v1.1): a request with field 52 carries a format 0 or 3 PIN
block under the acquirer's zone PIN key (the sandbox's public ZPK of its
name, ``switch.security.sandbox.ZPKS``); ``1234`` is right for every card,
any other PIN -- or a block that does not decrypt -- answers 55.  Requests
without 52 are answered as above.  The ledger says ``"pin": "ok"`` /
``"wrong"`` / ``"invalid"`` (never the block or the PIN).

Host-link MACs (``mac``: a :class:`HostMacCheck`, the simulator's ``--mac``):
every message from the switch must carry the MAC of the acquirer's zone MAC
key (the sandbox's public ZAK of its name, ``switch.security.sandbox.ZAKS``);
one whose MAC is missing or wrong is answered A0 and decided no further (no
money moves; the ledger says ``"event": "mac_failure"``), and the events of
the others say ``"mac": "ok"``.  Every answer carries the acquirer's MAC.

Money is kept per card (``card_key``: masked PAN and a keyed hash, never the
PAN, :mod:`adapters.card.card_names`):
every ledger event carries ``card`` and ``delta`` (approved amount, or minus
what a reversal undid), so ``sum(delta)`` per card over the ledger file is
:meth:`Sandbox.balance` -- "authorized minus reversed" at the acquirer.  A
completion's delta is its amount minus the pre-authorization's hold.
"""
from __future__ import annotations

import random
import string
from collections import OrderedDict
from typing import Any, Iterable

from adapters.card.card_names import card_key, icc_digest  # card_key re-exported: the simulator and tests use it
from adapters.card.sim_mac import HostMacCheck  # noqa: F401  (re-exported: the simulator and tests use it)
from switch.core.messages import mask_pan, response_mti

# Last two digits of the amount -> response code (spec section 7).
DECLINES = {"05": "05", "13": "13", "51": "51", "55": "55", "96": "96"}
NEVER_ANSWERS = "68"
# With bank_codes (the simulator's --bank-codes), ISO 8583 codes a bank host
# answers that section 5 has not got, by the same rule: the switch must
# answer the terminal in section-5 codes (adapters.card.response_codes).
# 08 and 11 approve; 10 approves half the amount (field 4 of the answer).
BANK_CODES = frozenset({"01", "04", "08", "10", "11", "15", "19", "41", "43", "54", "57", "61", "65", "75"})
BANK_APPROVALS = frozenset({"08", "10", "11"})
PARTIAL = "10"

REFUND = "20"  # processing code of a refund: the card is credited

# Response codes of the strict host.
RC_NOT_FOUND = "25"  # unable to locate the original
RC_INVALID = "12"  # the original cannot be completed (declined, reversed, another card)
RC_AMOUNT = "13"  # completion above the pre-authorized amount
RC_DUPLICATE = "94"  # the pre-authorization is completed already
RC_WRONG_AMOUNT = "64"  # a reversal's field 4 is not the amount its original holds
# A reversal answered one of these moved nothing and is not remembered (64: its
# amount, 12: its field 38 is not the original's authorization code).
REVERSAL_REFUSALS = (RC_WRONG_AMOUNT, RC_INVALID)

# Fields an answer echoes from its request.
ECHOED = (3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49)
NETWORK_ECHOED = (7, 11, 70)

AUTH_ALPHABET = string.ascii_uppercase + string.digits

REVERSAL_MTIS = ("0400", "0401", "0420", "0421")
COMPLETION_MTIS = ("0220", "0221")


def sandbox_response_code(amount: str | None, bank_codes: bool = False) -> str | None:
    """The sandbox's answer to an authorization: a response code, or None
    when the acquirer never answers (amount ending in 68)."""
    if not amount:
        return "00"
    last2 = amount[-2:]
    if last2 == NEVER_ANSWERS:
        return None
    if bank_codes and last2 in BANK_CODES:
        return last2
    return DECLINES.get(last2, "00")


def approved_amount(rc: str | None, amount: int) -> int:
    """What an answer ``rc`` authorizes of ``amount``: all of it, half (10), or nothing."""
    if rc == "00" or rc in BANK_APPROVALS:
        return amount // 2 if rc == PARTIAL else amount
    return 0


def parse_original_data(f90: str) -> dict:
    """Field 90: original MTI (4), STAN (6), field 7 (10), acquirer id (11), zeros (11)."""
    return {
        "mti": f90[0:4],
        "stan": f90[4:10],
        "f7": f90[10:20],
        "acquirer_id": f90[20:31],
    }


def card_of(msg: Any) -> str | None:
    """The card of a received message: field 2, else the PAN in track 2."""
    pan = msg.get(2)
    if not pan:
        track2 = msg.get(35)
        if track2:
            for sep in ("=", "D", "d"):
                if sep in track2:
                    pan = track2.split(sep, 1)[0]
                    break
    return card_key(pan)


def ledger_balances(events: Iterable[dict]) -> dict[str | None, int]:
    """Per card, the sum of ``delta`` over ledger events (what the acquirer holds)."""
    out: dict[str | None, int] = {}
    for e in events:
        delta = e.get("delta")
        if delta:
            out[e.get("card")] = out.get(e.get("card"), 0) + delta
    return out


RC_MAC = "A0"  # the switch's MAC is missing or wrong: decided no further


class Held:
    """What the acquirer remembers of an authorization or completion."""

    __slots__ = ("mti", "amount", "card", "rrn", "response_code", "open", "completed_by", "reversed", "completes",
                 "wanted_38", "issued")

    def __init__(self, mti: str, amount: int, card: str | None, rrn: str, response_code: str | None,
                 open_: int, auth_code: str | None = None) -> None:
        self.mti = mti
        self.amount = amount
        self.card = card
        self.rrn = rrn
        self.response_code = response_code
        self.open = open_  # money still held for it (approved amount until reversed/completed)
        self.completed_by: tuple | None = None
        self.reversed = False
        self.completes: tuple | None = None  # a completion: the key of the pre-authorization it completed
        self.issued = auth_code  # the field 38 of its answer
        # The field 38 the switch was given (None: none, or its answer may not have reached
        # the switch): a strict host wants it back in the reversal.  Set by Sandbox.delivered.
        self.wanted_38: str | None = None


class Sandbox:
    """The acquirer's decisions and memory, without I/O.

    :meth:`handle` takes a received message (``.mti``, ``.get(n)``) and returns
    ``(answer, ledger_events)``: the answer as a dict for the codec (None: no
    answer) and the JSON-able events to append to the ledger.
    """

    def __init__(self, name: str = "bank-a", seed: int | None = None, memory: int = 200_000,
                 *, strict: bool = True, zpk: bytes | None = None, bank_codes: bool = False) -> None:
        self.name = name
        self.strict = strict
        self.bank_codes = bank_codes
        if zpk is None:
            from switch.security.sandbox import ZPKS

            zpk = bytes.fromhex(ZPKS[name]) if name in ZPKS else None
        self._zpk = zpk
        self._rng = random.Random(seed)
        self._rrn_seq = 0
        self._stan_seq = 0
        self._memory = memory
        # Authorizations and completions by (MTI, STAN, field 7, acquirer id as in field 90).
        self._held: OrderedDict[tuple, Held] = OrderedDict()
        self._by_rrn: OrderedDict[str, Held] = OrderedDict()  # lenient fallback only
        # Reversals seen, by how they name their original: a repeat is flagged.
        self._reversals: OrderedDict[str, str] = OrderedDict()
        # Completions seen, by their own key: a repeat gets the first answer.
        self._completions: OrderedDict[tuple, dict] = OrderedDict()
        self._balances: dict[str | None, int] = {}

    # -- memory -----------------------------------------------------------

    def _remember(self, table: OrderedDict, key: Any, value: Any) -> None:
        table[key] = value
        if len(table) > self._memory:
            table.popitem(last=False)

    def _move(self, card: str | None, delta: int) -> int:
        if delta:
            self._balances[card] = self._balances.get(card, 0) + delta
        return delta

    def balance(self, pan: str | None = None, *, card: str | None = None) -> int:
        """Authorized minus reversed, per card (by PAN or by its ledger ``card`` key)."""
        return self._balances.get(card if card is not None else card_key(pan), 0)

    def balances(self) -> dict[str | None, int]:
        return {k: v for k, v in self._balances.items() if v}

    def replay(self, events: Iterable[dict]) -> int:
        """Take back what an earlier run decided, from its ledger events.

        A bank's authorizations outlive a restart of its host: a reversal or
        completion naming one approved before the restart finds it, a repeat
        is still a repeat, and the balances go on.  Events written before
        the ledger carried ``acquirer_id`` / ``f90`` only count in the
        balances.  Returns the number of events taken.
        """
        n = 0
        for e in events:
            n += 1
            self._move(e.get("card"), e.get("delta") or 0)
            kind = e.get("event")
            if kind == "authorization" and "acquirer_id" in e:
                # Whether its answer reached the switch is not in the ledger: no field 38 asked for.
                held = Held(e["mti"], e.get("approved", e["amount"]), e["card"], e["rrn"], e["response_code"],
                            e["delta"])
                self._remember(self._held, (e["mti"], e["stan"], e["f7"], e["acquirer_id"]), held)
                if not self.strict:
                    self._remember(self._by_rrn, e["rrn"], held)
            elif kind == "completion" and "acquirer_id" in e and not e["repeat"]:
                own = ("0220", e["stan"], e["f7"], e["acquirer_id"])
                self._remember(self._completions, own, e)
                if e["response_code"] == "00":
                    pre = self._held.get(self._key(e["f90"]))
                    if pre is not None and pre.completed_by is None and not pre.reversed:
                        pre.open, pre.completed_by = 0, own
                    self._remember(self._held, own, self._completion_held(e["amount"], e["card"], e["rrn"], e["f90"]))
            elif kind == "reversal" and "f90" in e and e.get("response_code") not in REVERSAL_REFUSALS:
                f90 = e["f90"]
                found = self._held.get(self._key(f90))
                if found is None and not self.strict and e.get("rrn"):
                    found = self._by_rrn.get(e["rrn"])
                if found is not None and not found.reversed:
                    found.reversed, found.open = True, 0
                    self._reopen(found)
                if not e["repeat"]:
                    self._remember(self._reversals, f90 if self.strict else f"{f90}|{e.get('rrn') or ''}",
                                   e["response_code"])
        return n

    def auth_code(self) -> str:
        return "".join(self._rng.choices(AUTH_ALPHABET, k=6))

    def rrn(self) -> str:
        self._rrn_seq += 1
        return f"{self._rrn_seq:012d}"

    def network_request(self, code: str, f7: str) -> dict:
        """An 0800 of our own (sign-off 002, echo 301) with the acquirer's STAN."""
        self._stan_seq = self._stan_seq % 999_999 + 1
        return {"mti": "0800", 7: f7, 11: f"{self._stan_seq:06d}", 70: code}

    @staticmethod
    def _key(f90: str | None) -> tuple | None:
        if not f90 or len(f90) != 42:
            return None
        return (f90[0:4], f90[4:10], f90[10:20], f90[20:31])

    @staticmethod
    def _own_key(msg: Any, mti: str) -> tuple:
        return (mti, msg.get(11), msg.get(7), (msg.get(32) or "").rjust(11, "0"))

    # -- decisions --------------------------------------------------------

    def refuse_mac(self, msg: Any, why: str) -> tuple[dict | None, list[dict]]:
        """A message whose MAC is missing or wrong: A0, nothing decided, nothing moved."""
        mti = msg.mti
        if mti == "0810":
            return None, [{"event": "mac_failure", "acquirer": self.name, "mti": mti, "stan": msg.get(11),
                           "reason": why, "delta": 0}]
        out = self._echo(msg, mti, NETWORK_ECHOED if mti == "0800" else ECHOED)
        out[39] = RC_MAC
        return out, [{"event": "mac_failure", "acquirer": self.name, "mti": mti, "stan": msg.get(11),
                      "f7": msg.get(7), "rrn": msg.get(37), "card": card_of(msg), "reason": why,
                      "response_code": RC_MAC, "delta": 0}]

    def handle(self, msg: Any) -> tuple[dict | None, list[dict]]:
        mti = msg.mti
        if mti == "0100" or mti == "0200":
            return self._authorization(msg)
        if mti == "0800":
            return self._network(msg), []
        if mti in COMPLETION_MTIS:
            return self._completion(msg)
        if mti in REVERSAL_MTIS:
            return self._reversal(msg)
        if mti == "0810":
            return None, []  # the answer to our own sign-off or echo
        return None, [{"event": "unsupported", "mti": mti}]

    @staticmethod
    def _echo(msg: Any, mti: str, fields: tuple) -> dict:
        out: dict[Any, Any] = {"mti": response_mti(mti, keep_origin=True)}
        for field in fields:
            value = msg.get(field)
            if value is not None:
                out[field] = value
        return out

    def _network(self, msg: Any) -> dict:
        out = self._echo(msg, "0800", NETWORK_ECHOED)
        out[39] = "00"
        return out

    def _authorization(self, msg: Any) -> tuple[dict | None, list[dict]]:
        # The benchmark path: every 0100/0200 of a load test comes through here.
        mti = msg.mti
        amount = msg.get(4)
        rc = sandbox_response_code(amount, self.bank_codes)
        pin = None
        block = msg.get(52)
        if block is not None:
            pin = self._check_pin(block, msg.get(2) or (msg.get(35) or "").split("=")[0])
            if pin != "ok" and rc is not None:
                rc = "55"
        out = self._echo(msg, mti, ECHOED)
        rrn = out.get(37)
        if rrn is None:
            rrn = out[37] = self.rrn()
        auth_code = None
        value = int(amount) if amount else 0
        approved = approved_amount(rc, value)
        if rc == "00" or approved:
            auth_code = out[38] = self.auth_code()
        if rc == PARTIAL:
            out[4] = f"{approved:012d}"
        if rc is not None:
            out[39] = rc
        pan = msg.get(2)
        card = card_key(pan) if pan else card_of(msg)
        stan = msg.get(11)
        f7 = msg.get(7)
        acquirer_id = (msg.get(32) or "").rjust(11, "0")
        delta = 0
        if approved:
            # A refund (processing code 20) gives the card money back; its reversal takes it again.
            delta = -approved if (msg.get(3) or "")[:2] == REFUND else approved
            balances = self._balances
            balances[card] = balances.get(card, 0) + delta
        record = {
            "event": "authorization",
            "acquirer": self.name,
            "mti": mti,
            "stan": stan,
            "f7": f7,
            "rrn": rrn,
            "acquirer_id": acquirer_id,  # field 32 as field 90 names it: with 1-3 the key to the original
            "terminal_id": msg.get(41),
            "pan": mask_pan(pan) or "",
            "card": card,
            "processing_code": msg.get(3),
            "amount": value,
            "response_code": rc,
            "auth_code": auth_code,
            "answered": rc is not None,
            # Field 55 as received, by a keyed digest: it holds the PAN (tags 5A, 57).
            "icc_hmac": icc_digest(icc) if (icc := msg.get(55)) else None,
            "delta": delta,
        }
        if pin is not None:
            record["pin"] = pin
        if rc == PARTIAL:
            record["approved"] = approved
        held = Held(mti, approved if rc == PARTIAL else value, card, rrn, rc, delta, auth_code)
        self._remember(self._held, (mti, stan, f7, acquirer_id), held)
        if not self.strict:
            self._remember(self._by_rrn, rrn, held)
        return (out if rc is not None else None), [record]

    def delivered(self, msg: Any) -> None:
        """The answer to the authorization ``msg`` was written to the switch in time:
        its reversal must carry its field 38."""
        held = self._held.get(self._own_key(msg, msg.mti))
        if held is not None:
            held.wanted_38 = held.issued

    def _check_pin(self, block: bytes, pan: str | None) -> str:
        """"ok" when field 52 decrypts under our ZPK to the sandbox PIN, else "wrong" or "invalid"."""
        from switch.security import pinblock
        from switch.security.sandbox import PIN

        if self._zpk is None or not pan:
            return "invalid"
        try:
            _, pin = pinblock.decipher(self._zpk, "tdes", bytes(block), pan, accept=(0, 3))
        except (pinblock.PinBlockError, ValueError):
            return "invalid"
        return "ok" if pin == PIN else "wrong"

    def _completion(self, msg: Any) -> tuple[dict, list[dict]]:
        mti = msg.mti
        out = self._echo(msg, mti, ECHOED)
        if 37 not in out:
            out[37] = self.rrn()
        own = self._own_key(msg, "0220")
        f90 = msg.get(90)
        original = parse_original_data(f90) if f90 else {}
        amount = int(msg.get(4)) if msg.get(4) else 0
        first = self._completions.get(own)
        pre = self._held.get(self._key(f90))
        card = card_of(msg) or (pre.card if pre is not None else None)
        record = {
            "event": "completion",
            "acquirer": self.name,
            "mti": mti,
            "stan": msg.get(11),
            "f7": msg.get(7),
            "rrn": out[37],
            "amount": amount,
            "original_mti": original.get("mti"),
            "original_stan": original.get("stan"),
            "original_f7": original.get("f7"),
            "original_found": pre is not None,
            "acquirer_id": own[3],
            "f90": f90 or "",
            "card": card,
            "repeat": first is not None,
            "delta": 0,
        }
        if first is not None:
            # The same completion again (an 0221 repeat): its first answer, no money.
            rc = first["response_code"]
        elif not self.strict:
            rc = "00"
            hold = 0
            if pre is not None and pre.completed_by is None and not pre.reversed:
                hold, pre.open, pre.completed_by = pre.open, 0, own
            record["delta"] = self._move(card, amount - hold)
        else:
            rc = self._completion_code(msg, pre, amount)
            if rc == "00":
                hold, pre.open, pre.completed_by = pre.open, 0, own
                record["delta"] = self._move(card, amount - hold)
        if rc == "00" and first is None:
            self._remember(self._held, own, self._completion_held(amount, card, out[37], f90))
        out[39] = record["response_code"] = rc
        if first is None:
            self._remember(self._completions, own, record)
        return out, [record]

    def _completion_held(self, amount: int, card: str | None, rrn: str, f90: str | None) -> Held:
        """What the host keeps of an approved completion: the money it took and
        the pre-authorization it completed (for a reversal to reopen)."""
        held = Held("0220", amount, card, rrn, "00", amount)
        held.completes = self._key(f90)
        return held

    def _reopen(self, reversed_: Held) -> None:
        """A completion was reversed: its pre-authorization may be completed again.

        The hold is not restored: the completion released it and its reversal
        gave back all the completion took, so a new completion takes its whole amount.
        """
        pre = self._held.get(reversed_.completes) if reversed_.completes is not None else None
        if pre is not None and pre.completed_by is not None and self._held.get(pre.completed_by) is reversed_:
            pre.completed_by = None

    @staticmethod
    def _completion_code(msg: Any, pre: Held | None, amount: int) -> str:
        if pre is None or pre.mti != "0100":
            return RC_NOT_FOUND
        if not (pre.response_code == "00" or pre.response_code in BANK_APPROVALS) or pre.reversed:
            return RC_INVALID
        if pre.completed_by is not None:
            return RC_DUPLICATE
        if amount > pre.amount:
            return RC_AMOUNT
        card = card_of(msg)
        if card is not None and card != pre.card:
            return RC_INVALID
        return "00"

    def _reversal(self, msg: Any) -> tuple[dict, list[dict]]:
        mti = msg.mti
        # 0420 and its repeats 0421 are both answered 0430.
        out = {"mti": "0430" if mti in ("0420", "0421") else "0410"}
        for field in ECHOED:
            value = msg.get(field)
            if value is not None:
                out[field] = value
        if 37 not in out:
            out[37] = self.rrn()
        f90 = msg.get(90) or ""
        original = parse_original_data(f90) if f90 else {}
        found = self._held.get(self._key(f90))
        if found is None and not self.strict and msg.get(37):
            # Lenient: a reversal that could not name the original's STAN still carries its RRN.
            found = self._by_rrn.get(msg.get(37))
        # A repeat names the same original the same way (lenient: field 90 alone
        # is all zeros when the switch could only name the original by its RRN).
        reversal_key = f90 if self.strict else f"{f90}|{msg.get(37) or ''}"
        amount = int(msg.get(4)) if msg.get(4) else None
        # Strict: field 4 must be what the original holds; another amount moves nothing
        # and is not remembered (the right one may follow under the same field 90).
        wrong = self.strict and found is not None and amount is not None and amount != found.amount
        # Strict: the authorization code the switch was given, in field 38 (a host's match on 38);
        # a repeat of a reversal already taken is a repeat (its answer may have come after the 0420).
        unmatched_38 = (self.strict and not wrong and found is not None and not found.reversed
                        and found.wanted_38 is not None and msg.get(38) != found.wanted_38)
        wrong = wrong or unmatched_38
        repeat = not wrong and reversal_key in self._reversals
        delta = 0
        if found is not None and not found.reversed and not wrong:
            found.reversed = True
            delta, found.open = -found.open, 0
            self._reopen(found)
        rc = (RC_INVALID if unmatched_38 else RC_WRONG_AMOUNT if wrong
              else "00" if found is not None or not self.strict else RC_NOT_FOUND)
        card = found.card if found is not None else card_of(msg)
        record = {
            "event": "reversal",
            "acquirer": self.name,
            "mti": mti,
            "stan": msg.get(11),
            "f7": msg.get(7),
            "rrn": msg.get(37),
            "amount": amount or 0,
            "original_mti": original.get("mti"),
            "original_stan": original.get("stan"),
            "original_f7": original.get("f7"),
            "original_found": found is not None,
            "original_response_code": found.response_code if found else None,
            "f90": f90,
            "pan": mask_pan(msg.get(2)) or "",  # field 2 of the reversal itself, masked ("" when it had none)
            "auth_code": msg.get(38),  # field 38 of the reversal itself
            "card": card,
            "repeat": repeat,
            "response_code": rc,
            "delta": self._move(card, delta),
        }
        if unmatched_38:
            record["refused"] = "field 38 missing" if msg.get(38) is None else "field 38 not the original's"
        elif wrong:
            record["held_amount"] = found.amount
        if wrong:
            pass  # moves nothing and is not remembered: the right one may follow
        elif not repeat:
            self._remember(self._reversals, reversal_key, rc)
        out[39] = rc
        return out, [record]

