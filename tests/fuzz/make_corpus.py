"""Writes the seed corpora under tests/fuzz/corpus/<target>/.

    .venv/bin/python -m tests.fuzz.make_corpus

ISO 8583 seeds are encoded by pyiso8583, an independent implementation:
terminal-87 with its ``default`` spec, iso87-ascii with ``default_ascii``,
host-87-bcd with ``tests.samples.pyiso8583_host_spec()``. Framing seeds are
valid streams for several header settings (see ``targets.framer_config``).
Seeds are small on purpose: the fuzzer mutates them, it does not need many.
"""

from __future__ import annotations

import hashlib
import pathlib

import iso8583
from iso8583.specs import default as PYISO_DEFAULT
from iso8583.specs import default_ascii as PYISO_DEFAULT_ASCII

from tests import samples
from tests.fuzz.targets import HLEN, framer_config

CORPUS = pathlib.Path(__file__).parent / "corpus"


def messages() -> dict[str, dict]:
    """Requests and responses of spec section 3, as mappings for our codec."""
    purchase = samples.terminal_0200()
    echo = {"mti": "0800", 7: "1124065412", 11: "000124", 41: "DEMO0001", 70: "301"}
    reversal = {
        "mti": "0400", 3: "000000", 4: "000000002500", 7: "1124065530", 11: "000125",
        41: "DEMO0001", 42: "DEMO00000000001", 49: "978",
        90: "0200" + "000123" + "1124065412" + "0" * 22,
    }
    settlement = {
        "mti": "0500", 3: "920000", 7: "1124230000", 11: "000126", 41: "DEMO0001",
        42: "DEMO00000000001", 74: "0000000001", 76: "0000000012",
        86: "0000000000001500", 88: "0000000000030000",
    }
    wallet = {
        "mti": "0200", 3: "000000", 4: "000000001000", 7: "1124065600", 11: "000127",
        12: "075600", 13: "1124", 22: "031", 41: "DEMO0001", 42: "DEMO00000000001",
        48: "BC018134567890123456789", 49: "978",
    }
    citycard = {
        "mti": "0200", 2: "8800123456789015", 3: "000000", 4: "000000002500",
        7: "1124065700", 11: "000128", 12: "075700", 13: "1124", 22: "071",
        41: "DEMO0001", 42: "DEMO00000000001",
        48: "CC035" + "00001" + "000000010000" + "0000000001" + "69C169C3", 49: "978",
        64: bytes.fromhex("0102030405060708"),
    }
    with_secondary = {**echo, "mti": "0810", 39: "00", 128: bytes.fromhex("A1B2C3D4E5F60718")}
    return {
        "0200-chip": purchase,
        "0210-chip": samples.terminal_0210(purchase),
        "0800-echo": echo,
        "0400-reversal": reversal,
        "0500-settlement": settlement,
        "0200-wallet": wallet,
        "0200-citycard": citycard,
        "0810-secondary-bitmap": with_secondary,
    }


def as_ascii_doc(mapping: dict) -> dict:
    """default_ascii carries binary fields as hex text."""
    doc = {"t": mapping["mti"]}
    for key, value in mapping.items():
        if key != "mti":
            doc[str(key)] = value.hex().upper() if isinstance(value, bytes) else value
    return doc


def pyiso_encode(doc: dict, spec: dict) -> bytes:
    data, _ = iso8583.encode(doc, spec)
    return bytes(data)


def codec_seeds() -> dict[str, dict[str, bytes]]:
    msgs = messages()
    host_spec = samples.pyiso8583_host_spec()
    host = {"0200-host": samples.host_0200(), "0210-host": samples.host_0210()}
    host.update({k: v for k, v in msgs.items() if k in ("0800-echo", "0400-reversal", "0500-settlement")})
    return {
        "iso8583-terminal-87": {k: pyiso_encode(samples.pyiso8583_doc(m), PYISO_DEFAULT) for k, m in msgs.items()},
        "iso8583-iso87-ascii": {k: pyiso_encode(as_ascii_doc(m), PYISO_DEFAULT_ASCII) for k, m in msgs.items()},
        "iso8583-host-87-bcd": {k: pyiso_encode(samples.pyiso8583_doc(m, host_spec), host_spec) for k, m in host.items()},
    }


def length_header(kind: str, n: int) -> bytes:
    if kind == "binary2":
        return n.to_bytes(2, "big")
    if kind == "bcd2":
        return bytes.fromhex(f"{n:04d}")
    return f"{n:04d}".encode()


def framing_seeds(payloads: list[bytes]) -> dict[str, bytes]:
    seeds = {}
    tpdu = bytes.fromhex("6000120034")
    # selector: bits 0-1 header kind, bit 2 TPDU, bits 3+ max_frame choice (0 = 8192)
    for selector in (0, 1, 2, 4, 5, 6, 8 * 4):  # last: max_frame 300
        kind, with_tpdu, max_frame = framer_config(selector)
        frames = [(tpdu + p if with_tpdu else p) for p in payloads]
        frames = [p for p in frames if len(p) <= max_frame]
        stream = b"".join(length_header(kind, len(p)) + p for p in frames)
        name = f"{kind}{'-tpdu' if with_tpdu else ''}-max{max_frame}"
        seeds[name] = bytes([selector]) + b"\x01\x02\x03\x04" + stream
        # The same stream cut off in the middle of a header: a partial tail.
        seeds[name + "-partial"] = seeds[name] + length_header(kind, 40)[: HLEN[kind] - 1]
    return seeds


def emv_seeds() -> dict[str, bytes]:
    """Field 55 data: the samples, nesting and long forms, and the vendor bugs of issue 12."""
    request = samples.icc_request()
    return {
        "request": request,
        "response": samples.icc_response(),
        "nested": bytes.fromhex("BF0C0C9F4D020B0ADF8101030102039F108181") + bytes(0x81),
        "long-0x82": bytes.fromhex("9F1082000201027103860100"),
        "hex-text": request.hex().upper().encode(),
        "truncated": request[:-5],
        "trailing": request + b"\x00\x00",
    }


def panguard_seeds() -> dict[str, bytes]:
    """Text the journal's PAN guard reads: card numbers in references, masked PANs, PAN hashes."""
    pan = samples.terminal_0200()[2]
    return {
        "reference": b"\x00ref|" + pan.encode() + b"|1124065412\x00A00001",
        "long-run": b"\x01" + pan.encode() + b"0000\x7f" + pan.encode(),
        "masked": b"\x02" + (pan[:6] + "*" * (len(pan) - 10) + pan[-4:]).encode() + b"\x7e\x7e",
        "pan-hash": b"\x00v1:" + hashlib.sha256(pan.encode()).hexdigest().encode(),
    }


def aead_seeds() -> dict[str, bytes]:
    """Card numbers sealed the way the journal seals them, under each key size."""
    pan = samples.terminal_0200()[2].encode()
    aad = b"payswitch in-flight card v1 DEMO0001|000001|1124065412|" + b"0" * 32
    nonce = b"\x01" * 12
    return {
        "aes128-card": bytes([0, len(aad) % 256]) + b"k" * 2 + nonce + aad + pan,
        "aes192-empty": bytes([1, 0, 7]) + nonce,
        "aes256-card": bytes([2, len(aad) % 256]) + b"k" * 2 + nonce + aad + pan,
        "aes256-long": bytes([2, 3, 200]) + nonce + bytes(range(256)) * 2,
    }


def clock_seeds() -> dict[str, bytes]:
    """Fields 7, 12 and 13, real and impossible, ASCII and wide digits."""
    return {
        "real": b"1124101500\x00101500\x001124",
        "leap-day": b"0229235959\x00235959\x000229",
        "bad-month": b"1324101500\x00\x00",
        "bad-second": b"\x00101560\x00",
        "wide-digit": b"11241015\x7f0\x00\x00",
        "bad-day": b"\x00\x000431",
    }


def main() -> None:
    corpora = codec_seeds()
    corpora["emv"] = emv_seeds()
    corpora["panguard"] = panguard_seeds()
    corpora["aead"] = aead_seeds()
    corpora["clock"] = clock_seeds()
    short = [b"0800", b"x", bytes(range(40))]
    corpora["framing"] = framing_seeds(short + [corpora["iso8583-terminal-87"]["0800-echo"]])
    for target, seeds in corpora.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for name, data in seeds.items():
            (directory / f"{name}-{hashlib.sha1(data).hexdigest()[:8]}").write_bytes(data)
        print(f"{directory.relative_to(CORPUS.parent.parent.parent)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
