"""End to end, spec sections 6 and 8: key exchanges, the switch-over to new keys, and where keys never go.

A DEMOSEC terminal with the public demo TMK of section 7, against the real
switch and card simulators (software module and ``payswitch sim hsm``):

- a retransmitted 0800/101 gets its first 0810 again (same keys, check values, 37);
- key exchange → purchase → second key exchange → a purchase under the OLD
  keys (sent before the terminal took the new ones) → a purchase under the
  new keys → the old keys refused (section 8.1);
- a purchase under the old keys still at the acquirer when the new keys
  become current is answered MACed under the old TAK;
- then no clear session key, no key as the 0810 carried it (under a public
  demo TMK, as good as clear) and no PIN block is in the log, the journal
  files, the metrics or the status page.
"""
from __future__ import annotations

import pytest

from native.iso8583 import parse_tlv48
from switch.client import Terminal, TerminalSecurity, build
from switch.security import sandbox
from tests import e2e
from tests.test_e2e_security import MERCHANT_TOML, POLICY_TOML, SEC_MERCHANT, module_switch, wait_ledger

pytestmark = pytest.mark.e2e

VISA = e2e.VISA  # bank-a


@pytest.fixture(scope="module", params=["software", "hsm"])
def switch(request, tmp_path_factory):
    def configure(text, tmp, module):
        return text.replace("\n[[acquirers]]", MERCHANT_TOML + "\n[[acquirers]]", 1) + module + POLICY_TOML

    yield from module_switch(request.param, tmp_path_factory.mktemp(f"keyx-{request.param}"), configure)


class Keys:
    """One terminal's side: its TMK, and each key set it was given (with the 0810's field 48)."""

    def __init__(self, terminal: str, algorithm: str, tmk_name: str):
        self.terminal = terminal
        self.algorithm = algorithm
        self.tmk = bytes.fromhex(sandbox.KEYS[tmk_name][2])
        self.secrets: set[bytes] = set()

    def take(self, answer) -> TerminalSecurity:
        sec = TerminalSecurity(self.algorithm, tmk=self.tmk)
        sec.take_keys(answer)
        for key in (sec.tak, sec.tpk):
            self.secrets |= {key, key.hex().encode(), key.hex().upper().encode()}
        tags = parse_tlv48(answer[48])
        self.secrets |= {tags["TA"].encode(), tags["TP"].encode(), tags["TA"].lower().encode()}
        return sec

    def purchase(self, t: Terminal, sec: TerminalSecurity, amount: int) -> bytes:
        """The MACed purchase with PIN 1234, as sent; its PIN block joins the secrets."""
        req = build("purchase", terminal=self.terminal, merchant=SEC_MERCHANT, pan=VISA, amount=amount)
        wire = sec.protect(req, t.codec, "1234")
        sent = t.codec.decode(wire)
        block = sent[52] if 52 in sent else bytes.fromhex(parse_tlv48(sent[48])["PB"])
        self.secrets |= {block, block.hex().encode(), block.hex().upper().encode()}
        return wire


def answered(t: Terminal, sec: TerminalSecurity, wire: bytes) -> tuple[str, bool]:
    """(field 39, whether the answer's MAC verifies under ``sec``'s TAK) of ``wire`` sent on ``t``."""
    out = t.transact_wire(wire)
    return t.codec.decode(out)[39], bool(sec.check(t.codec, out))


def without_keys(answer) -> dict:
    fields = dict(answer.fields())
    fields.pop(48, None)
    return fields


@pytest.mark.parametrize("terminal, algorithm, tmk_name, base", [("SEC00041", "tdes", "demo-tmk-tdes", 1500),
                                                                  ("SEC00141", "aes", "demo-tmk-aes", 1600)],
                         ids=["tdes", "aes"])
def test_key_exchange_switch_over_and_no_key_material_anywhere(switch, terminal, algorithm, tmk_name, base):
    base += 50 * (switch.module == "hsm")
    keys = Keys(terminal, algorithm, tmk_name)
    with Terminal("127.0.0.1", switch.ports["term"], timeout=20) as t, \
            Terminal("127.0.0.1", switch.ports["term"], timeout=20) as other:
        exchange = t.codec.encode(build("keyexchange", terminal=terminal))
        first = t.codec.decode(t.transact_wire(exchange))
        again = t.codec.decode(t.transact_wire(exchange))  # the first 0810 lost: sent again
        assert without_keys(again) == without_keys(first)
        assert again[48] == first[48], "a retransmitted 0800/101 got other keys"
        old = keys.take(first)
        assert answered(t, old, keys.purchase(t, old, base + 10)) == ("00", True)

        new = keys.take(t.transact(build("keyexchange", terminal=terminal)))
        # Sent before the terminal took the new keys: the old ones are still current (8.1).
        assert answered(t, old, keys.purchase(t, old, base + 20)) == ("00", True)
        # Still under the old keys, and at the acquirer (amount ...68: it never answers, 68 after 2 s) ...
        t.send(keys.purchase(t, old, base - base % 100 + 68))
        e2e.wait_for(lambda: any(e.get("amount") == base - base % 100 + 68
                                 for e in switch.ledger("bank-a") if e.get("terminal_id") == terminal))
        # ... when a purchase under the new keys makes them current.
        assert answered(other, new, keys.purchase(other, new, base + 30)) == ("00", True)
        late = t.receive()
        assert t.codec.decode(late)[39] == "68"
        assert old.check(t.codec, late), "the in-flight request's answer is not MACed under its own TAK"
        # From now on the old keys are refused.
        assert answered(t, old, keys.purchase(t, old, base + 40))[0] == "A0"
        assert answered(t, new, keys.purchase(t, new, base + 50)) == ("00", True)
    for amount in (base + 10, base + 20, base + 30, base + 50):
        [auth] = wait_ledger(switch, "bank-a", amount)
        assert (auth["pin"], auth["response_code"]) == ("ok", "00"), amount
    assert not wait_ledger(switch, "bank-a", base + 40, timeout=0.2)

    # No key material where it does not belong.
    places = {"log": switch.log_text().encode()}
    for path in ("/metrics", "/status.json"):
        places[path] = switch.http_get(path)[1]
    for suffix in ("", "-wal", "-shm"):
        p = switch.tmp / f"journal.sqlite{suffix}"
        if p.exists():
            places[p.name] = p.read_bytes()
    assert "journal.sqlite" in places and len(places["log"]) > 1000
    found = [f"{name}: a secret of {len(s)} bytes" for name, data in places.items()
             for s in keys.secrets if s in data]
    assert found == []
