"""Tests of the compiled route table (native/routing.pyx) and luhn_ok."""
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import native.routing
from native.routing import RouteTable, luhn_ok

ANY = dict(mti="0200", processing_code="000000", merchant="DEMO00000000001", currency="978", amount=2500)


def lookup(table, number, **fields):
    message = {**ANY, **fields}
    return table.lookup(number, message["mti"], message["processing_code"], message["merchant"],
                        message["currency"], message["amount"])


def table_of(*rules):
    table = RouteTable()
    for start, end, target, *conditions in rules:
        table.add(start, end, target, **(conditions[0] if conditions else {}))
    table.compile()
    return table


def test_module_is_compiled():
    assert native.routing.__file__.endswith(".so")


# ---- the demo routes of spec section 7

CARD_ROUTES = ["bank-a", "bank-b", "cup", "citycard"]
WALLET_ROUTES = ["wallet-a", "wallet-b", "cup"]


@pytest.fixture(scope="module")
def demo_card_table():
    return table_of(("4", "4", 0), ("5", "5", 1), ("2", "2", 1), ("62", "62", 2), ("8800", "8800", 3))


@pytest.fixture(scope="module")
def demo_wallet_table():
    return table_of(("25", "30", 0), ("10", "15", 1), ("62", "62", 2))


@pytest.mark.parametrize("pan, route", [
    ("4111111111111111", "bank-a"),
    ("4000000000000002", "bank-a"),
    ("5555555555554444", "bank-b"),
    ("2223003122003222", "bank-b"),
    ("6200000000000005", "cup"),
    ("6212345678901234567", "cup"),
    ("8800123456789015", "citycard"),
])
def test_demo_card_routes(demo_card_table, pan, route):
    assert CARD_ROUTES[lookup(demo_card_table, pan)] == route


@pytest.mark.parametrize("pan", ["6011111111111117", "6300000000000000", "8801000000000000",
                                 "880", "3782822463100050", "9999999999999999", "1234567890123"])
def test_demo_card_unknown_range_is_minus_one(demo_card_table, pan):
    # The switch answers 14 (spec 7: "anything else").
    assert lookup(demo_card_table, pan) == -1


@pytest.mark.parametrize("code, route", [
    ("251234567890123401", "wallet-a"),
    ("281234567890123402", "wallet-a"),
    ("301234567890123403", "wallet-a"),
    ("101234567890123404", "wallet-b"),
    ("131234567890123405", "wallet-b"),
    ("151234567890123406", "wallet-b"),
    ("6212345678901234", "cup"),
])
def test_demo_wallet_routes(demo_wallet_table, code, route):
    assert WALLET_ROUTES[lookup(demo_wallet_table, code)] == route


@pytest.mark.parametrize("code", ["241234567890123401", "311234567890123401", "091234567890123401",
                                  "161234567890123401", "6", "2", "61", "63123"])
def test_demo_wallet_unknown_code_is_minus_one(demo_wallet_table, code):
    # The switch answers 12 (spec 7).
    assert lookup(demo_wallet_table, code) == -1


# ---- priority

def test_longest_prefix_wins_whatever_the_add_order():
    table = table_of(("4", "4", 1), ("411111", "411111", 2), ("41", "42", 3))
    assert lookup(table, "4111111111111111") == 2
    assert lookup(table, "4112000000000000") == 3
    assert lookup(table, "4300000000000000") == 1
    assert table.candidates("4111111111111111") == [2]  # 3 and 1 are shadowed
    assert table_of(("411111", "411111", 2), ("4", "4", 1)).lookup("4111111111111111", *ANY.values()) == 2


def test_longer_prefix_wins_over_a_wallet_digit():
    # If card and wallet ranges share one table, 25-30 beats a route for all of 2.
    table = table_of(("2", "2", 1), ("25", "30", 2))
    assert lookup(table, "2600") == 2
    assert lookup(table, "2400") == 1


def test_same_length_overlap_first_added_wins():
    table = table_of(("400000", "449999", 1), ("420000", "499999", 2), ("420000", "420000", 3))
    assert lookup(table, "4100000000") == 1
    assert lookup(table, "4200000000") == 1
    assert lookup(table, "4500000000") == 2
    assert table.candidates("4200001111") == [1]


def test_candidates_list_rules_up_to_the_first_without_conditions():
    table = table_of(("4", "4", 1), ("41", "41", 2, dict(currencies=["978"])),
                     ("411111", "411111", 3, dict(mti_classes=["01"])), ("411111", "411111", 4),
                     ("411111", "411111", 5), ("41", "41", 6, dict(currencies=["840"])))
    assert table.candidates("4111111111111111") == [3, 4]
    assert table.candidates("4122222222222222") == [2, 6, 1]
    assert table.candidates("4") == [1]


def test_failed_conditions_fall_through_to_same_length_then_shorter():
    table = table_of(
        ("4", "4", 1),
        ("411111", "411111", 2, dict(currencies=["840"])),
        ("411111", "411111", 3, dict(currencies=["978"], max_amount=1000)),
        ("41", "41", 4, dict(mti_classes=["01"])),
    )
    assert lookup(table, "4111111111111111", currency="840") == 2
    assert lookup(table, "4111111111111111", currency="978", amount=1000) == 3
    assert lookup(table, "4111111111111111", currency="978", amount=1001) == 1
    assert lookup(table, "4111111111111111", currency="978", amount=1001, mti="0100") == 4
    assert lookup(table, "4111111111111111", currency="036", mti="0400") == 1


def test_nested_catch_all_ranges_compile_small():
    # Thousands of nested ranges without conditions: each segment keeps only its first rule.
    table = RouteTable()
    for i in range(3000):
        table.add(f"{i:06d}", f"{999999 - i:06d}", i)
    table.compile()
    assert lookup(table, "5000001234") == 0
    assert table.candidates("0029991234") == [0]


def test_target_may_repeat_and_be_large():
    table = table_of(("5", "5", 7), ("2", "2", 7), ("9", "9", 2**62))
    assert lookup(table, "51") == lookup(table, "21") == 7
    assert lookup(table, "9") == 2**62


# ---- ranges

@pytest.mark.parametrize("number, expected", [
    ("399999", -1), ("400000", 1), ("400001", 1), ("499998", 1), ("499999", 1), ("500000", -1),
    ("4000001234567890", 1), ("4999991234567890", 1), ("3999991234567890", -1), ("5000001234567890", -1),
])
def test_range_ends_are_inclusive(number, expected):
    assert lookup(table_of(("400000", "499999", 1)), number) == expected


def test_leading_zeros_count_as_digits():
    table = table_of(("0", "0", 1), ("007", "009", 2))
    assert lookup(table, "0081") == 2
    assert lookup(table, "0061") == 1
    assert lookup(table, "00") == 1
    assert lookup(table, "1") == -1


def test_nineteen_digit_bounds():
    table = table_of(("9999999999999999990", "9999999999999999999", 1), ("0000000000000000000", "0000000000000000000", 2))
    assert lookup(table, "9999999999999999999") == 1
    assert lookup(table, "9999999999999999995") == 1
    assert lookup(table, "9999999999999999989") == -1
    assert lookup(table, "0000000000000000000") == 2
    assert lookup(table, "999999999999999999") == -1  # 18 digits: shorter than the prefix


def test_numbers_longer_than_nineteen_digits_match_on_their_prefix():
    table = table_of(("62", "62", 1), ("1234567890123456789", "1234567890123456789", 2))
    assert lookup(table, "62" + "0" * 30) == 1
    assert lookup(table, "12345678901234567890123") == 2
    assert lookup(table, "62" + "0" * 30 + "x") == -1


@pytest.mark.parametrize("number", ["8", "88", "880"])
def test_number_shorter_than_prefix_does_not_match(number):
    table = table_of(("8800", "8800", 1))
    assert lookup(table, number) == -1
    assert table.candidates(number) == []


@pytest.mark.parametrize("number", ["", "4111 1111 1111 1111", "411111111111111x", "-4111", "４１１１",
                                    "4\u00b2", "4\u0663", "4111\x00", "+4", " 4"])
def test_non_digits_give_minus_one(number):
    table = table_of(("4", "4", 1))
    assert lookup(table, number) == -1
    assert table.candidates(number) == []


def test_none_number_gives_minus_one():
    assert table_of(("4", "4", 1)).lookup(None, None, None, None, None, None) == -1


def test_empty_table():
    table = table_of()
    assert len(table) == 0
    assert lookup(table, "4111111111111111") == -1
    assert table.candidates("4") == []


# ---- conditions

def test_mti_class_is_first_two_digits():
    table = table_of(("4", "4", 1, dict(mti_classes=["01", "04"])), ("4", "4", 2))
    for mti in ("0100", "0110", "0400", "0410", "0420"):
        assert lookup(table, "41", mti=mti) == 1
    for mti in ("0200", "0220", "0800", "1100", None, "", "0", "x1", "0x00"):
        assert lookup(table, "41", mti=mti) == 2


def test_processing_code_is_transaction_type():
    table = table_of(("8800", "8800", 1, dict(processing_codes=["21"])),
                     ("8800", "8800", 2, dict(processing_codes=["00", "20"])))
    assert lookup(table, "8800123456789015", processing_code="210000") == 1
    assert lookup(table, "8800123456789015", processing_code="000000") == 2
    assert lookup(table, "8800123456789015", processing_code="201000") == 2
    assert lookup(table, "8800123456789015", processing_code="310000") == -1
    assert lookup(table, "8800123456789015", processing_code=None) == -1
    assert lookup(table, "8800123456789015", processing_code="2") == -1


def test_merchant_condition_ignores_trailing_padding():
    table = table_of(("4", "4", 1, dict(merchants=["SHOP1", "DEMO00000000001"])),
                     ("4", "4", 2, dict(merchants=["SHOP2  "])))
    assert lookup(table, "41", merchant="DEMO00000000001") == 1
    assert lookup(table, "41", merchant="SHOP1          ") == 1
    assert lookup(table, "41", merchant="SHOP2") == 2
    assert lookup(table, "41", merchant="SHOP2          ") == 2
    for merchant in ("SHOP3", " SHOP1", "shop1", "", None):
        assert lookup(table, "41", merchant=merchant) == -1


def test_currency_condition():
    table = table_of(("4", "4", 1, dict(currencies=["978", "840"])), ("5", "5", 2, dict(currencies=["036"])))
    assert lookup(table, "41", currency="978") == 1
    assert lookup(table, "41", currency="840") == 1
    assert lookup(table, "51", currency="036") == 2
    for currency in ("036", "97", "9780", "97x", None):
        assert lookup(table, "41", currency=currency) == -1


def test_amount_bounds_are_inclusive():
    table = table_of(("4", "4", 1, dict(min_amount=100, max_amount=200)),
                     ("4", "4", 2, dict(min_amount=500)),
                     ("4", "4", 3, dict(max_amount=50)))
    assert [lookup(table, "41", amount=a) for a in (99, 100, 150, 200, 201, 499, 500, 10**12, 0, 50, 51)] == \
        [-1, 1, 1, 1, -1, -1, 2, 2, 3, 3, -1]
    assert lookup(table, "41", amount=None) == -1


def test_amount_beyond_int64_compares_exactly():
    table = table_of(("4", "4", 1, dict(max_amount=10**18 - 1)), ("4", "4", 2, dict(min_amount=0)))
    assert lookup(table, "41", amount=2**70) == 2
    assert lookup(table, "41", amount=-2**70) == 1
    assert table_of(("4", "4", 3, dict(min_amount=5))).lookup("41", None, None, None, None, -2**70) == -1


def test_all_conditions_together():
    table = table_of(("62", "62", 1, dict(mti_classes=["02"], processing_codes=["00"], merchants=["M1"],
                                          currencies=["156"], min_amount=1, max_amount=10**6)))
    ok = dict(mti="0200", processing_code="000000", merchant="M1", currency="156", amount=10)
    assert lookup(table, "6212", **ok) == 1
    for field, bad in [("mti", "0100"), ("processing_code", "200000"), ("merchant", "M2"),
                       ("currency", "978"), ("amount", 0)]:
        assert lookup(table, "6212", **{**ok, field: bad}) == -1
    assert table.candidates("6212") == [1]


def test_conditions_accept_any_collection():
    table = table_of(("4", "4", 1, dict(mti_classes=("02",), currencies={"978"}, merchants=iter(["M"]),
                                        processing_codes=frozenset({"00"}))))
    assert lookup(table, "4", merchant="M") == 1


# ---- life cycle and errors

def test_add_after_compile_is_refused_and_compile_is_idempotent():
    table = table_of(("4", "4", 1))
    with pytest.raises(RuntimeError, match="compiled; build a new RouteTable"):
        table.add("5", "5", 2)
    table.compile()
    assert len(table) == 1
    assert lookup(table, "41") == 1


def test_lookup_before_compile_is_refused():
    table = RouteTable()
    table.add("4", "4", 1)
    assert len(table) == 1
    with pytest.raises(RuntimeError, match=r"compile\(\) the route table before lookup\(\)"):
        lookup(table, "41")
    with pytest.raises(RuntimeError, match=r"before candidates\(\)"):
        table.candidates("41")


@pytest.mark.parametrize("start, end, target, conditions, error, message", [
    ("", "", 1, {}, ValueError, "start is empty"),
    ("4", "", 1, {}, ValueError, "end is empty"),
    ("4a", "49", 1, {}, ValueError, "start '4a' has a character other than 0-9"),
    ("40", "4 ", 1, {}, ValueError, "end '4 ' has a character other than 0-9"),
    ("4\u0663", "49", 1, {}, ValueError, "other than 0-9"),
    ("-4", "-4", 1, {}, ValueError, "other than 0-9"),
    ("4", "49", 1, {}, ValueError, r"start '4' and end '49' differ in length \(1 and 2 digits\)"),
    ("30", "25", 1, {}, ValueError, "start '30' is greater than end '25'"),
    ("1" * 20, "1" * 20, 1, {}, ValueError, "longer than 19 digits"),
    (4, "4", 1, {}, TypeError, "start must be a str of digits, got int"),
    ("4", "4", -1, {}, ValueError, r"target -1 is outside 0\.\."),
    ("4", "4", 2**63, {}, ValueError, "target .* is outside"),
    ("4", "4", "1", {}, TypeError, "target must be an int, got str"),
    ("4", "4", True, {}, TypeError, "target must be an int, got bool"),
    ("4", "4", 1, dict(mti_classes="02"), TypeError, "mti_classes must be a collection of strings, not a single str"),
    ("4", "4", 1, dict(mti_classes=[]), ValueError, "mti_classes is empty; use None to allow any value"),
    ("4", "4", 1, dict(mti_classes=["0200"]), ValueError, "mti_classes entry '0200' is not a 2-digit string"),
    ("4", "4", 1, dict(mti_classes=[2]), ValueError, "mti_classes entry 2 is not a 2-digit string"),
    ("4", "4", 1, dict(processing_codes=["000000"]), ValueError, "processing_codes entry '000000' is not a 2-digit"),
    ("4", "4", 1, dict(currencies=["EUR"]), ValueError, "currencies entry 'EUR' is not a 3-digit string"),
    ("4", "4", 1, dict(currencies=978), TypeError, "currencies must be a collection of strings, got int"),
    ("4", "4", 1, dict(merchants=["  "]), ValueError, "merchants entry '  ' is blank"),
    ("4", "4", 1, dict(merchants=[1]), TypeError, "merchants entry 1 is not a str"),
    ("4", "4", 1, dict(merchants=b"M1"), TypeError, "not a single bytes"),
    ("4", "4", 1, dict(min_amount=-1), ValueError, r"min_amount -1 is outside 0\.\.999999999999999999"),
    ("4", "4", 1, dict(max_amount=10**18), ValueError, "max_amount 1000000000000000000 is outside"),
    ("4", "4", 1, dict(max_amount=1.5), TypeError, r"max_amount must be an int \(minor units\), got float"),
    ("4", "4", 1, dict(min_amount=5, max_amount=4), ValueError, "min_amount 5 is greater than max_amount 4"),
])
def test_bad_rules_are_rejected(start, end, target, conditions, error, message):
    table = RouteTable()
    with pytest.raises(error, match=message):
        table.add(start, end, target, **conditions)
    assert len(table) == 0


def test_wrong_types_at_lookup_are_caller_bugs():
    table = table_of(("4", "4", 1))
    with pytest.raises(TypeError):
        table.lookup(b"41", None, None, None, None, None)
    with pytest.raises(TypeError):
        table.lookup("41", None, None, None, None, "100")


# ---- luhn_ok

@pytest.mark.parametrize("pan", ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117",
                                 "4012888888881881", "6200000000000005", "3530111333300000", "000000000000",
                                 "0000000000000000000", "6011000990139424", "4222222222222"])
def test_luhn_good(pan):
    assert luhn_ok(pan)


@pytest.mark.parametrize("pan", ["4111111111111112", "5555555555554445", "378282246310006", "4111111111111121",
                                 "", "0000000000", "00000000000", "00000000000000000000",
                                 "4111 1111 1111 1111", "411111111111111x", "４１１１１１１１１１１１１１１１",
                                 "41111111111111\u00b21"])
def test_luhn_bad(pan):
    assert not luhn_ok(pan)


def test_luhn_catches_every_single_digit_error():
    pan = "4111111111111111"
    for i in range(len(pan)):
        for d in "0123456789":
            if d != pan[i]:
                assert not luhn_ok(pan[:i] + d + pan[i + 1:])


# ---- differential test against a pure-Python reading of the rules

@dataclass
class Rule:
    start: str
    end: str
    target: int
    conditions: dict


def reference_lookup(rules, number, mti, processing_code, merchant, currency, amount, conditions=True):
    """Every matching rule, best first: a literal reading of the documented semantics.

    With conditions=False: every rule covering number, up to the first without conditions.
    """
    if number is None or not number or any(c not in "0123456789" for c in number):
        return []

    def leading_two(value):
        return value[:2] if value is not None and len(value) >= 2 and all(c in "0123456789" for c in value[:2]) else None

    def conditions_hold(c):
        if "mti_classes" in c and leading_two(mti) not in c["mti_classes"]:
            return False
        if "processing_codes" in c and leading_two(processing_code) not in c["processing_codes"]:
            return False
        if "merchants" in c and (merchant is None or merchant.rstrip(" ") not in {m.rstrip(" ") for m in c["merchants"]}):
            return False
        if "currencies" in c and currency not in c["currencies"]:
            return False
        if ("min_amount" in c or "max_amount" in c) and amount is None:
            return False
        if "min_amount" in c and amount < c["min_amount"]:
            return False
        if "max_amount" in c and amount > c["max_amount"]:
            return False
        return True

    found = []
    for index, rule in enumerate(rules):
        length = len(rule.start)
        if len(number) >= length and int(rule.start) <= int(number[:length]) <= int(rule.end):
            if not conditions or conditions_hold(rule.conditions):
                found.append((-length, index, rule.target))
    if not conditions:
        found.sort()
        for k, (_, index, _) in enumerate(found):
            if not rules[index].conditions:
                del found[k + 1:]
                break
    return [target for _, _, target in sorted(found)]


DIGITS = "04579"  # few distinct digits, so that random ranges nest and overlap


@st.composite
def rules(draw):
    length = draw(st.integers(1, 4))
    a = draw(st.text(DIGITS, min_size=length, max_size=length))
    b = draw(st.text(DIGITS, min_size=length, max_size=length))
    start, end = sorted([a, b])
    conditions = {}
    if draw(st.booleans()):
        conditions["mti_classes"] = draw(st.sets(st.sampled_from(["01", "02", "04"]), min_size=1))
    if draw(st.booleans()):
        conditions["processing_codes"] = draw(st.sets(st.sampled_from(["00", "20", "31"]), min_size=1))
    if draw(st.booleans()):
        conditions["merchants"] = draw(st.sets(st.sampled_from(["M1", "M2", "M3  "]), min_size=1))
    if draw(st.booleans()):
        conditions["currencies"] = draw(st.sets(st.sampled_from(["978", "840", "156"]), min_size=1))
    if draw(st.booleans()):
        conditions["min_amount"] = draw(st.integers(0, 100))
    if draw(st.booleans()):
        conditions["max_amount"] = draw(st.integers(conditions.get("min_amount", 0), 200))
    return Rule(start, end, draw(st.integers(0, 30)), conditions)


messages = st.tuples(
    st.one_of(st.text(DIGITS, max_size=8), st.text(DIGITS + "x", max_size=6), st.none()),
    st.sampled_from([None, "0100", "0200", "0220", "0400", "0800", "02", "x2", ""]),
    st.sampled_from([None, "000000", "200000", "310000", "210000", "3", "0x0000"]),
    st.sampled_from([None, "M1", "M2", "M3", "M3             ", "M4", ""]),
    st.sampled_from([None, "978", "840", "156", "036", "97"]),
    st.one_of(st.none(), st.integers(-10, 250), st.just(2**80)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(rules(), max_size=12), st.lists(messages, min_size=1, max_size=20))
def test_lookup_matches_reference(rule_list, message_list):
    table = RouteTable()
    for rule in rule_list:
        table.add(rule.start, rule.end, rule.target, **rule.conditions)
    table.compile()
    for message in message_list:
        expected = reference_lookup(rule_list, *message)
        assert table.lookup(*message) == (expected[0] if expected else -1), message
        assert table.candidates(message[0]) == reference_lookup(rule_list, *message, conditions=False)


class _Msg(dict):
    """What switch.core.routing.Router reads of a message: .mti and .get(field)."""

    def __init__(self, fields, mti="0200"):
        super().__init__(fields)
        self.mti = mti


def test_router_takes_bare_prefixes_on_the_number_and_conditions_beside_them_on_the_message():
    from switch.config import Route
    from switch.core.routing import Router

    visa = Route(name="visa", kind="card", prefixes=["4"], acquirers=["a"])
    euro = Route(name="euro", kind="card", prefixes=["4"], acquirers=["b"], currencies=["978"])
    shop = Route(name="shop", kind="wallet", prefixes=["28"], acquirers=["w"], merchants=["M1"])
    pan, code = "4761739001010119", "281234567890123456"
    msg = _Msg({3: "000000", 4: "000000002500", 42: "M1", 49: "978"})
    bare = Router([visa, shop])
    assert bare.for_pan(pan, msg) is visa and bare.for_pan("5100000000000008", msg) is None
    assert bare.for_code(code, msg) is shop
    assert bare.for_code(code, _Msg({42: "M2"})) is None  # a wallet route's condition, with bare card routes
    mixed = Router([euro, visa, shop])
    assert mixed.for_pan(pan, msg) is euro
    assert mixed.for_pan(pan, _Msg({**msg, 49: "840"})) is visa
    assert Router([visa]).for_code(code, msg) is None
