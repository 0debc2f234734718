"""ISO 9564-1 PIN blocks: formats 0 and 3 (8 bytes, TDES) and 4 (16 bytes, AES).

Clear PIN blocks exist only inside a security module (or a terminal). A
block that does not decrypt to a valid block of an accepted format raises
:class:`PinBlockError` with one message, :data:`UNUSABLE`, whatever is wrong
inside it (format, length or fill nibbles, digits): which check failed is
the decrypted block's content, and telling it apart in a log or an error
would let whoever can send blocks and read logs learn the clear block a
nibble at a time (an oracle, PCI PIN security). Errors about what is public
(the encrypted block's length, a key that cannot carry an accepted format,
a format that cannot be produced, the PIN or PAN given to build a block)
say what is wrong. None quotes the block, the PIN or the PAN; the pipeline
answers 55 (spec section 8) on :class:`PinBlockError`.

Format 1 is recognised so that it can be refused by name; the module never
produces it (PIN translation never goes into format 1).
"""
from __future__ import annotations

from .ciphers import aes_decrypt, aes_encrypt, tdes_decrypt, tdes_encrypt, xor
from ..entropy import random_bytes

__all__ = [
    "PinBlockError",
    "UNUSABLE",
    "FORMATS",
    "pan_field",
    "encode_format0",
    "encode_format3",
    "encode_format4",
    "decode",
    "encipher_format4",
    "decipher_format4",
    "decipher",
    "encipher",
    "translate",
]

FORMATS = (0, 3, 4)  # formats a block may arrive in or be translated to
UNUSABLE = "the PIN block is not usable"  # every fault inside a clear block: no oracle (module docstring)


class PinBlockError(ValueError):
    """A PIN block (or the PIN / PAN given for one) is not valid. Answer 55."""


def _check_pin(pin: str) -> None:
    if not (4 <= len(pin) <= 12) or not pin.isascii() or not pin.isdigit():
        raise PinBlockError(f"PIN must be 4 to 12 digits, got {len(pin)} characters")


def _check_pan(pan: str) -> None:
    if not pan or len(pan) > 19 or not pan.isascii() or not pan.isdigit():
        raise PinBlockError(f"PAN must be 1 to 19 digits, got {len(pan)} characters")


def pan_field(pan: str) -> bytes:
    """Formats 0 and 3: four zero nibbles + the 12 rightmost PAN digits excluding the check digit."""
    _check_pan(pan)
    if len(pan) < 2:
        raise PinBlockError("PAN must have at least 2 digits for formats 0 and 3")
    return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))


def _fill_random(n: int, low: int) -> str:
    """``n`` random fill nibbles in ``low``..15 (format 3: A-F), uniform (bytes past the
    last whole multiple of the span are drawn again).  From :mod:`switch.entropy`:
    ``secrets`` would release the interpreter lock on the event loop's thread."""
    span = 16 - low
    limit = 256 - 256 % span
    fill: list[str] = []
    while len(fill) < n:
        fill.extend("%X" % (low + b % span) for b in random_bytes(n) if b < limit)
    return "".join(fill[:n])


def encode_format0(pin: str, pan: str) -> bytes:
    _check_pin(pin)
    field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return xor(field, pan_field(pan))


def encode_format3(pin: str, pan: str) -> bytes:
    _check_pin(pin)
    head = f"3{len(pin):X}{pin}"
    field = bytes.fromhex(head + _fill_random(16 - len(head), 10))
    return xor(field, pan_field(pan))




def pan_field4(pan: str) -> bytes:
    """Format 4 PAN field: M (PAN length - 12, 0 for shorter PANs left-padded to 12) + PAN + zeros."""
    _check_pan(pan)
    m = max(len(pan) - 12, 0)
    return bytes.fromhex((f"{m:X}" + pan.rjust(12, "0")).ljust(32, "0"))


def encode_format4(pin: str) -> bytes:
    """The clear format 4 PIN field (16 bytes): 4, N, PIN, A fill, 8 random bytes."""
    _check_pin(pin)
    return bytes.fromhex(f"4{len(pin):X}{pin}".ljust(16, "A")) + random_bytes(8)


def encipher_format4(key: bytes, pin_field: bytes, pan: str) -> bytes:
    """ISO 9564-1 format 4 encipherment: E(K, E(K, PIN field) xor PAN field)."""
    return aes_encrypt(key, xor(aes_encrypt(key, pin_field), pan_field4(pan)))


def decipher_format4(key: bytes, block: bytes, pan: str) -> bytes:
    if len(block) != 16:
        raise PinBlockError(f"format 4 PIN block must be 16 bytes, got {len(block)}")
    return aes_decrypt(key, xor(aes_decrypt(key, block), pan_field4(pan)))


def decode(clear: bytes, pan: str) -> tuple[int, str]:
    """The format and PIN of a clear block (formats 0 and 3 XORed with the PAN field, 4 its PIN field).

    Raises :class:`PinBlockError` with :data:`UNUSABLE` for any fault inside
    the block (format 1 included: it is not bound to the PAN), naming none.
    """
    if len(clear) == 16:
        digits = clear[:8].hex().upper()
        fmt, fill_ok = 4, "A"
    elif len(clear) == 8:
        fmt = clear[0] >> 4
        digits = xor(clear, pan_field(pan)).hex().upper() if fmt in (0, 3) else ""
        fill_ok = "F" if fmt == 0 else "ABCDEF"
    else:
        raise PinBlockError(f"PIN block must be 8 or 16 bytes, got {len(clear)}")
    n = int(digits[1], 16) if digits and digits[0] == str(fmt) else 0
    pin, fill = digits[2 : 2 + n], digits[2 + n :]
    if not 4 <= n <= 12 or not pin.isdigit() or not set(fill) <= set(fill_ok):
        raise PinBlockError(UNUSABLE)
    return fmt, pin


def _check_key_fits_format(algorithm: str, fmt: int) -> None:
    if fmt == 4 and algorithm != "aes":
        raise PinBlockError("format 4 needs an AES key")
    if fmt in (0, 3) and algorithm != "tdes":
        raise PinBlockError(f"format {fmt} needs a TDES key")


def decipher(key: bytes, algorithm: str, block: bytes, pan: str, accept: tuple[int, ...] = FORMATS) -> tuple[int, str]:
    """Format and PIN of an encrypted block: TDES keys carry formats 0/3 (8 bytes), AES keys format 4 (16 bytes)."""
    if algorithm not in ("tdes", "aes"):
        raise ValueError(f"algorithm must be 'tdes' or 'aes', got {algorithm!r}")
    if not any((f == 4) == (algorithm == "aes") for f in accept):
        raise PinBlockError(f"PIN block format {'4' if algorithm == 'aes' else '0 or 3'} is not accepted here")
    if algorithm == "tdes":
        if len(block) != 8:
            raise PinBlockError(f"a PIN block under a TDES key is 8 bytes, got {len(block)}")
        fmt, pin = decode(tdes_decrypt(key, block), pan)
    else:
        fmt, pin = decode(decipher_format4(key, block, pan), pan)
    if fmt not in accept:  # format 0 where only 3 is accepted, or the other way round: inside the block too
        raise PinBlockError(UNUSABLE)
    return fmt, pin


def encipher(key: bytes, algorithm: str, fmt: int, pin: str, pan: str) -> bytes:
    """A new block of format 0, 3 or 4 under ``key``. Format 1 is never produced."""
    if fmt not in FORMATS:
        raise PinBlockError(f"PIN block format {fmt} cannot be produced (0, 3 or 4)")
    _check_key_fits_format(algorithm, fmt)
    if fmt == 4:
        return encipher_format4(key, encode_format4(pin), pan)
    clear = encode_format0(pin, pan) if fmt == 0 else encode_format3(pin, pan)
    return tdes_encrypt(key, clear)


def translate(
    source_key: bytes,
    source_algorithm: str,
    block: bytes,
    pan: str,
    destination_key: bytes,
    destination_algorithm: str,
    destination_format: int,
    accept: tuple[int, ...] = FORMATS,
) -> bytes:
    """Decrypt under the source key, check, re-encrypt under the destination key; same PIN, same PAN."""
    _, pin = decipher(source_key, source_algorithm, block, pan, accept)
    return encipher(destination_key, destination_algorithm, destination_format, pin, pan)
