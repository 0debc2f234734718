"""The switch's client of a payShield-style HSM, and the one place a security module is chosen.

:class:`HsmModule` implements :class:`switch.security.module.SecurityModule`
over the command subset of :mod:`switch.security.thales`: one TCP
connection, commands pipelined and matched to answers by their message
header (payShield echoes it), a deadline per command, the next endpoint when
one cannot be reached. Keys are named in a key table (a JSON file: name ->
kind, algorithm, cryptogram under the LMK, check value); the cryptograms
are not secret without the LMK, which never leaves the HSM. Session keys
made at sign-on and imported keys join the table in memory.

:func:`open_module` turns ``[security.module]`` into a module: ``software``
or ``hsm`` — a real HSM is a configuration change.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec

from switch.core.inflight import InFlight
from switch.security import keystore, pinblock, thales
from switch.security.dukpt import check_ksn as _check_ksn
from switch.security.config import HsmModuleConfig, Security, SoftwareModuleConfig
from switch.security.module import (
    CheckValueMismatch,
    Diagnostics,
    DukptKey,
    ModuleKeyError,
    KeyInfo,
    MacKey,
    ModuleUnavailable,
    PinKey,
    SessionKeys,
    StoredKey,
    UnknownKey,
    WrongKeyKind,
)
from switch.security.software import SoftwareModule
from switch.security.thales_host import KEY_TYPES

__all__ = ["KeyRecord", "HsmModule", "load_key_table", "open_module"]

log = logging.getLogger("payswitch.hsm")


class KeyRecord(msgspec.Struct, frozen=True):
    kind: str
    algorithm: str
    token: str  # cryptogram under the LMK, scheme character first
    kcv: str

    def __repr__(self) -> str:
        return f"KeyRecord({self.kind}, {self.algorithm}, kcv={self.kcv})"


def load_key_table(path: str | Path) -> dict[str, KeyRecord]:
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=dict[str, KeyRecord])
    except OSError as e:
        raise ModuleUnavailable(f"key table {path}: {e.strerror}") from None
    except msgspec.MsgspecError as e:
        raise ModuleUnavailable(f"key table {path}: {e}") from None


_MAC_KINDS = ("tak", "zak")  # a terminal's session MAC key, or an acquirer's zone MAC key
# 20 and 24 are about the decrypted block (its values, its PIN length): one message for both, as
# pinblock.decode gives, so a log never tells them apart (no oracle).  23 is about the format code we sent.
_PIN_ERRORS = {"20": pinblock.UNUSABLE, "23": "PIN block format code not accepted by the HSM", "24": pinblock.UNUSABLE}
_KEY_ERRORS = {"10": "source key unusable", "11": "destination key unusable"}


class HsmModule:
    """SecurityModule over a payShield-style HSM (asyncio)."""

    def __init__(self, endpoints: list[tuple[str, int]], keys: dict[str, KeyRecord], *, header_length: int = 4,
                 timeout: float = 2.0):
        if not endpoints:
            raise ValueError("an HSM needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._keys = dict(keys)
        self._header_length = header_length
        self._timeout = timeout
        self._counter = 0
        # Commands awaiting their answer, by the header the HSM echoes (switch.core.inflight:
        # the one response mux of the links); each under asyncio's timeout in _call.
        self._pending: InFlight[str, asyncio.Future] = InFlight(late_memory=256)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"HsmModule({len(self._keys)} keys, {len(self._endpoints)} endpoints)"

    # -- connection -----------------------------------------------------------

    async def _connect(self) -> None:
        async with self._connecting:
            if self._writer is not None:
                return
            errors = []
            for host, port in self._endpoints:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self._timeout)
                except (OSError, asyncio.TimeoutError) as e:
                    errors.append(f"{host}:{port}: {e or 'timeout'}")
                    continue
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))
                return
            raise ModuleUnavailable("HSM unreachable (" + "; ".join(errors) + ")")

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = thales.Framer()
        why: Exception = ModuleUnavailable("HSM closed the connection")
        try:
            while data := await reader.read(65536):
                for body in framer.feed(data):
                    header = body[: self._header_length].decode("latin-1")
                    future = self._pending.pop(header)
                    if future is not None and not future.done():
                        future.set_result(body)
                    elif future is None and self._pending.expired(header) is None:
                        log.warning("HSM answered a command it was never sent (header %s): dropped", header)
                    elif future is None:
                        self._pending.forget_expired(header)  # the answer to a command that timed out
        except (OSError, thales.CodecError) as e:
            why = ModuleUnavailable(f"HSM connection lost: {e}")
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for future in self._pending.drain():
                if not future.done():
                    future.set_exception(why)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)

    def _next_header(self) -> str:
        for _ in range(10 ** self._header_length):
            self._counter = (self._counter + 1) % (10 ** self._header_length)
            header = str(self._counter).zfill(self._header_length)
            if header not in self._pending:
                return header
        raise ModuleUnavailable("too many HSM commands in flight")

    async def _call(self, code: str, fields: dict[str, object]) -> thales.Message:
        await self._connect()
        header = self._next_header()
        future = asyncio.get_running_loop().create_future()
        self._pending.add(header, future)
        try:
            self._writer.write(thales.encode_request(header, code, fields))
            async with asyncio.timeout(self._timeout):
                body = await future
        except TimeoutError:
            raise ModuleUnavailable(f"HSM did not answer {code} within {self._timeout} s") from None
        finally:
            self._pending.give_up(header)  # answered: already gone; timed out: its answer is late
        try:
            answer = thales.decode_response(body, self._header_length)
        except thales.CodecError as e:
            raise ModuleUnavailable(f"HSM answer to {code} unreadable: {e}") from None
        if answer.code != thales.response_code(code):
            raise ModuleUnavailable(f"HSM answered {answer.code} to {code}")
        return answer

    # -- keys -----------------------------------------------------------------

    def _record(self, name: str, kinds: tuple[str, ...], usage: str) -> KeyRecord:
        try:
            rec = self._keys[name]
        except KeyError:
            raise UnknownKey(f"no key named {name!r}") from None
        if rec.kind not in kinds:
            raise WrongKeyKind(f"key {name!r} is a {rec.kind}, not usable for {usage}")
        return rec

    @staticmethod
    def _fail(code: str, error: str) -> Exception:
        if error in _PIN_ERRORS:
            return pinblock.PinBlockError(_PIN_ERRORS[error])
        if error in _KEY_ERRORS:
            return ModuleKeyError(f"HSM {code}: {_KEY_ERRORS[error]} (error {error})")
        return ModuleUnavailable(f"HSM {code} answered error {error}")

    # -- SecurityModule -------------------------------------------------------

    def _mac_fields(self, rec: KeyRecord, data: bytes) -> dict[str, object]:
        tdes = rec.algorithm == "tdes"
        return {"mode": "0", "input_format": "0", "mac_size": "1", "algorithm": "3" if tdes else "6",
                "padding": "1" if tdes else "0", "key_type": KEY_TYPES[rec.kind], "key": rec.token,
                "data": bytes(data)}

    def _dukpt_fields(self, key: DukptKey, mode: str, data: bytes, mac: bytes = b"") -> dict[str, object]:
        rec = self._record(key.bdk, ("bdk",), "DUKPT")
        return {"mode": mode, "bdk": rec.token, "ksn": key.ksn.upper(), "data": bytes(data), "mac": mac.hex().upper()}

    async def generate_mac(self, key: MacKey, data: bytes) -> bytes:
        if isinstance(key, DukptKey):
            _check_ksn(key.ksn)
            answer = await self._call("GW", self._dukpt_fields(key, "1", data))
        else:
            answer = await self._call("M6", self._mac_fields(self._record(key.name, _MAC_KINDS, "mac"), data))
        if answer.error != "00":
            raise self._fail(answer.code, answer.error)
        return bytes.fromhex(answer.fields["mac"])

    async def verify_mac(self, key: MacKey, data: bytes, mac: bytes) -> bool:
        if isinstance(key, DukptKey):
            self._record(key.bdk, ("bdk",), "DUKPT")
            _check_ksn(key.ksn)
            if len(mac) != 8:
                return False
            answer = await self._call("GW", self._dukpt_fields(key, "0", data, mac))
        else:
            rec = self._record(key.name, _MAC_KINDS, "mac")
            if len(mac) != 8:
                return False
            answer = await self._call("M8", {**self._mac_fields(rec, data), "mac": bytes(mac).hex().upper()})
        if answer.error in ("00", "01"):
            return answer.error == "00"
        raise self._fail(answer.code, answer.error)

    async def translate_pin(self, source: PinKey, pin_block: bytes, pan: str, destination: str,
                            destination_format: int, accept: tuple[int, ...] = pinblock.FORMATS) -> bytes:
        dest = self._record(destination, ("zpk",), "pin-destination")
        if destination_format not in thales.PIN_FORMAT_CODES:
            raise pinblock.PinBlockError(f"PIN block format {destination_format} cannot be produced (0, 3 or 4)")
        if not pan.isdigit() or not 2 <= len(pan) <= 19:
            raise pinblock.PinBlockError(f"PAN must be 2 to 19 digits, got {len(pan)} characters")
        if isinstance(source, DukptKey):
            bdk = self._record(source.bdk, ("bdk",), "DUKPT")
            algorithm = "aes" if len(source.ksn) == 24 else "tdes"
            _check_ksn(source.ksn)
            base = {"bdk": bdk.token, "ksn": source.ksn.upper()}
        else:
            rec = self._record(source.name, ("tpk", "zpk"), "pin-source")
            algorithm = rec.algorithm
            base = {"source_key": rec.token, "max_pin_length": "12"}
        candidates = [f for f in accept if (f == 4) == (algorithm == "aes")]
        if not candidates:
            raise pinblock.PinBlockError("no accepted PIN block format fits the source key")
        error = "20"
        for fmt in candidates:
            codes = (thales.PIN_FORMAT_CODES[fmt], thales.PIN_FORMAT_CODES[destination_format])
            account = pan if "48" in codes else pan[:-1][-12:].rjust(12, "0")
            fields = {**base, "destination_key": dest.token, "pin_block": bytes(pin_block),
                      "source_format": codes[0], "destination_format": codes[1], "account": account}
            if isinstance(source, DukptKey):
                code = "CI" if fmt == 0 and algorithm == "tdes" else "G0"
                if code == "CI":
                    del fields["source_format"]
            else:
                code = "CA" if self._keys[source.name].kind == "tpk" else "CC"
            if len(pin_block) != (16 if algorithm == "aes" else 8):
                raise pinblock.PinBlockError(f"a PIN block under this key is {16 if algorithm == 'aes' else 8} bytes, got {len(pin_block)}")
            answer = await self._call(code, fields)
            if answer.error == "00":
                return bytes.fromhex(answer.fields["pin_block"])
            error = answer.error
            if error != "20":
                break
        raise self._fail("PIN translation", error)

    async def generate_session_keys(self, tmk: str, tak: str, tpk: str) -> SessionKeys:
        kek = self._record(tmk, ("tmk",), "session-kek")
        made = {}
        for name, kind in ((tak, "tak"), (tpk, "tpk")):
            answer = await self._call("A0", {"mode": "1", "key_type": KEY_TYPES[kind],
                                             "scheme_lmk": "U" if kek.algorithm == "tdes" else "R",
                                             "kek_flag": "1", "kek": kek.token,
                                             "scheme_kek": "X" if kek.algorithm == "tdes" else "R"})
            if answer.error != "00":
                raise self._fail("A0", answer.error)
            made[kind] = (KeyRecord(kind, kek.algorithm, answer.fields["key"], answer.fields["kcv"]),
                          answer.fields["key_under_kek"][1:])
        self._keys[tak], self._keys[tpk] = made["tak"][0], made["tpk"][0]
        return SessionKeys(kek.algorithm, made["tak"][1], made["tak"][0].kcv, made["tpk"][1], made["tpk"][0].kcv)

    async def import_key(self, name: str, kind: str, algorithm: str, kek: str, key_under_kek: bytes, kcv: str) -> KeyInfo:
        zmk = self._record(kek, ("zmk", "kek"), "import-kek")
        if zmk.algorithm != algorithm:
            raise WrongKeyKind(f"a {algorithm} key is not carried under the {zmk.algorithm} key {kek!r}")
        answer = await self._call("A6", {"key_type": KEY_TYPES[kind], "kek": zmk.token,
                                         "key": ("X" if algorithm == "tdes" else "R") + bytes(key_under_kek).hex().upper(),
                                         "scheme_lmk": "U" if algorithm == "tdes" else "R"})
        if answer.error != "00":
            raise self._fail("A6", answer.error)
        if answer.fields["kcv"] != kcv.strip().upper():
            raise CheckValueMismatch(f"key {name!r}: check value mismatch, refused")
        self._keys[name] = KeyRecord(kind, algorithm, answer.fields["key"], answer.fields["kcv"])
        return KeyInfo(name, kind, algorithm, answer.fields["kcv"])

    async def key_info(self, name: str) -> KeyInfo:
        rec = self._record(name, tuple(KEY_TYPES), "information")
        return KeyInfo(name, rec.kind, rec.algorithm, rec.kcv)

    # Session keys kept in the journal are their cryptograms under the LMK:
    # secret without the HSM, so nothing is added to seal them.

    async def export_keys(self, names: tuple[str, ...], context: str) -> tuple[StoredKey, ...]:
        out = []
        for name in names:
            rec = self._record(name, tuple(KEY_TYPES), "export")
            out.append(StoredKey(rec.kind, rec.algorithm, rec.kcv, rec.token))
        return tuple(out)

    async def install_keys(self, keys: tuple[tuple[str, StoredKey], ...], context: str) -> None:
        for name, k in keys:
            if k.kind not in KEY_TYPES or k.algorithm not in ("tdes", "aes") or not k.blob:
                raise ModuleKeyError(f"stored {k.kind} of {context}: not a key this HSM client knows")
        for name, k in keys:
            self._keys[name] = KeyRecord(k.kind, k.algorithm, k.blob, k.kcv)

    async def rename_keys(self, renames: tuple[tuple[str, str], ...]) -> None:
        for old, _ in renames:
            if old not in self._keys:
                raise UnknownKey(f"no key named {old!r}")
        for old, new in renames:
            self._keys[new] = self._keys.pop(old)

    async def drop_keys(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._keys.pop(name, None)

    async def diagnostics(self) -> Diagnostics:
        answer = await self._call("NC", {})
        ok = answer.error == "00"
        detail = f"firmware {answer.fields['firmware']}, LMK check {answer.fields['lmk_check']}" if ok else f"error {answer.error}"
        return Diagnostics(module="hsm", ok=ok, keys=len(self._keys), detail=detail)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def open_module(security: Security):
    """The configured security module (``None`` when no module is configured)."""
    module = security.module
    if isinstance(module, SoftwareModuleConfig):
        master = keystore.read_master_key(module.master_key_file, module.master_key_env)
        return SoftwareModule.from_store(module.key_store, master)
    if isinstance(module, HsmModuleConfig):
        return HsmModule([_endpoint(e) for e in module.endpoints], load_key_table(module.key_table),
                         header_length=module.header_length, timeout=module.timeout)
    return None


