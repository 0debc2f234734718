"""Route lookup speed: the compiled table against a pure-Python prefix dict, same run, same rules.

    .venv/bin/python -m pytest benchmarks/test_routing.py --benchmark-enable -q

5,000 random BIN / code ranges of 2..11 digits (seeded) on top of the demo
card routes of spec 7; a third of them carry conditions. Each case is one
decoded message: hits at different prefix depths, a fall-through past a rule
whose conditions fail, and a miss.
"""
import random

import pytest

from native.routing import RouteTable, luhn_ok

SEED = 8583
RANGES = 5_000
DEMO = [("4", "4", 0), ("5", "5", 1), ("2", "2", 1), ("62", "62", 2), ("8800", "8800", 3)]
MESSAGE = ("0200", "000000", "DEMO00000000001", "978", 2500)


def random_rules():
    rng = random.Random(SEED)
    rules = [(start, end, target, {}) for start, end, target in DEMO]
    for target in range(10, 10 + RANGES):
        length = rng.randint(2, 11)
        # Numbers starting with 9 miss on purpose, and with 49 only the demo "4" covers them.
        while True:
            start = rng.randint(10 ** (length - 1), 9 * 10 ** (length - 1) - 1)
            end = min(start + rng.randint(0, 20), 9 * 10 ** (length - 1) - 1)
            if end < 49 * 10 ** (length - 2) or start >= 50 * 10 ** (length - 2):
                break
        conditions = {}
        if rng.random() < 0.33:
            conditions = rng.choice([
                {"mti_classes": ["01", "02"]},
                {"currencies": ["978", "840"]},
                {"processing_codes": ["00"], "max_amount": 100_000},
            ])
        rules.append((str(start).zfill(length), str(end).zfill(length), target, conditions))
    return rules


class PrefixDict:
    """The obvious pure-Python table: every prefix in a dict, probed longest first."""

    def __init__(self, rules):
        self.entries = {}
        for start, end, target, conditions in rules:
            for key in range(int(start), int(end) + 1):
                self.entries.setdefault(str(key).zfill(len(start)), []).append((target, conditions))
        self.lengths = sorted({len(start) for start, *_ in rules}, reverse=True)

    def lookup(self, number, mti, processing_code, merchant, currency, amount):
        if not (number.isascii() and number.isdigit()):
            return -1
        for length in self.lengths:
            if length > len(number):
                continue
            for target, conditions in self.entries.get(number[:length], ()):
                if not conditions:
                    return target
                if "mti_classes" in conditions and (mti is None or mti[:2] not in conditions["mti_classes"]):
                    continue
                if "currencies" in conditions and currency not in conditions["currencies"]:
                    continue
                if "processing_codes" in conditions and (
                        processing_code is None or processing_code[:2] not in conditions["processing_codes"]):
                    continue
                if "max_amount" in conditions and (amount is None or amount > conditions["max_amount"]):
                    continue
                return target
        return -1


def python_luhn_ok(pan):
    if not (12 <= len(pan) <= 19 and pan.isascii() and pan.isdigit()):
        return False
    total = 0
    for i, c in enumerate(reversed(pan)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def pan_in(start, length=16):
    return (start + "0123456789" * 2)[:length]


@pytest.fixture(scope="module")
def tables():
    rules = random_rules()
    table = RouteTable()
    for start, end, target, conditions in rules:
        table.add(start, end, target, **conditions)
    table.compile()
    reference = PrefixDict(rules)

    plain = [r for r in rules if not r[3]]
    deep = next(r for r in plain if len(r[0]) == 11 and table.candidates(pan_in(r[0]))[0] == r[2])
    mid = next(r for r in plain if len(r[0]) == 6 and table.candidates(pan_in(r[0]))[0] == r[2])
    guarded = next(r for r in rules if len(r[0]) >= 8 and r[3].get("currencies"))
    shallow = "4912345678901234"
    assert table.candidates(shallow) == [0]
    cases = {
        "deep-11": (pan_in(deep[0]), *MESSAGE),
        "mid-6": (pan_in(mid[0]), *MESSAGE),
        "shallow-1": (shallow, *MESSAGE),
        "fallthrough": (pan_in(guarded[0]), "0200", "000000", "DEMO00000000001", "036", 2500),
        "miss": ("9" + "1" * 15, *MESSAGE),
    }
    for name, message in cases.items():
        assert table.lookup(*message) == reference.lookup(*message), name
    assert table.lookup(*cases["miss"]) == -1
    assert table.lookup(*cases["fallthrough"]) not in (-1, guarded[2])
    return table, reference, cases


CASES = ["deep-11", "mid-6", "shallow-1", "fallthrough", "miss"]


@pytest.mark.parametrize("case", CASES)
def test_lookup_compiled(benchmark, tables, case):
    table, _, cases = tables
    benchmark(table.lookup, *cases[case])


@pytest.mark.parametrize("case", CASES)
def test_lookup_python_dict(benchmark, tables, case):
    _, reference, cases = tables
    benchmark(reference.lookup, *cases[case])


def test_luhn_ok_compiled(benchmark):
    assert benchmark(luhn_ok, "4111111111111111")


def test_luhn_ok_python(benchmark):
    assert benchmark(python_luhn_ok, "4111111111111111")


def test_compile_5000_ranges(benchmark):
    rules = random_rules()

    def build():
        table = RouteTable()
        for start, end, target, conditions in rules:
            table.add(start, end, target, **conditions)
        table.compile()
        return table

    assert len(benchmark(build)) == len(rules)
