"""Fuzz targets: any input either parses or raises the declared error.

Plain functions of one ``bytes`` argument, so that the same code runs under
atheris on the AddressSanitizer build (``tests/fuzz/fuzz.py``, driven by
``tests/fuzz/run.sh``) and, without either, in ``make test``
(``tests/test_fuzz_smoke.py``). Anything other than the declared error (an
unexpected exception, a failed assertion, or a sanitizer report) is a bug.

Targets (the names of the corpus directories under ``tests/fuzz/corpus/``):

- ``framing``: the input's first byte picks the header, the TPDU flag and
  ``max_frame``; the next four seed a random chunking of the rest, which is
  fed through a ``Framer``. What comes out is checked against a reference
  framer written here in plain Python (same frames, same error at the same
  stream offset, same number of bytes held back).
- ``iso8583-terminal-87``, ``iso8583-iso87-ascii``, ``iso8583-host-87-bcd``:
  ``dialect(name).decode(data)`` must give a Message or raise DecodeError;
  every field of a decoded Message is read (``fields()``, ``msg[n]``) after
  the input buffer is gone, and it is re-encoded (EncodeError is acceptable);
  what the codec encodes it must decode back to the same fields.
- ``emv``: ``native.emv`` on field 55 data: ``decode`` gives a tree or raises
  BerError with an offset inside the input, ``check`` and ``objects`` agree
  with it, the top-level objects put together are the input, and the tree
  encodes to bytes that decode to the same tree.
- ``panguard``: ``native.panguard`` (the journal's PAN guard) on text of
  every string width: the first byte picks whether two marker bytes of the
  rest become a 2-byte or a 4-byte digit, NUL bytes split the rest into
  values. ``luhn_run``, ``digit_count`` and ``is_pan_hash`` must agree with
  the regular expressions, ``str.isdigit`` and Luhn check they stand for.
- ``aead``: ``native.aead.AesGcm`` (sealed card numbers): the first byte
  picks the key size and where the rest splits into nonce, associated data
  and plaintext; encryption must equal ``cryptography``'s AESGCM, decryption
  must give the plaintext back, and the sealed bytes with one bit flipped
  (chosen by the input) must not open.
- ``clock``: ``native.clock.impossible_clock`` on fields 7, 12 and 13 made
  of the input (NUL bytes split it; two marker bytes become wide digits):
  it must agree with calendar arithmetic in Python.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from native import framing

# ---------------------------------------------------------------------------
# framing

HEADERS = ("binary2", "bcd2", "ascii4")
HLEN = {"binary2": 2, "bcd2": 2, "ascii4": 4}
CAPACITY = {"binary2": 0xFFFF, "bcd2": 9999, "ascii4": 9999}
MAX_FRAMES = (8192, 1, 5, 64, 300, None)  # None: the header's capacity


def framer_config(selector: int) -> tuple[str, bool, int]:
    kind = HEADERS[selector % 3]
    tpdu = bool(selector & 0x04)
    max_frame = MAX_FRAMES[(selector >> 3) % len(MAX_FRAMES)] or CAPACITY[kind]
    if tpdu:
        max_frame = max(max_frame, 5)
    return kind, tpdu, max_frame


def reference_frames(kind: str, tpdu: bool, max_frame: int, stream: bytes):
    """Plain-Python framer of a whole stream: (frames, error offset or None, bytes left over)."""
    hlen = HLEN[kind]
    frames, pos = [], 0
    while len(stream) - pos >= hlen:
        h = stream[pos : pos + hlen]
        if kind == "binary2":
            length = int.from_bytes(h, "big")
        elif kind == "bcd2":
            digits = h.hex()
            if not digits.isdigit():
                return frames, pos, None
            length = int(digits)
        else:
            if not all(0x30 <= c <= 0x39 for c in h):
                return frames, pos, None
            length = int(h)
        if length > max_frame or length == 0 or (tpdu and length < 5):
            return frames, pos, None
        body = stream[pos + hlen : pos + hlen + length]
        if tpdu and body and body[0] != 0x60:
            return frames, pos, None
        if len(body) < length:
            break
        frames.append(body)
        pos += hlen + length
    return frames, None, len(stream) - pos


def chunks(data: bytes, seed: bytes) -> list[bytes]:
    """Cut data at random points: often tiny pieces, sometimes large ones."""
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        style = rng.random()
        if style < 0.3:
            step = 1
        elif style < 0.8:
            step = rng.randint(1, 16)
        else:
            step = rng.randint(1, len(data) - pos)
        out.append(data[pos : pos + step])
        pos += step
    return out


def framing_target(data: bytes) -> None:
    if len(data) < 5:
        return
    kind, tpdu, max_frame = framer_config(data[0])
    stream = data[5:]
    f = framing.Framer(kind, tpdu=tpdu, max_frame=max_frame)
    want_frames, want_error_at, want_left = reference_frames(kind, tpdu, max_frame, stream)

    got: list[bytes] = []
    error = None
    for piece in chunks(stream, data[1:5]):
        try:
            got += f.feed(piece)
        except framing.FrameError as exc:
            got += exc.frames
            error = exc
            break
        assert f.buffered <= HLEN[kind] + max_frame, (f.buffered, max_frame)

    assert got == want_frames, (len(got), len(want_frames))
    if want_error_at is None:
        assert error is None, error
        assert f.buffered == want_left, (f.buffered, want_left)
    else:
        assert error is not None, "reference framer found a violation, Framer did not"
        assert error.offset == want_error_at, (error.offset, want_error_at, str(error))
        try:
            f.feed(b"\x00")
        except framing.FrameError as exc:
            assert "broken by an earlier error" in str(exc)
        else:
            raise AssertionError("a broken Framer accepted more data")

    for payload in got:
        assert 1 <= len(payload) <= max_frame
        frame = f.encode(payload)  # encode() keeps working on a broken Framer
        assert frame[HLEN[kind] :] == payload
        if tpdu:
            tpdu_bytes, _ = framing.split_tpdu(payload)
            assert framing.reply_tpdu(framing.reply_tpdu(tpdu_bytes)) == tpdu_bytes


# ---------------------------------------------------------------------------
# iso8583 codec

DIALECTS = ("terminal-87", "iso87-ascii", "host-87-bcd")


def codec_target(dialect_name: str) -> Callable[[bytes], None]:
    # Imported here so that the framing target works while the codec is absent.
    from native import iso8583

    dialect = iso8583.dialect(dialect_name)
    DecodeError, EncodeError = iso8583.DecodeError, iso8583.EncodeError

    def target(data: bytes) -> None:
        # Decode a private copy and drop it before reading fields: a Message
        # that kept a pointer into the input without holding a reference
        # shows up as a use-after-free under ASan.
        copy = bytes(bytearray(data))
        try:
            msg = dialect.decode(copy)
            del copy
            mti = msg.mti
            fields = msg.fields()  # fields may decode lazily: errors can surface here
            for n, value in fields.items():
                assert msg[n] == value, n
        except DecodeError as exc:
            coverage_hint(exc)
            return
        coverage_hint(fields)
        assert isinstance(mti, str) and len(mti) == 4, mti
        try:
            encoded = dialect.encode(msg)
        except EncodeError:
            return
        again = dialect.decode(bytes(encoded))
        assert again.mti == mti, (again.mti, mti)
        assert again.fields() == fields

    target.__name__ = f"codec_target_{dialect_name}"
    return target


def coverage_hint(outcome) -> None:
    """Turn what the codec did into Python branches that atheris can see.

    The compiled codec is only partly visible to the fuzzer; one branch per
    field number decoded (or named in a DecodeError) gives it a reason to
    keep inputs that reach new fields.
    """
    if isinstance(outcome, dict):
        for n in outcome:
            _field_branch(n)
        _size_branch(len(outcome))
    else:
        named = _FIELD_IN_ERROR.search(str(outcome))
        if named:
            _field_branch(1000 + int(named.group(1)))


_FIELD_IN_ERROR = re.compile(r"field (\d{1,3})\b")


def _generated_branches(name: str, values) -> Callable[[int], int]:
    lines = [f"def {name}(n):"]
    lines += [f"    if n == {v}:\n        return {v}" for v in values]
    lines.append("    return -1")
    scope: dict = {}
    exec("\n".join(lines), scope)  # one distinct branch per value: atheris counts them
    return scope[name]


_field_branch = _generated_branches("_field_branch", list(range(0, 129)) + list(range(1000, 1129)))
_size_branch = _generated_branches("_size_branch", range(0, 129))


# ---------------------------------------------------------------------------
# EMV BER-TLV (field 55)


def emv_target(data: bytes) -> None:
    from native import emv

    copy = bytes(bytearray(data))
    try:
        tree = emv.decode(copy)
    except emv.BerError as exc:
        assert exc.offset is not None and 0 <= exc.offset < max(len(data), 1), (exc.offset, len(data))
        try:
            emv.check(data)
        except emv.BerError as again:
            assert str(again) == str(exc)
        else:
            raise AssertionError("check() accepted what decode() refused")
        coverage_hint({exc.offset: None})
        return
    del copy
    emv.check(data)
    objects = emv.objects(data)
    assert b"".join(raw for _, raw in objects) == data
    assert [tag for tag, _ in objects] == [tag for tag, _ in tree]
    assert emv.decode(emv.encode(tree)) == tree
    coverage_hint(dict.fromkeys(range(len(tree))))


# ---------------------------------------------------------------------------
# the journal's PAN guard

_CARD_RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
_PAN_HASH = re.compile(r"v[0-9]{1,3}:[0-9a-f]{64}")


def reference_luhn_run(values: tuple) -> tuple[int, int] | None:
    from native.routing import luhn_ok  # the switch's Luhn check, apart from panguard's

    for index, value in enumerate(values):
        if type(value) is str and len(value) >= 13:
            for run in _CARD_RUN.findall(value):
                if luhn_ok(run):
                    return index, len(run)
    return None


def panguard_target(data: bytes) -> None:
    from native import panguard

    if not data:
        return
    text = data[1:].decode("latin-1")
    if data[0] & 1:
        text = text.replace("\x7f", "\u0663")  # ARABIC-INDIC DIGIT THREE: 2-byte kind
    if data[0] & 2:
        text = text.replace("\x7e", "\U0001d7ce")  # MATHEMATICAL BOLD DIGIT ZERO: 4-byte kind
    values = tuple(text.split("\x00"))
    found = panguard.luhn_run(values)
    assert found == reference_luhn_run(values), (found, values)
    for value in values:
        assert panguard.digit_count(value) == sum(map(str.isdigit, value)), value
        assert panguard.is_pan_hash(value) == bool(_PAN_HASH.fullmatch(value)), value
    coverage_hint({found[1]: None} if found else ValueError("no field"))


# ---------------------------------------------------------------------------
# aead


def aead_target(data: bytes) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from native.aead import AesGcm, InvalidTag

    if len(data) < 4:
        return
    key_len = (16, 24, 32)[data[0] % 3]
    rest = data[1:]
    key = (rest * (key_len // max(len(rest), 1) + 1))[:key_len] if rest else bytes(key_len)
    nonce = (rest + bytes(12))[:12]
    body = rest[12:]
    cut = data[1] % (len(body) + 1)
    aad, plain = body[:cut], body[cut:]
    ours = AesGcm(key)
    sealed = ours.encrypt(nonce, plain, aad)
    assert sealed == AESGCM(key).encrypt(nonce, plain, aad)
    assert ours.decrypt(nonce, sealed, aad) == plain
    bit = data[2] % (len(sealed) * 8)
    flipped = bytearray(sealed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        ours.decrypt(nonce, bytes(flipped), aad)
    except InvalidTag:
        pass
    else:
        raise AssertionError("a sealed value with a flipped bit opened")
    prefixed = ours.seal(data[:1], plain, aad)
    assert prefixed[:1] == data[:1] and ours.decrypt(prefixed[1:13], prefixed[13:], aad) == plain
    coverage_hint({len(plain) % 32: None})


# ---------------------------------------------------------------------------
# clock

_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # fields 7 and 13 carry no year


def reference_clock(value, layout: str) -> bool:
    if type(value) is not str or len(value) != len(layout) or not all("0" <= c <= "9" for c in value):
        return False
    if layout.startswith("MMDD"):
        month, day = int(value[0:2]), int(value[2:4])
        if not (1 <= month <= 12 and 1 <= day <= _MONTH_DAYS[month - 1]):
            return False
        value = value[4:]
    return not value or (int(value[0:2]) < 24 and int(value[2:4]) < 60 and int(value[4:6]) < 60)


def clock_target(data: bytes) -> None:
    from native.clock import impossible_clock

    text = data.decode("latin-1").replace("\x7f", "\u0663").replace("\x7e", "\U0001d7ce")
    parts = (text.split("\x00") + [None, None, None])[:3]
    v7, v12, v13 = (None if p == "" else p for p in parts)
    expected = 0
    for n, value, layout in ((7, v7, "MMDDhhmmss"), (12, v12, "hhmmss"), (13, v13, "MMDD")):
        if value is not None and not reference_clock(value, layout):
            expected = n
            break
    assert impossible_clock(v7, v12, v13) == expected, (v7, v12, v13)


TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "framing": lambda: framing_target,
    "emv": lambda: emv_target,
    "panguard": lambda: panguard_target,
    "aead": lambda: aead_target,
    "clock": lambda: clock_target,
    **{f"iso8583-{name}": (lambda name=name: codec_target(name)) for name in DIALECTS},
}
