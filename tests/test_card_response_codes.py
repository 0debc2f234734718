"""A card acquirer's field 39 into the section-5 codes a terminal is promised.

The table (adapters.card.response_codes), the host link's use of it (the
Result the switch gets, the acquirer's code kept in acquirer_ref, the
counters), the sandbox's --bank-codes answers, and the documented table.
"""
import re
from pathlib import Path

import pytest

from adapters.card.hostlink import LinkMetrics, parse_ref, reversal_fields
from adapters.card.response_codes import APPROVALS, TABLE, terminal_answer
from adapters.card.sandbox import BANK_CODES
from switch.core.acquirer import Original
from switch.core.messages import RESPONSE_CODES
from tests.test_card_hostlink import ACQ, F7, WALL, answer_to, make_request, ready_connection

ROOT = Path(__file__).resolve().parent.parent


def answer(code, requested="000000001000", approved=None, pcode="000000"):
    return terminal_answer(code, requested=requested, approved=approved, processing_code=pcode)


def test_every_code_of_the_table_is_one_section_5_promises():
    assert set(to for to, _ in TABLE.values()) <= RESPONSE_CODES
    assert APPROVALS == {"00", "08", "10", "11", "16", "85"}
    # A section-5 decline a host sends stays what it is...
    for code in ("03", "05", "12", "13", "14", "25", "51", "55", "58", "62", "68", "91", "96"):
        assert answer(code) == (code, False, answer(code).why)
    # ... but the codes that are about the terminal's own message or link are not the host's to give.
    for code in ("30", "94", "95", "A0"):
        assert answer(code).code == "96" and not answer(code).reverse


@pytest.mark.parametrize("host, terminal", [
    ("54", "05"), ("57", "05"), ("61", "05"), ("65", "05"), ("01", "05"), ("02", "05"), ("59", "05"),
    ("41", "62"), ("43", "62"), ("04", "62"), ("07", "62"), ("33", "62"), ("67", "62"),
    ("14", "14"), ("15", "14"), ("56", "14"), ("51", "51"), ("55", "55"), ("75", "55"), ("13", "13"),
    ("64", "13"), ("19", "96"), ("90", "91"), ("92", "91"), ("40", "12"),
])
def test_declines_take_the_nearest_section_5_code_and_move_no_money(host, terminal):
    got = answer(host)
    assert (got.code, got.reverse) == (terminal, False)
    assert got.why.startswith(host + " (")


@pytest.mark.parametrize("host", ["00", "08", "11", "16", "85"])
def test_full_approvals_are_00(host):
    assert answer(host) == ("00", False, answer(host).why)  # no field 4 in the answer: the amount asked
    assert answer(host, approved="000000001000") == ("00", False, answer(host).why)


def test_a_partial_approval_is_00_only_for_the_whole_amount():
    assert answer("10", approved="000000001000")[:2] == ("00", False)
    assert answer("10", approved="000000000505") == ("51", True, "10 (approved for a partial amount): 505 of 1000 approved")
    assert answer("10")[:2] == ("51", True)  # how much it approved, it does not say
    assert answer("10", approved="00000000 505")[:2] == ("51", True)


def test_an_approval_of_another_amount_is_declined_and_reversed():
    # Only a partial approval (10) of less is the card not covering the amount (51); a full
    # approval of another amount is the host and the switch disagreeing on the sale (96).
    assert answer("00", approved="000000000999")[:2] == ("96", True)
    assert answer("08", approved="000000001001") == ("96", True, "08 (honour with identification): 1001 approved, 1000 requested")


def test_a_balance_inquiry_authorizes_no_money():
    assert answer("10", approved="000000123456", pcode="310000")[:2] == ("00", False)
    assert answer("00", requested="000000000000", approved="000000123456", pcode="310000")[:2] == ("00", False)


@pytest.mark.parametrize("host", ["ZZ", "N7", "99", "77", "y1"])
def test_unknown_codes_are_96_and_reversed(host):
    assert answer(host) == ("96", True, f"unknown response code {host}")


@pytest.mark.parametrize("host, shown", [
    (" 5", "' 5'"), ("5", "'5'"), ("", "''"), ("\x00\x00", "'\\x00\\x00'"), ("Ü1", "'Ü1'"), (None, "None"),
    ("4761739001010119", "of 16 characters"),
])
def test_garbage_is_96_and_reversed_and_never_quoted_at_length(host, shown):
    assert answer(host) == ("96", True, f"response code {shown} is not two letters or digits")


# -- the host link ------------------------------------------------------------------


def answered(f39, amount=1000, metrics=None, **fields):
    conn = ready_connection(metrics=metrics) if metrics is not None else ready_connection()
    msg, _ = conn.request(make_request(amount=amount), now=0.0, wall=WALL, timeout=2.0)
    [done] = conn.receive(answer_to(msg, f39=f39, f38="AB12CD", f55=b"\x91\x00", **fields), 0.5)
    return msg, done.outcome


@pytest.mark.parametrize("f4", [None, "000000001000", "000000000999", "000000001001", "1000", "00000000100x"])
@pytest.mark.parametrize("f49", [None, "840", "978"])
def test_a_00_is_what_terminal_answer_makes_of_it(f4, f49):
    # The host link takes a plain approval (00, the amount and currency sent) without asking
    # terminal_answer: the outcome is the one terminal_answer gives, whatever the answer's 4 and 49.
    msg, result = answered("00", f4=f4, f49=f49)
    code, reverse, why = terminal_answer("00", requested=msg[4], approved=f4, processing_code=msg[3],
                                         currency=msg[49], host_currency=f49)
    assert (result.response_code, result.uncertain) == (code, reverse)
    assert result.acquirer_code == (None if code == "00" else "00")
    assert result.acquirer_reason == (None if code == "00" else why)


def test_a_mapped_decline_keeps_the_acquirers_code_in_acquirer_ref():
    metrics = LinkMetrics()
    msg, result = answered("54", metrics=metrics)
    assert (result.response_code, result.uncertain) == ("05", False)
    assert (result.acquirer_code, result.acquirer_reason) == ("54", "54 (expired card)")
    assert result.acquirer_ref == f"{msg[11]}|{msg[7]}|331822000001|54"
    assert parse_ref(result.acquirer_ref).host_code == "54" and parse_ref(result.acquirer_ref).stan == msg[11]
    # The requests counter shows what the terminal gets; host_codes what the acquirer said.
    assert metrics.get("requests", mti="0200", response_code="05") == 1
    assert metrics.get("requests", mti="0200", response_code="54") == 0
    assert metrics.get("host_codes", mti="0200", response_code="54", answered="05") == 1


def test_a_section_5_answer_is_left_as_it_was():
    msg, result = answered("05")
    assert result.response_code == "05" and result.acquirer_code is None
    assert result.acquirer_ref == f"{msg[11]}|{msg[7]}|331822000001"


def test_an_approval_with_identification_is_00_with_its_auth_code():
    _, result = answered("08")
    assert (result.response_code, result.auth_code, result.uncertain, result.icc) == ("00", "AB12CD", False, b"\x91\x00")
    assert result.acquirer_code == "08"


def test_a_partial_approval_is_declined_and_left_to_reverse():
    metrics = LinkMetrics()
    msg, result = answered("10", metrics=metrics, f4="000000000500")
    # uncertain: the switch reverses it at the acquirer, as it does an answer it cannot trust
    # Its field 38 is kept: the reversal names the authorization by it (a strict host matches on it).
    assert (result.response_code, result.uncertain, result.auth_code, result.icc) == ("51", True, "AB12CD", None)
    # acquirer_ref keeps the amount approved: what the reversal must carry (field 4)
    assert result.acquirer_ref == f"{msg[11]}|{msg[7]}|331822000001|10|500" and "500 of 1000" in result.acquirer_reason
    assert parse_ref(result.acquirer_ref).approved == 500
    assert metrics.get("host_codes", mti="0200", response_code="10", answered="51") == 1
    msg, result = answered("10", f4="000000001000")
    assert (result.response_code, result.uncertain, result.auth_code) == ("00", False, "AB12CD")


def test_unknown_and_garbage_codes_are_uncertain():
    metrics = LinkMetrics()
    _, result = answered("N7", metrics=metrics)
    assert (result.response_code, result.uncertain, result.acquirer_code) == ("96", True, "N7")
    _, result = answered(" 5", metrics=metrics)
    assert (result.response_code, result.uncertain, result.acquirer_code) == ("96", True, "??")
    assert result.acquirer_ref.endswith("|??")
    assert metrics.get("host_codes", mti="0200", response_code="other", answered="96") == 2


def test_a_reversal_names_an_original_whose_ref_carries_the_host_code():
    original = Original(txn_id=1, mti="0200", processing_code="000000", amount=1000, currency="840",
                        stan="000042", transmission_time="1114221300", rrn="000000000001",
                        acquirer_ref="000002|1114221320|331822000001|10")
    msg = reversal_fields(make_request(mti="0400", original=original), stan="000003", f7=F7, acquirer_id=ACQ)
    assert msg[37] == "331822000001" and msg[90].startswith("0200000002111422132")
    assert parse_ref("000002|1114221320|331822000001|10|x") is None
    assert msg[4] == "000000001000"  # no other amount approved: the original's


def test_the_reversal_of_a_partial_approval_carries_the_amount_approved():
    msg, result = answered("10", f4="000000000500")
    original = Original(txn_id=1, mti="0200", processing_code="000000", amount=1000, currency="840",
                        stan="000042", transmission_time="1114221300", rrn="000000000001",
                        acquirer_ref=result.acquirer_ref, auth_code=result.auth_code)
    rev = reversal_fields(make_request(mti="0400", original=original), stan="000003", f7=F7, acquirer_id=ACQ)
    assert (rev[4], rev[90][4:20], rev[38], rev[37]) == ("000000000500", msg[11] + msg[7], "AB12CD", "331822000001")
    _, result = answered("00", f4="000000001200")  # an approval of more: that is what is reversed
    assert (result.response_code, result.uncertain, parse_ref(result.acquirer_ref).approved) == ("96", True, 1200)
    # A code that approves nothing, or no readable amount: the original's amount is reversed.
    for code, f4 in (("N7", "000000000500"), ("09", "000000000500"), ("10", "00000000 500")):
        _, result = answered(code, f4=f4)
        assert result.uncertain and parse_ref(result.acquirer_ref).approved is None


# -- the sandbox ---------------------------------------------------------------------


def test_the_sandboxs_bank_codes_are_all_outside_section_5_and_in_the_table():
    assert BANK_CODES <= set(TABLE) and not BANK_CODES & RESPONSE_CODES


# -- the documentation ----------------------------------------------------------------


def test_the_documented_table_is_the_table():
    text = (ROOT / "docs" / "adapters.md").read_text()
    section = text.split("## Card host links: response codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\S.*?) \| (\w\w)\b[^|]* \|$", section, re.M)
    documented = {}
    for hosts, terminal in rows:
        for host in re.findall(r"\b[0-9A-Z]{2}\b", hosts):
            documented[host] = terminal
    assert documented == {code: to for code, (to, _) in TABLE.items()}
