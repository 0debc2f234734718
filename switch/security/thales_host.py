"""The host side of the payShield-style subset: what ``payswitch sim hsm`` runs, without I/O.

Its LMK is "LMK-like", defined here (not Thales's): 16 bytes of TDES key and
16 bytes of AES key. A key is kept outside the HSM as a cryptogram under
the LMK, bound to its key type by a variant, as with payShield variant LMKs:

- TDES keys, scheme 'U': TDES-ECB under (LMK_tdes xor V), 32 hex digits;
- AES keys, scheme 'R': RFC 3394 key wrap under (LMK_aes xor V), 48 hex digits;

where V repeats the byte ``key type + 1`` in the first byte of each 8-byte
half (key types 000 ZMK, 001 ZPK, 002 TPK/TMK, 003 TAK, 008 ZAK, 009 BDK). A
cryptogram presented as another type decrypts to a different key, so the
operation fails (PIN blocks don't decode, MACs don't verify).

Error codes follow payShield's: 00 ok, 01 verification failed, 10 source
key unusable, 11 destination key unusable, 15 invalid input, 20 PIN block
not valid, 23 PIN block format code not accepted, 24 PIN length, 68 command
not in this subset.
"""
from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import keywrap

from . import dukpt, pinblock, thales
from .ciphers import tdes_decrypt, tdes_encrypt, xor
from .keys import unwrap, wrap
from .mac import kcv, same_mac, terminal_mac

__all__ = ["Lmk", "Host", "KEY_TYPES", "key_table_entry"]

KEY_TYPES = {"zmk": "000", "kek": "000", "zpk": "001", "tpk": "002", "tmk": "002", "tak": "003", "zak": "008",
             "bdk": "009"}
MAC_KEY_TYPES = ("003", "008")  # M6/M8 take a TAK (terminal messages) or a ZAK (host-link messages)
FORMATS_BY_CODE = {v: k for k, v in thales.PIN_FORMAT_CODES.items()}
FIRMWARE = "PS-SIM-01"


class HostError(Exception):
    def __init__(self, code: str, why: str):
        super().__init__(why)
        self.code = code


def _variant(key_type: str, size: int) -> bytes:
    v = bytes([int(key_type, 16) + 1]) + bytes(7)
    return (v * (size // 8))[:size]


class Lmk:
    """The simulator's local master key: 64 hex digits (TDES part, AES part)."""

    def __init__(self, hex64: str):
        raw = bytes.fromhex(hex64)
        if len(raw) != 32:
            raise ValueError(f"an LMK is 64 hex digits, got {len(raw) * 2}")
        self._tdes, self._aes = raw[:16], raw[16:]

    def __repr__(self) -> str:
        return f"Lmk(check={self.check()})"

    def check(self) -> str:
        return tdes_encrypt(self._tdes, bytes(8)).hex().upper()

    def encrypt(self, key: bytes, algorithm: str, key_type: str) -> str:
        if algorithm == "tdes":
            return "U" + tdes_encrypt(xor(self._tdes, _variant(key_type, 16)), key).hex().upper()
        return "R" + keywrap.aes_key_wrap(xor(self._aes, _variant(key_type, 16)), key).hex().upper()

    def decrypt(self, token: str, key_type: str, error: str = "10") -> tuple[bytes, str]:
        scheme, body = token[:1], bytes.fromhex(token[1:])
        if scheme == "U":
            return tdes_decrypt(xor(self._tdes, _variant(key_type, 16)), body), "tdes"
        if scheme == "R":
            try:
                return keywrap.aes_key_unwrap(xor(self._aes, _variant(key_type, 16)), body), "aes"
            except keywrap.InvalidUnwrap:
                raise HostError(error, "key does not unwrap under the LMK for its type") from None
        raise HostError(error, f"key scheme {scheme!r} not supported")


def key_table_entry(lmk: Lmk, kind: str, algorithm: str, key: bytes) -> dict[str, str]:
    """What a host keeps for a key (the cryptogram is not secret without the LMK)."""
    return {"kind": kind, "algorithm": algorithm, "token": lmk.encrypt(key, algorithm, KEY_TYPES[kind]), "kcv": kcv(key, algorithm)}


def _pan(account: str, fmt_codes: tuple[str, ...]) -> str:
    # formats 0/3 carry the 12 digits left of the check digit: give pinblock a PAN that yields them
    return account if "48" in fmt_codes else account + "0"


def _format(code: str) -> int:
    try:
        return FORMATS_BY_CODE[code]
    except KeyError:
        raise HostError("23", f"PIN block format code {code!r} not accepted") from None


class Host:
    """Executes one command body, returns one framed answer. Never raises on bad input."""

    def __init__(self, lmk: Lmk, header_length: int = 4):
        self.lmk = lmk
        self.header_length = header_length

    def handle(self, body: bytes) -> bytes:
        header = bytes(body[: self.header_length]).decode("latin-1")
        code = bytes(body[self.header_length : self.header_length + 2]).decode("latin-1")
        answer = thales.response_code(code) if len(code) == 2 and code[1] != "~" else "ZZ"
        try:
            msg = thales.decode_request(body, self.header_length)
        except thales.CodecError:
            return self._error(header, answer, "15" if code in thales.REQUESTS else "68")
        try:
            fields = getattr(self, "_" + msg.code)(msg.fields)
        except HostError as e:
            return self._error(header, answer, e.code)
        except pinblock.PinBlockError:
            return self._error(header, answer, "20")
        except (dukpt.KsnError, ValueError):
            return self._error(header, answer, "15")
        if fields is None:  # a verification that failed
            return thales.encode_response(header, answer, "01")
        return thales.encode_response(header, answer, "00", fields)

    @staticmethod
    def _error(header: str, answer: str, error: str) -> bytes:
        if answer not in thales.RESPONSES:
            answer = "ZZ"
        return thales.frame(f"{header}{answer}{error}".encode("latin-1"))

    # -- PIN translation ------------------------------------------------------

    def _translate(self, src_key, src_alg, f, src_fmt_code):
        dst_key, dst_alg = self.lmk.decrypt(f["destination_key"], "001", "11")
        src_fmt, dst_fmt = _format(src_fmt_code), _format(f["destination_format"])
        pan = _pan(f["account"], (src_fmt_code, f["destination_format"]))
        _, pin = pinblock.decipher(src_key, src_alg, bytes.fromhex(f["pin_block"]), pan, accept=(src_fmt,))
        if len(pin) > int(f.get("max_pin_length", "12")):
            raise HostError("24", "PIN longer than the maximum")
        out = pinblock.encipher(dst_key, dst_alg, dst_fmt, pin, pan)
        return {"pin_length": "%02d" % len(pin), "pin_block": out.hex().upper(), "destination_format": f["destination_format"]}

    def _CA(self, f):
        key, alg = self.lmk.decrypt(f["source_key"], "002")
        return self._translate(key, alg, f, f["source_format"])

    def _CC(self, f):
        key, alg = self.lmk.decrypt(f["source_key"], "001")
        return self._translate(key, alg, f, f["source_format"])

    def _dukpt_pin_key(self, f) -> tuple[bytes, str]:
        bdk, _ = self.lmk.decrypt(f["bdk"], "009")
        return dukpt.working_key(bdk, f["ksn"], "pin")

    def _CI(self, f):
        key, alg = self._dukpt_pin_key(f)
        if alg != "tdes":
            raise HostError("15", "CI takes TDES DUKPT only")
        return self._translate(key, alg, f, "01")

    def _G0(self, f):
        key, alg = self._dukpt_pin_key(f)
        return self._translate(key, alg, f, f["source_format"])

    # -- MAC ------------------------------------------------------------------

    def _mac_of(self, f) -> bytes:
        if (f["mode"], f["input_format"], f["mac_size"]) != ("0", "0", "1") or f["key_type"] not in MAC_KEY_TYPES:
            raise HostError("15", "only single-block binary input, 16-digit MACs, TAK or ZAK keys")
        key, alg = self.lmk.decrypt(f["key"], f["key_type"])
        expected = {"3": ("tdes", "1"), "6": ("aes", "0")}.get(f["algorithm"])
        if expected != (alg, f["padding"]):
            raise HostError("15", "MAC algorithm / padding do not fit the key")
        return terminal_mac(key, f["data"].encode("latin-1"), alg)

    def _M6(self, f):
        return {"mac": self._mac_of(f).hex().upper()}

    def _M8(self, f):
        return {} if same_mac(self._mac_of(f), bytes.fromhex(f["mac"])) else None

    def _GW(self, f):
        bdk, _ = self.lmk.decrypt(f["bdk"], "009")
        data = f["data"].encode("latin-1")
        if f["mode"] == "0":
            key, alg = dukpt.working_key(bdk, f["ksn"], "mac")
            return {"mac": ""} if same_mac(terminal_mac(key, data, alg), bytes.fromhex(f["mac"])) else None
        if f["mode"] == "1" and not f["mac"]:
            key, alg = dukpt.working_key(bdk, f["ksn"], "mac")  # the request's key (terminal spec 8)
            return {"mac": terminal_mac(key, data, alg).hex().upper()}
        raise HostError("15", "GW mode must be 0 (verify) or 1 (generate)")

    # -- keys -----------------------------------------------------------------

    def _A0(self, f):
        if f["mode"] != "1" or f["key_type"] not in ("001", "002", "003"):
            raise HostError("15", "A0: mode 1, key types 001, 002, 003")
        kek_type = {"0": "000", "1": "002"}.get(f["kek_flag"])
        if kek_type is None:
            raise HostError("15", "A0: ZMK/TMK flag must be 0 or 1")
        kek, alg = self.lmk.decrypt(f["kek"], kek_type)
        key = secrets.token_bytes(16)
        under = wrap(kek, alg, key, alg).hex().upper()
        return {
            "key": self.lmk.encrypt(key, alg, f["key_type"]),
            "key_under_kek": ("X" if alg == "tdes" else "R") + under,
            "kcv": kcv(key, alg),
        }

    def _A6(self, f):
        zmk, alg = self.lmk.decrypt(f["kek"], "000")
        scheme = f["key"][:1]
        if (alg, scheme) not in (("tdes", "X"), ("tdes", "U"), ("aes", "R")):
            raise HostError("15", "A6: key scheme does not fit the ZMK")
        key = unwrap(zmk, alg, bytes.fromhex(f["key"][1:]), alg)
        return {"key": self.lmk.encrypt(key, alg, f["key_type"]), "kcv": kcv(key, alg)}

    def _NC(self, f):
        return {"lmk_check": self.lmk.check(), "firmware": FIRMWARE}
