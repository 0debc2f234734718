"""A small blocking terminal: builds spec messages, sends them, reads the answer.

Used by ``payswitch send`` (trying the switch by hand) and by ``payswitch
serve`` to show one sample purchase going through at start-up.  It speaks the
terminal interface exactly as any third-party client would.
"""
from __future__ import annotations

import itertools
import secrets
import socket
import struct
from datetime import datetime, timezone

from native.iso8583 import build_tlv48, parse_tlv48

from switch.core.codecs import listener_codec
from switch.core.messages import mask_pan, mask_pans

TERMINAL = listener_codec("terminal-87")

# Payment-kind → field 22 default (section 3): chip, bar code.
ENTRY_CHIP = "051"
ENTRY_BARCODE = "031"
SANDBOX_CITY_PREFIX = "8800"  # the sandbox's city cards (spec 7): field 49 in the centre's currency

# A terminal keeps its STAN counter across restarts; a one-shot CLI can't, so it
# starts at random (two commands in the same second must not share 11 + 7).
_stan = itertools.count(secrets.randbelow(999_000) + 1)


def next_stan() -> str:
    return "%06d" % (next(_stan) % 1000000 or 1)


def now_fields() -> dict[int, str]:
    t = datetime.now(timezone.utc)
    return {7: t.strftime("%m%d%H%M%S"), 12: t.strftime("%H%M%S"), 13: t.strftime("%m%d")}


def build(
    kind: str,
    *,
    terminal: str = "DEMO0001",
    merchant: str = "DEMO00000000001",
    pan: str | None = None,
    amount: int = 0,
    currency: str | None = None,
    expiry: str | None = None,
    entry: str | None = None,
    code: str | None = None,
    stan: str | None = None,
    original: dict | None = None,
    tlv: dict[str, str] | None = None,
    totals: tuple[int, int, int, int] | None = None,
) -> dict:
    """A request mapping (``{"mti": ..., n: value}``) for a named operation.

    kind: purchase, refund, balance, preauth, completion, reversal, echo, signon, keyexchange, settlement.
    ``original`` (completion, reversal): ``{"mti", "stan", "time"}`` of the original request.
    """
    mti, pcode = {
        "purchase": ("0200", "000000"),
        "refund": ("0200", "200000"),
        "balance": ("0200", "310000"),
        "topup": ("0200", "210000"),
        "preauth": ("0100", "000000"),
        "completion": ("0220", "000000"),
        "reversal": ("0400", "000000"),
        "echo": ("0800", None),
        "signon": ("0800", None),
        "keyexchange": ("0800", None),
        "settlement": ("0500", "920000"),
    }[kind]
    times = now_fields()
    msg: dict = {"mti": mti, 7: times[7], 11: stan or next_stan(), 41: terminal}
    if mti == "0800":
        msg[70] = {"echo": "301", "keyexchange": "101"}.get(kind, "001")
        return msg
    msg.update({3: pcode, 42: merchant})
    if mti in ("0100", "0200", "0220"):
        # Wallets and the city-card centre in the sandbox take yuan (156, the demo merchants' currency,
        # spec 7); bank cards any currency (default euro).
        city = pan is not None and pan.startswith(SANDBOX_CITY_PREFIX)
        msg.update({4: "%012d" % amount, 12: times[12], 13: times[13],
                    49: currency or ("156" if code or city else "978")})
        tags = dict(tlv or {})
        if code:
            tags["BC"] = code
            msg[22] = entry or ENTRY_BARCODE
        else:
            msg[22] = entry or ENTRY_CHIP
            if pan:
                msg[2] = pan
            if expiry:
                msg[14] = expiry
        if tags:
            msg[48] = build_tlv48(tags)
    if mti == "0400" and amount:
        msg[4] = "%012d" % amount
    if original is not None:
        msg[90] = original["mti"] + original["stan"] + original["time"] + "0" * 22
    if mti == "0500":
        credits_n, debits_n, credits_amt, debits_amt = totals or (0, 0, 0, 0)
        msg.update({74: "%010d" % credits_n, 76: "%010d" % debits_n, 86: "%016d" % credits_amt, 88: "%016d" % debits_amt})
    return msg


class Terminal:
    """One TCP connection to the switch, 2-byte big-endian length framing (section 1)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8583, timeout: float = 65.0, dialect: str = "terminal-87"):
        # The listener's dialect: a shipped name (iso87-ascii for the sandbox's 8584) or a dialect file.
        self.codec = listener_codec(dialect)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">H", len(body)) + body)

    def receive(self) -> bytes:
        header = self._read(2)
        return self._read(struct.unpack(">H", header)[0])

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("switch closed the connection")
            buf += chunk
        return bytes(buf)

    def transact(self, request: dict):
        self.send(self.codec.encode(request))
        return self.codec.decode(self.receive())

    def transact_wire(self, body: bytes) -> bytes:
        """Send encoded bytes as they are (a MACed request), return the answer's bytes."""
        self.send(body)
        return self.receive()


# -- spec section 8: the terminal's keys, for trying MAC and PIN by hand ------------------

def sign_wire(codec, request: dict, key: bytes, algorithm: str) -> bytes:
    """``request`` encoded in the listener's dialect with its MAC (field 64, or 128 with fields above 64)
    over the wire bytes from the MTI, as spec 8 says (framing: :mod:`switch.core.macwire`)."""
    from switch.core.macwire import signed_wire, unsigned_wire
    from switch.security.mac import terminal_mac

    covered_bytes, field = unsigned_wire(codec, request)
    return signed_wire(codec, covered_bytes, field, terminal_mac(key, covered_bytes, algorithm))


def check_wire(codec, body: bytes, key: bytes, algorithm: str) -> bool | None:
    """Whether an answer's MAC is right (None when it carries none; False when it is not an
    8-byte MAC ending the message)."""
    from switch.core.macwire import covered
    from switch.security.mac import same_mac, terminal_mac

    msg = codec.decode(body)
    if 64 not in msg and 128 not in msg:
        return None
    found = covered(codec, msg, body)
    if isinstance(found, str):
        return False
    data, mac = found
    return same_mac(terminal_mac(key, data, algorithm), mac)


def sandbox_keys(terminal: str) -> tuple[str, str, bytes]:
    """The spec 7 demo keys of a DEMOSEC terminal: ("tmk" | "bdk", algorithm, key). Sandbox only."""
    from switch.security.sandbox import KEYS

    number = int(terminal[3:]) if terminal.startswith("SEC") and terminal[3:].isdigit() else -1
    if 1 <= number <= 99:
        name = "demo-tmk-tdes"
    elif 100 <= number <= 199:
        name = "demo-tmk-aes"
    elif 200 <= number <= 299:
        name = "demo-bdk-tdes"
    else:
        raise ValueError(f"terminal {terminal} has no sandbox keys (SEC00001 to SEC00299 have, spec 7)")
    kind, algorithm, clear = KEYS[name]
    return kind, algorithm, bytes.fromhex(clear)


def fresh_ksn(key_set: str = "FFFF") -> str:
    """A TDES KSN for a one-shot test DUKPT terminal: a random device (key set ID ``key_set``, then a
    random device ID) at counter 1.

    The switch refuses a KSN counter not above the highest it has seen for a
    device (a replay), and a one-shot command keeps no counter: a new device
    each time is always fresh. (A device ID ends on an even digit: its last
    bit belongs to the 21-bit counter.)
    """
    device = secrets.token_hex(5).upper() + "%X" % (2 * secrets.randbelow(8))
    return key_set + device + "00001"


class TerminalSecurity:
    """A terminal's side of spec 8 in one process: keys live only in this object.

    ``tmk`` (session keys by 0800/101) or ``bdk`` (DUKPT, with ``ksn``).
    """

    def __init__(self, algorithm: str, *, tmk: bytes | None = None, bdk: bytes | None = None, ksn: str | None = None):
        if (tmk is None) == (bdk is None):
            raise ValueError("give a TMK or a BDK")
        self.algorithm = algorithm
        self.tmk = tmk
        self.bdk = bdk
        self.ksn = ksn or (fresh_ksn() if bdk is not None else None)
        self.tak: bytes | None = None
        self.tpk: bytes | None = None
        self.response_key: bytes | None = None
        if bdk is not None:
            from switch.security.terminal import dukpt_keys

            self.tak, self.tpk, self.algorithm = dukpt_keys(bdk, self.ksn)
            self.response_key = self.tak  # section 8: the answer is MACed under the request's key

    def __repr__(self) -> str:
        return f"TerminalSecurity({self.algorithm}, {'dukpt' if self.bdk else 'session keys'})"

    @property
    def needs_keys(self) -> bool:
        return self.tak is None

    def take_keys(self, answer) -> None:
        """The TAK and TPK out of an 0810 (field 48 TA/TP under the TMK, checked against CA/CP)."""
        from switch.security.terminal import session_keys

        if answer.get(39) != "00" or 48 not in answer:
            raise ValueError(f"the switch gave no session keys (field 39 {answer.get(39)})")
        self.tak, self.tpk = session_keys(self.tmk, self.algorithm, parse_tlv48(answer[48]))
        self.response_key = self.tak

    def protect(self, request: dict, codec, pin: str | None) -> bytes:
        """``request`` with the PIN block (when ``pin``) and the KSN (DUKPT), MACed, in the listener's dialect.

        The block is ISO 9564 format 0 in field 52 under a TDES key; under an
        AES key it is format 4, 16 bytes, which field 52 (b8) cannot carry: it
        goes in field 48 tag PB as 32 hex digits (a project addition).
        """
        from switch.security.terminal import pin_block

        request = dict(request)
        tags = parse_tlv48(request[48]) if 48 in request else {}
        if self.ksn is not None:
            tags["KS"] = self.ksn
        if pin is not None:
            pan = request.get(2)
            if not pan:
                raise ValueError("a PIN needs the card number (--pan)")
            block = pin_block(pin, pan, self.tpk, self.algorithm)
            if self.algorithm == "aes":
                tags["PB"] = block.hex().upper()
            else:
                request[52] = block
        if tags:
            request[48] = build_tlv48(tags)
        return sign_wire(codec, request, self.tak, self.algorithm)

    def pin_place(self) -> str:
        """Where :meth:`protect` puts the PIN block, for a terminal's printout."""
        key = "DUKPT PIN key" if self.bdk is not None else "TPK"
        return f"48 PB (format 4, under the AES {key})" if self.algorithm == "aes" else f"52 (format 0, under the {key})"

    def check(self, codec, body: bytes) -> bool | None:
        return check_wire(codec, body, self.response_key, self.algorithm)


FIELD_NAMES = {
    2: "PAN", 3: "processing code", 4: "amount", 7: "transmission time", 11: "STAN", 12: "local time",
    13: "local date", 14: "expiry", 22: "entry mode", 25: "condition code", 35: "track 2", 37: "RRN",
    38: "auth code", 39: "response code", 41: "terminal", 42: "merchant", 48: "additional data",
    49: "currency", 52: "PIN block", 55: "EMV data", 64: "MAC", 128: "MAC", 70: "network code", 74: "credits", 76: "debits",
    86: "credits amount", 88: "debits amount", 90: "original data",
}


# EMV tags of field 55 that carry card data: the application PAN (5A), track 2
# equivalent data (57), track 1 (56), the cardholder name (5F20), the tracks'
# discretionary data (9F1F, 9F20) and contactless track 2 (9F6B).
CARD_DATA_TAGS = frozenset((0x5A, 0x57, 0x56, 0x5F20, 0x9F1F, 0x9F20, 0x9F6B))


def describe(msg) -> list[str]:
    """Field-by-field lines with PAN masked and sensitive fields withheld.

    Free text (merchant name, a receipt line, any tag of field 48) is shown
    with every card number in it masked, grouped or not
    (:func:`native.panguard.mask_pans`); field 55 with its card-data tags
    withheld.
    """
    if isinstance(msg, dict):
        mti, fields = msg["mti"], {k: v for k, v in msg.items() if k != "mti"}
    else:
        mti, fields = msg.mti, msg.fields()
    lines = [f"  MTI  {mti}"]
    for n in sorted(fields):
        v = fields[n]
        if n == 2:
            shown = mask_pan(v)
        elif n in (35, 52, 64, 128):
            shown = "(withheld)" if n in (35, 52) else "(MAC)"
        elif n == 55 and isinstance(v, (bytes, bytearray)):
            shown = _icc(bytes(v))
        elif isinstance(v, bytes):
            shown = v.hex().upper()
        elif n == 48:
            tags = parse_tlv48(v)
            # an AES terminal's PIN block is withheld like field 52, a wallet's
            # payment code (a bearer credential) masked like field 2
            hidden = {"PB": "(withheld)", "BC": mask_pan(tags.get("BC", ""))}
            masked = {k: hidden[k] if k in hidden else mask_pans(t) for k, t in tags.items()}
            # The raw field only when it shows nothing the tags hide: a card number
            # right after a tag's length digits is no longer a run of its own.
            shown = repr(masked) if masked != tags else v + "  " + repr(tags)
        else:
            shown = mask_pans(v)
        lines.append(f"  {n:>3}  {FIELD_NAMES.get(n, ''):<18} {shown}")
    return lines


def _icc(value: bytes) -> str:
    """Field 55 as hex, object by object, the card-data tags' values withheld."""
    from native import emv

    try:
        objects = emv.objects(value)
    except ValueError:
        return f"({len(value)} bytes, not BER-TLV: withheld)"
    out = []
    for tag, raw in objects:
        if tag in CARD_DATA_TAGS:
            out.append(f"{tag:X}(withheld)")
        else:
            out.append(raw.hex().upper())
    return " ".join(out)
