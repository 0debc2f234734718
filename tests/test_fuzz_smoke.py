"""The fuzz targets, run briefly without atheris or ASan (tests/fuzz/targets.py).

Replays each seed corpus and a few thousand mutated and random inputs, so that
`make test` exercises the same code paths as `tests/fuzz/run.sh` (which fuzzes
them for minutes on an AddressSanitizer build) and a target that rots fails here.
"""

import pathlib
import random

import pytest

from tests.fuzz import targets

CORPUS = pathlib.Path(__file__).parent / "fuzz" / "corpus"


def seeds(target: str) -> list[bytes]:
    files = sorted((CORPUS / target).iterdir())
    assert files, f"empty seed corpus for {target}"
    return [f.read_bytes() for f in files]


def mutations(rng: random.Random, seed: bytes, count: int):
    """Cheap libFuzzer-like mutations: flip, overwrite, insert, erase, truncate, splice."""
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1 and pos < len(data):
                data[pos] = rng.choice((0x00, 0x30, 0x39, 0x60, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif op == 2:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 3:
                del data[pos : pos + rng.randint(1, 8)]
            elif op == 4:
                del data[pos:]
            else:
                other = rng.randrange(len(data) + 1)
                data[pos:pos] = data[other : other + rng.randint(1, 16)]
        yield bytes(data)


def random_framing_input(rng: random.Random) -> bytes:
    """A selector, a chunking seed, then a stream of mostly valid frames."""
    selector = rng.randrange(256)
    kind, tpdu, max_frame = targets.framer_config(selector)
    stream = bytearray()
    for _ in range(rng.randint(0, 8)):
        n = rng.choice((1, 2, 5, rng.randint(1, 64), max_frame, max_frame + 1, rng.randint(0, 10000)))
        if kind == "binary2":
            stream += (n & 0xFFFF).to_bytes(2, "big")
        elif kind == "bcd2":
            stream += bytes.fromhex(f"{n % 10000:04d}")
        else:
            stream += f"{n % 10000:04d}".encode()
        body = bytes(rng.randrange(256) for _ in range(min(n, 80)))
        if tpdu and rng.random() < 0.9:
            body = b"\x60" + body[1:]
        stream += body
    if rng.random() < 0.2 and stream:
        stream[rng.randrange(len(stream))] = rng.randrange(256)
    return bytes([selector]) + rng.randbytes(4) + bytes(stream)


def replay(name: str, rng: random.Random, per_seed: int):
    """Target ``name`` on its seed corpus, then on ``per_seed`` mutations of each seed; the target."""
    target = targets.TARGETS[name]()
    corpus = seeds(name)
    for data in corpus:
        target(data)
    for data in corpus:
        for mutated in mutations(rng, data, per_seed):
            target(mutated)
    return target


def test_framing_target():
    rng = random.Random(8583)
    corpus = seeds("framing")
    for data in corpus:
        targets.framing_target(data)
    for data in corpus:
        for mutated in mutations(rng, data, 60):
            targets.framing_target(mutated)
    for _ in range(2000):
        targets.framing_target(random_framing_input(rng))
    for _ in range(500):
        targets.framing_target(rng.randbytes(rng.randint(0, 40)))


@pytest.mark.parametrize("dialect", targets.DIALECTS)
def test_codec_target(dialect):
    pytest.importorskip("native.iso8583", reason="the codec (native/iso8583.pyx) is not built")
    rng = random.Random(dialect)
    target = replay(f"iso8583-{dialect}", rng, 250)
    for _ in range(500):
        target(rng.randbytes(rng.randint(0, 64)))


def test_emv_target():
    rng = random.Random("emv")
    target = replay("emv", rng, 300)
    for _ in range(500):
        target(rng.randbytes(rng.randint(0, 64)))


def drawn(rng: random.Random, alphabet: bytes, count: int, longest: int):
    """``count`` inputs of 0 to ``longest`` bytes drawn from ``alphabet`` (mostly digits, a few markers)."""
    for _ in range(count):
        yield bytes(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def test_panguard_target():
    rng = random.Random("panguard")
    target = replay("panguard", rng, 400)
    for data in drawn(rng, b"0123456789" * 4 + b"\x00\x7e\x7f:av", 1000, 60):
        target(bytes([rng.randrange(4)]) + data)


def test_aead_target():
    rng = random.Random("aead")
    target = replay("aead", rng, 300)
    for _ in range(300):
        target(rng.randbytes(rng.randint(0, 120)))


def test_clock_target():
    rng = random.Random("clock")
    target = replay("clock", rng, 400)
    for data in drawn(rng, b"0123456789" * 6 + b"\x00\x7e\x7f:a", 3000, 24):
        target(data)


def test_coverage_hint_names_fields():
    # Both outcomes go through without error (the branches only matter under atheris).
    targets.coverage_hint({2: "4761739001010119", 128: b"\x00" * 8})
    targets.coverage_hint(ValueError("field 35: expected LL digits at byte 40"))
    targets.coverage_hint(ValueError("no field named"))
    assert targets._field_branch(1035) == 1035 and targets._field_branch(5000) == -1


def test_atheris_driver_runs(tmp_path):
    # The entry point run.sh uses, on the normal build: a few hundred runs over
    # the seeds. libFuzzer writes new inputs into the first corpus directory.
    pytest.importorskip("atheris")
    import subprocess
    import sys

    root = pathlib.Path(__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "tests/fuzz/fuzz.py", "framing", "-runs=300", "-seed=1", str(tmp_path), str(CORPUS / "framing")],
        cwd=root, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Done 300 runs" in proc.stderr
