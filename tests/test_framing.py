"""native.framing: length-prefixed framing of the terminal interface (spec section 1).

Every stream is fed three ways (h11 tests/test_io.py style): whole, one byte
at a time, and followed by the first bytes of the next frame.
"""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import native.framing
from native.framing import FrameError, Framer, reply_tpdu, split_tpdu

HEADERS = ["binary2", "bcd2", "ascii4"]
HLEN = {"binary2": 2, "bcd2": 2, "ascii4": 4}


def header(kind, n):
    """The length header, written independently of the code under test."""
    if kind == "binary2":
        return n.to_bytes(2, "big")
    if kind == "bcd2":
        return bytes.fromhex(f"{n:04d}")
    return f"{n:04d}".encode()


def frame(kind, payload):
    return header(kind, len(payload)) + payload


def check_stream(make, data, expected, next_frame):
    """Feed data three ways; it must yield exactly `expected` and hold nothing back.

    next_frame is a further valid frame, used as trailing bytes.
    """
    # 1. Whole.
    f = make()
    assert f.feed(data) == expected
    assert f.buffered == 0

    # 2. One byte at a time: each payload comes out with its last byte, not before.
    f = make()
    got = []
    for i in range(len(data)):
        got += f.feed(data[i : i + 1])
        assert f.buffered <= HLEN[f.header] + f.max_frame
    assert got == expected
    assert f.buffered == 0
    assert f.feed(b"") == []

    # 3. With trailing bytes of the next frame, which must stay buffered.
    for cut in (1, len(next_frame) - 1):
        f = make()
        assert f.feed(data + next_frame[:cut]) == expected
        assert f.buffered == cut
        assert f.feed(next_frame[cut:]) == [next_frame[HLEN[f.header] :]]
        assert f.buffered == 0


def check_error(make, data, expected_before, error_at, match):
    """Feed data three ways; the FrameError must come with byte `error_at` (0-based), at once."""
    # 1. Whole (and with anything after it: nothing later is read).
    for tail in (b"", b"\x00\x05hello" * 3):
        f = make()
        with pytest.raises(FrameError, match=match) as exc_info:
            f.feed(data + tail)
        assert exc_info.value.frames == expected_before
        with pytest.raises(FrameError, match="broken by an earlier error"):
            f.feed(b"\x00\x01x")

    # 2. One byte at a time: no error before byte error_at, error exactly on it.
    f = make()
    got = []
    for i in range(error_at):
        got += f.feed(data[i : i + 1])
    assert got == expected_before
    with pytest.raises(FrameError, match=match) as exc_info:
        f.feed(data[error_at : error_at + 1])
    assert exc_info.value.frames == []
    with pytest.raises(FrameError, match="broken by an earlier error"):
        f.feed(data[error_at + 1 :] + b"\x00")

    # 3. Good frames in one chunk, the violation in the next.
    split = sum(HLEN[f.header] + len(p) for p in expected_before)
    f = make()
    assert f.feed(data[:split]) == expected_before
    with pytest.raises(FrameError, match=match) as exc_info:
        f.feed(data[split:])
    assert exc_info.value.frames == []
    return exc_info.value


@pytest.mark.parametrize("kind", HEADERS)
@pytest.mark.parametrize(
    "payloads",
    [
        [b"x"],
        [b"0800\x82\x20"],
        [b"a", b"bc", b"def"],
        [bytes(range(256)) * 4, b"\x00", b"\xff" * 300],
    ],
)
def test_frames(kind, payloads):
    data = b"".join(frame(kind, p) for p in payloads)
    check_stream(lambda: Framer(kind), data, payloads, frame(kind, b"next frame"))


@pytest.mark.parametrize("kind", HEADERS)
def test_largest_frame(kind):
    payload = b"\xa5" * 8192
    check_stream(lambda: Framer(kind), frame(kind, payload), [payload], frame(kind, b"n!"))


def test_largest_binary_frame_at_header_capacity():
    payload = bytes(65535)
    f = Framer("binary2", max_frame=65535)
    assert f.feed(b"\xff\xff" + payload) == [payload]


@pytest.mark.parametrize("kind", HEADERS)
def test_header_values(kind):
    # Every digit position of the header is read with its weight.
    for n in (1, 9, 10, 99, 100, 999, 1000, 1234, 4321, 8192):
        payload = bytes([n % 251]) * n
        assert Framer(kind).feed(frame(kind, payload)) == [payload]
        assert Framer(kind).encode(payload) == frame(kind, payload)


@pytest.mark.parametrize("kind", HEADERS)
def test_oversized_declared_length_raises_on_header_alone(kind):
    good = [b"first"]
    data = frame(kind, b"first") + header(kind, 9000)
    error_at = len(data) - 1
    exc = check_error(
        lambda: Framer(kind), data, good, error_at, r"^declared length 9000 exceeds maximum 8192 "
    )
    assert exc.offset == HLEN[kind] + 5
    assert str(exc) == f"declared length 9000 exceeds maximum 8192 (frame at stream offset {HLEN[kind] + 5})"


@pytest.mark.parametrize("kind", HEADERS)
def test_custom_max_frame(kind):
    f = Framer(kind, max_frame=100)
    assert f.feed(frame(kind, b"y" * 100)) == [b"y" * 100]
    with pytest.raises(FrameError, match="^declared length 101 exceeds maximum 100 "):
        f.feed(header(kind, 101))
    with pytest.raises(FrameError, match="101 bytes exceeds maximum 100"):
        Framer(kind, max_frame=100).encode(b"y" * 101)


def test_binary_length_over_maximum_is_caught_for_every_high_byte():
    for hi in range(0x20, 0x100):
        with pytest.raises(FrameError, match="exceeds maximum 8192"):
            Framer().feed(bytes([hi, 0x01]))


@pytest.mark.parametrize("kind", HEADERS)
def test_zero_length(kind):
    data = frame(kind, b"ok") + header(kind, 0)
    exc = check_error(lambda: Framer(kind), data, [b"ok"], len(data) - 1, r"^declared length 0 ")
    assert exc.offset == HLEN[kind] + 2


@pytest.mark.parametrize("bad", [b"\x0a\x00", b"\xa0\x00", b"\x00\x0f", b"\x00\xf0", b"\xff\xff"])
def test_bad_bcd_digits(bad):
    data = frame("bcd2", b"ok") + bad
    exc = check_error(
        lambda: Framer("bcd2"), data, [b"ok"], len(data) - 1,
        rf"^length header is not 4 packed BCD digits: byte {4 if bad[0] in (0x0a, 0xa0, 0xff) else 5} is not"
        r" two BCD digits \(frame at stream offset 4\)$",
    )
    assert bad.hex() not in str(exc)
    assert exc.offset == 4


@pytest.mark.parametrize("bad", [b"12a4", b" 123", b"+123", b"-001", b"000\x00", b"1/00", b"1:00"])
def test_bad_ascii_digits(bad):
    data = frame("ascii4", b"ok") + bad
    exc = check_error(
        lambda: Framer("ascii4"), data, [b"ok"], len(data) - 1, r"is not 4 ASCII digits"
    )
    first = next(i for i, c in enumerate(bad) if not 0x30 <= c <= 0x39)
    assert str(exc) == f"length header is not 4 ASCII digits: byte {6 + first} is not a digit (frame at stream offset 6)"


TPDU = bytes.fromhex("6000120034")


@pytest.mark.parametrize("kind", HEADERS)
def test_tpdu_stays_in_payload(kind):
    payloads = [TPDU + b"0800\x82\x20", TPDU, bytes.fromhex("6099998888") + b"x" * 100]
    data = b"".join(frame(kind, p) for p in payloads)
    check_stream(lambda: Framer(kind, tpdu=True), data, payloads, frame(kind, TPDU + b"next"))


@pytest.mark.parametrize("kind", HEADERS)
def test_tpdu_declared_length_too_short(kind):
    data = frame(kind, TPDU) + header(kind, 4)
    check_error(
        lambda: Framer(kind, tpdu=True), data, [TPDU], len(data) - 1,
        r"^declared length 4 is shorter than the 5-byte TPDU \(frame at stream offset",
    )


@pytest.mark.parametrize("kind", HEADERS)
def test_bad_tpdu_id_raises_on_first_body_byte(kind):
    good = TPDU + b"0800"
    data = frame(kind, good) + header(kind, 20) + b"\x61"
    offset = HLEN[kind] + len(good)
    exc = check_error(
        lambda: Framer(kind, tpdu=True), data, [good], len(data) - 1,
        rf"^TPDU ID 0x61 is not 0x60 \(frame at stream offset {offset}, byte {offset + HLEN[kind]}\)$",
    )
    assert exc.offset == offset


def test_split_tpdu():
    assert split_tpdu(TPDU + b"0200") == (TPDU, b"0200")
    assert split_tpdu(TPDU) == (TPDU, b"")
    assert split_tpdu(bytearray(TPDU + b"x")) == (TPDU, b"x")
    with pytest.raises(FrameError, match="^payload of 4 bytes is shorter than the 5-byte TPDU$"):
        split_tpdu(TPDU[:4])
    with pytest.raises(FrameError, match="shorter than the 5-byte TPDU"):
        split_tpdu(b"")
    with pytest.raises(FrameError, match="^TPDU ID 0x30 is not 0x60$"):
        split_tpdu(b"0200" + TPDU)


def test_reply_tpdu_swaps_destination_and_source():
    assert reply_tpdu(bytes.fromhex("6000120034")) == bytes.fromhex("6000340012")
    assert reply_tpdu(reply_tpdu(TPDU)) == TPDU
    with pytest.raises(FrameError, match="^TPDU must be 5 bytes, got 6$"):
        reply_tpdu(TPDU + b"x")
    with pytest.raises(FrameError, match="^TPDU ID 0x70 is not 0x60$"):
        reply_tpdu(b"\x70\x00\x01\x00\x02")


@pytest.mark.parametrize("kind", HEADERS)
def test_encode_errors(kind):
    f = Framer(kind)
    with pytest.raises(FrameError, match="^cannot encode an empty payload$"):
        f.encode(b"")
    with pytest.raises(FrameError, match="^payload of 8193 bytes exceeds maximum 8192$"):
        f.encode(bytes(8193))
    t = Framer(kind, tpdu=True)
    with pytest.raises(FrameError, match="shorter than the 5-byte TPDU"):
        t.encode(b"\x60\x00")
    with pytest.raises(FrameError, match="^TPDU ID 0x30 is not 0x60$"):
        t.encode(b"0800" + TPDU)
    assert t.encode(TPDU + b"0810") == frame(kind, TPDU + b"0810")


def test_constructor_checks():
    with pytest.raises(ValueError, match="unknown length header 'bcd4'"):
        Framer("bcd4")
    with pytest.raises(ValueError, match=r"max_frame 10000 out of range 1\.\.9999 for header 'bcd2'"):
        Framer("bcd2", max_frame=10000)
    with pytest.raises(ValueError, match=r"max_frame 65536 out of range 1\.\.65535"):
        Framer("binary2", max_frame=65536)
    with pytest.raises(ValueError, match="out of range"):
        Framer(max_frame=0)
    with pytest.raises(ValueError, match=r"out of range 5\.\.9999 for header 'ascii4' with a TPDU"):
        Framer("ascii4", tpdu=True, max_frame=4)
    f = Framer("bcd2", tpdu=True, max_frame=500)
    assert (f.header, f.tpdu, f.max_frame, f.buffered) == ("bcd2", True, 500, 0)
    assert repr(f) == "Framer('bcd2', tpdu=True, max_frame=500, buffered=0)"


def test_subclass_without_init_is_safe():
    class Lazy(Framer):
        def __init__(self):
            pass

    assert Lazy().feed(b"\x00\x01x\x00") == [b"x"]


def test_accepts_any_buffer():
    f = Framer()
    assert f.feed(bytearray(b"\x00\x02ab\x00")) == [b"ab"]
    assert f.feed(memoryview(b"..\x03c")[2:]) == []
    assert f.feed(memoryview(b"de")) == [b"cde"]
    assert f.encode(bytearray(b"cde")) == b"\x00\x03cde"


def test_payloads_are_bytes_not_views():
    f = Framer()
    chunk = bytearray(b"\x00\x03abc\x00\x03d")
    (whole,) = f.feed(chunk)
    chunk[2:5] = b"XYZ"
    (spanning,) = f.feed(b"ef")
    assert (whole, spanning) == (b"abc", b"def")
    assert type(whole) is bytes and type(spanning) is bytes


def test_compiled():
    # No pure-Python twin: the module must be the compiled extension.
    assert native.framing.__file__.endswith(".so")


@st.composite
def streams(draw):
    kind = draw(st.sampled_from(HEADERS))
    tpdu = draw(st.booleans())
    body = st.binary(min_size=1, max_size=300)
    if tpdu:
        body = st.builds(lambda t, b: b"\x60" + t + b, st.binary(min_size=4, max_size=4), st.binary(max_size=300))
    payloads = draw(st.lists(body, max_size=12))
    return kind, tpdu, payloads


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0, max_value=400), max_size=30), st.data())
def test_roundtrip_random_chunkings(stream, cuts, data):
    kind, tpdu, payloads = stream
    f = Framer(kind, tpdu=tpdu)
    wire = b"".join(f.encode(p) for p in payloads)
    assert wire == b"".join(frame(kind, p) for p in payloads)
    cut_points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    got = []
    for start, stop in zip(cut_points, cut_points[1:]):
        got += f.feed(wire[start:stop])
        assert f.buffered <= HLEN[kind] + f.max_frame
    assert got == payloads
    assert f.buffered == 0
    # A partial trailing frame stays buffered, whole.
    if payloads:
        tail = f.encode(payloads[0])
        keep = data.draw(st.integers(min_value=1, max_value=len(tail) - 1))
        assert f.feed(tail[:keep]) == []
        assert f.buffered == keep


def test_one_big_chunk_is_linear():
    # 1000 frames in one chunk, and one 8 KiB frame trickled byte by byte:
    # both must stay far from quadratic (generous bounds for a shared CI box).
    f = Framer()
    chunk = b"".join(frame("binary2", b"0200" + bytes([i % 256]) * 150) for i in range(1000))
    t0 = time.perf_counter()
    for _ in range(20):
        assert len(f.feed(chunk)) == 1000
    assert time.perf_counter() - t0 < 1.0

    big = frame("binary2", bytes(8192))
    t0 = time.perf_counter()
    out = []
    for i in range(len(big)):
        out += f.feed(big[i : i + 1])
    assert out == [bytes(8192)]
    assert time.perf_counter() - t0 < 1.0


def test_a_header_alone_reserves_no_body():
    # Issue 8: a 2-byte header declaring 8 KiB must not allocate 8 KiB; the
    # frame's buffer grows with the bytes that actually arrive.
    import tracemalloc

    framers = [Framer() for _ in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for f in framers:
            assert f.feed(b"\x20\x00") == []  # declares 8192 bytes
            assert f.feed(b"0200") == []
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1000 * 256, f"{grown} bytes for 1000 stalled frames"
    # and the frame still completes byte-exact
    f = framers[0]
    assert f.feed(b"x" * 8187) == []
    assert f.feed(b"y") == [b"0200" + b"x" * 8187 + b"y"]
    assert f.buffered == 0
