"""Sans-I/O request rules of the terminal interface (spec sections 3, 5, 6)."""
import pytest

from native.iso8583 import dialect
from switch.core import messages as m

T = dialect("terminal-87")

BASE = {
    "mti": "0200", 2: "4761739001010119", 3: "000000", 4: "000000001250", 7: "1124101500", 11: "000001",
    12: "101500", 13: "1124", 22: "051", 41: "DEMO0001", 42: "DEMO00000000001", 49: "978",
    35: "4761739001010119=28121011234567890", 52: bytes(8),
}


def msg(**changes):
    fields = dict(BASE)
    for k, v in changes.items():
        n = int(k[1:]) if k.startswith("f") else k
        if v is None:
            fields.pop(n, None)
        else:
            fields[n] = v
    return T.decode(T.encode(fields))


@pytest.mark.parametrize(
    "mti, answer, as_repeat",
    [
        ("0100", "0110", "0110"),
        ("0200", "0210", "0210"),
        ("0201", "0210", "0211"),  # section 6.1: a terminal's repeat is answered as its first send
        ("0220", "0230", "0230"),
        ("0400", "0410", "0410"),
        ("0420", "0430", "0430"),
        ("0421", "0430", "0431"),  # the host link: an acquirer may answer a repeat as either
        ("0500", "0510", "0510"),
        ("0800", "0810", "0810"),
        ("0190", "0100", "0100"),  # not a request (is_request), but still four digits
    ],
)
def test_response_mti(mti, answer, as_repeat):
    assert m.response_mti(mti) == answer
    assert m.response_mti(mti, keep_origin=True) == as_repeat


def test_only_a_request_mti_is_answered_and_its_answer_is_a_response_mti():
    requests = ("0100", "0101", "0200", "0220", "0221", "0400", "0401", "0500", "0800", "0120", "0300", "1200", "0180")
    responses = ("0110", "0210", "0230", "0410", "0430", "0510", "0810", "0130", "0190", "0290", "9999", "0111")
    assert all(m.is_request(x) for x in requests)
    assert not any(m.is_request(x) for x in responses)
    # MTI + 10 of a request is never a request itself (0190 -> 0100 would be)
    assert not any(m.is_request(m.response_mti(x)) for x in requests)


def test_valid_purchase_passes():
    m.check_request(msg())


@pytest.mark.parametrize("missing", [3, 4, 7, 11, 12, 13, 22, 41, 42, 49])
def test_missing_mandatory_field_is_30(missing):
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg(**{f"f{missing}": None}))
    assert e.value.code == "30" and str(missing) in e.value.reason


def test_unsupported_mti_is_12():
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg(mti="0300"))
    assert e.value.code == "12"


def test_processing_code_not_allowed_for_mti_is_12():
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg(mti="0100", f3="200000"))
    assert e.value.code == "12"


def test_zero_amount_is_13_except_balance_inquiry():
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg(f4="000000000000"))
    assert e.value.code == "13"
    m.check_request(msg(f4="000000000000", f3="310000"))


@pytest.mark.parametrize("field, value", [
    (7, "1324101500"), (7, "0024101500"), (7, "1100101500"), (7, "1131101500"), (7, "0230101500"),
    (7, "1124241500"), (7, "1124106000"), (7, "1124101560"),
    (12, "241500"), (12, "106000"), (12, "101599"), (13, "1340"), (13, "0000"), (13, "0431"),
])
def test_impossible_date_or_time_is_30_naming_the_field(field, value):
    # Section 2: 7 is MMDDhhmmss, 12 hhmmss, 13 MMDD (an offline upload's record dates included).
    with pytest.raises(m.Rejection) as e:
        m.check_request(msg(**{f"f{field}": value}))
    assert e.value.code == "30" and f"field {field}" in e.value.reason and value not in e.value.reason


@pytest.mark.parametrize("code", ["001", "002", "301", "101"])
def test_an_0800_with_an_impossible_field_7_is_30(code):
    """Section 2 holds for network management too: an echo or sign-on dated month 13 is a format error."""
    net = {"mti": "0800", 7: "1324101500", 11: "000001", 41: "DEMO0001", 70: code}
    with pytest.raises(m.Rejection) as e:
        m.check_request(T.decode(T.encode(net)))
    assert e.value.code == "30" and "field 7" in e.value.reason
    m.check_request(T.decode(T.encode({**net, 7: "1124101500"})))


@pytest.mark.parametrize("field, value", [(7, "0229235959"), (7, "1231000000"), (12, "000000"), (13, "0229"),
                                          (13, "0131")])
def test_possible_dates_and_times_pass(field, value):
    m.check_request(msg(**{f"f{field}": value}))
    m.check_request(msg(mti="0220", f2="8800123456789015", f35=None, f52=None, **{f"f{field}": value}))


def test_network_management_needs_only_its_fields():
    echo = T.decode(T.encode({"mti": "0800", 7: "1124101500", 11: "000002", 41: "DEMO0001", 70: "301"}))
    m.check_request(echo)
    bad = T.decode(T.encode({"mti": "0800", 7: "1124101500", 11: "000002", 41: "DEMO0001", 70: "999"}))
    with pytest.raises(m.Rejection) as e:
        m.check_request(bad)
    assert e.value.code == "12"


def test_pan_from_field_2_or_track_2():
    assert m.pan_of(msg()) == "4761739001010119"
    assert m.pan_of(msg(f2=None)) == "4761739001010119"
    assert m.pan_of(msg(f2=None, f35=None)) is None


def test_payment_kind():
    assert m.payment_kind(msg(), "4761739001010119", {}) == "pan"
    wallet = msg(f2=None, f35=None, f52=None, f22="031")
    assert m.payment_kind(wallet, None, {"BC": "281234567890123401"}) == "wallet"
    with pytest.raises(m.Rejection, match="tag BC"):
        m.payment_kind(wallet, None, {})
    with pytest.raises(m.Rejection, match="must not carry field 2"):
        m.payment_kind(msg(f22="031"), "4761739001010119", {"BC": "28"})


def test_original_key_from_field_90():
    assert m.original_key("0200" + "000123" + "1124101500" + "0" * 22) == ("0200", "000123", "1124101500")


@pytest.mark.parametrize("original_7", ["1324101500", "1132101500", "0230101500", "1124251500", "1124106000",
                                        "1124101560", "0000000000"])
def test_field_90_naming_an_impossible_original_field_7_is_30(original_7):
    """Section 2 holds for the original's field 7 inside 90 (an 0400, an 0220 completion), too."""
    with pytest.raises(m.Rejection) as e:
        m.check_original("0200" + "000123" + original_7 + "0" * 22)
    assert e.value.code == "30" and "field 90" in e.value.reason and original_7 not in e.value.reason
    m.check_original("0200" + "000123" + "0229235959" + "0" * 22)


def test_digest_same_for_retransmission_differs_for_content():
    key = b"k" * 32
    a = m.content_digest(msg(), key)
    assert a == m.content_digest(msg(), key)
    assert a != m.content_digest(msg(f4="000000001251"), key)
    assert a != m.content_digest(msg(f2="5413330089010434"), key)
    assert "4761739001010119" not in a


def test_response_echoes_and_never_carries_card_data():
    resp = m.build_response(msg(), "00", "000000000042", auth_code="A1B2C3")
    assert resp["mti"] == "0210"
    for n in (3, 4, 7, 11, 12, 13, 41, 42, 49):
        assert resp[n] == BASE[n]
    assert resp[37] == "000000000042" and resp[39] == "00" and resp[38] == "A1B2C3"
    assert not {2, 35, 52} & set(resp)
    declined = m.build_response(msg(), "05", "000000000043", auth_code="A1B2C3")
    assert 38 not in declined
    T.encode(resp)  # valid for the terminal dialect


@pytest.mark.parametrize(
    "pan, shown",
    [
        (None, None),
        ("", ""),
        ("1234", "1234"),
        ("12345678", "****5678"),
        ("123456789012", "********9012"),  # under 13 digits: only the last 4
        ("4222222222222", "422222***2222"),  # 13: first 6 + last 4
        ("4761739001010119", "476173******0119"),
        ("6212345678901234567", "621234*********4567"),  # 19
    ],
)
def test_mask_pan(pan, shown):
    assert m.mask_pan(pan) == shown


def test_build_request_carries_what_adapters_need():
    req = m.build_request(msg(), txn_id=7, kind="card", rrn="000000000007", pan="4761739001010119", tlv={})
    assert (req.mti, req.amount, req.currency, req.stan, req.terminal_id) == ("0200", 1250, "978", "000001", "DEMO0001")
    assert req.pin_block == bytes(8) and req.track2.startswith("4761739001010119")


# -- section 3: "when approved, 38" -------------------------------------------------


def test_every_approved_answer_carries_38_and_its_retransmission_the_same(monkeypatch):
    """0110/0210 without an acquirer code, 0230, 0410, 0510 and 0810: 38 is there (an6)."""
    from switch.core.acquirer import Result
    from tests.test_service import (KEY_ENV, TERM, FakeAcquirer, T7, TID, call, fakes, field90, request, reversal,
                                    run, settlement)

    monkeypatch.setenv(KEY_ENV, "5e" * 32)

    no_code = FakeAcquirer("bank-a", answers=[Result(response_code="00")])

    async def scenario(sw):
        answers = [
            await call(sw, request(stan="000001")),  # the acquirer gave no code
            await call(sw, request("0100", stan="000002")),
        ]
        answers.append(await call(sw, request("0220", stan="000003", amount="000000002000",
                                              f90=field90("0100", "000002"))))
        answers.append(await call(sw, reversal("000004", "000001")))
        answers.append(await call(sw, settlement("000005", debits=1, debit_amount=2000)))
        for stan, code in (("000006", "001"), ("000007", "301")):  # two keys: one key is one request
            answers.append(await call(sw, TERM.encode({"mti": "0800", 7: T7, 11: stan, 41: TID, 70: code})))
        assert [a.mti for a in answers] == ["0210", "0110", "0230", "0410", "0510", "0810", "0810"]
        for a in answers:
            assert a[39] == "00", a.mti
            assert len(a[38]) == 6 and a[38].isalnum(), a.mti
        assert answers[1][38].startswith("A0")  # the fake acquirer's own code stays
        assert answers[0][38] == answers[0][37][-6:]
        again = await call(sw, reversal("000004", "000001"))  # a retransmission: the same 37 and 38
        assert (again[37], again[38]) == (answers[3][37], answers[3][38])

    run(scenario, acquirers=fakes(**{"bank-a": no_code}))


def test_the_clock_check_agrees_with_calendar_arithmetic_on_every_value():
    """native.clock against int() arithmetic on a calendar (the fuzz target's reference), exhaustively for 12 and 13."""
    from native.clock import impossible_clock
    from tests.fuzz.targets import reference_clock as real

    for i in range(10000):
        v = "%04d" % i
        assert (impossible_clock(None, None, v) == 0) == real(v, "MMDD"), v
    for i in range(1000000):
        v = "%06d" % i
        assert (impossible_clock(None, v, None) == 0) == real(v, "hhmmss"), v
    for i in range(20000):
        v = "%04d" % (i % 10000) + ("%06d" % (i * 7919 % 1000000))
        assert (impossible_clock(v, None, None) == 0) == real(v, "MMDDhhmmss"), v
    assert impossible_clock("1124101500", "101500", "1124") == 0
    assert impossible_clock("11241015x0", None, None) == 7  # not digits
    assert impossible_clock(None, "１０１５００", None) == 12  # digits, but not ASCII ones
    assert impossible_clock(None, None, "112") == 13  # too short
    assert impossible_clock("1324101500", "241500", "1340") == 7  # the first one named


@pytest.mark.parametrize("mti", ["0100", "0200", "0220", "0500"])
@pytest.mark.parametrize("currency", ["000", "999", "123", "963"])
def test_field_49_that_is_no_iso_4217_currency_is_a_format_error_s2(mti, currency):
    with pytest.raises(m.Rejection) as e:
        m.check_currency(msg(f49=currency), mti)
    assert (e.value.code, e.value.reason) == ("30", f"field 49 '{currency}' is not an ISO 4217 currency code")


def test_field_49_of_a_currency_or_of_an_0400_or_absent_passes_s2():
    for currency in ("978", "840", "156", "344", "446", "901", "985", "986", "941", "925", "926"):
        m.check_currency(msg(f49=currency), "0200")
    m.check_currency(msg(f49="999"), "0400")  # a reversal must always be able to undo money
    m.check_currency(msg(f49=None), "0500")  # the merchant's currency applies
