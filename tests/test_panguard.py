"""native.panguard against the definitions it replaces (a regular expression, str.isdigit, the Luhn check)."""
import random
import re

import pytest

from native.panguard import digit_count, is_pan_hash, luhn_run
from native.routing import luhn_ok
from switch.journal import check_luhn_values, check_pan_forms

RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
PAN_HASH = re.compile(r"v[0-9]{1,3}:[0-9a-f]{64}")


def reference(values):
    for index, value in enumerate(values):
        if type(value) is not str or len(value) < 13:
            continue
        for run in RUN.findall(value):
            if luhn_ok(run):
                return index, len(run)
    return None


def with_check_digit(body: str) -> str:
    return body + next(d for d in "0123456789" if luhn_ok(body + d))


def test_luhn_run_finds_a_card_number_where_the_expression_does():
    pan = with_check_digit("476173900101011")
    assert luhn_run(("short", None, 12, b"4761739001010119", "ref " + pan + " end")) == (4, 16)
    assert luhn_run((pan,)) == (0, 16)
    assert luhn_run(("x" + pan,)) == (0, 16)
    assert luhn_run(("١" + pan,)) == (0, 16)  # a non-ASCII string is read in its own width
    assert luhn_run(("" + pan + "٣",)) == (0, 16)  # '٣' is a digit to isdigit, not to the guard


def test_luhn_run_passes_over_what_is_no_card_number():
    pan = with_check_digit("476173900101011")
    assert luhn_run(()) is None
    assert luhn_run((pan[:-1] + str((int(pan[-1]) + 1) % 10),)) is None  # wrong check digit
    assert luhn_run((pan + "0000",)) is None  # part of a 20-digit run
    assert luhn_run(("1" + pan + "123",)) is None  # 20 digits again
    assert luhn_run((with_check_digit("47617390010"),)) is None  # 12 digits
    assert luhn_run((pan.encode(),)) is None  # bytes are not text
    assert luhn_run((pan[:8] + " " + pan[8:],)) is None  # split by a space


def test_luhn_run_agrees_with_the_expression_on_random_text():
    rng = random.Random(8583)
    alphabet = "0123456789" * 6 + "ab:-* é٣"
    for _ in range(5000):
        values = tuple(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) if rng.random() < 0.9 else rng.randint(0, 9)
            for _ in range(rng.randint(0, 4))
        )
        assert luhn_run(values) == reference(values), values


def test_luhn_run_needs_a_tuple():
    with pytest.raises(TypeError):
        luhn_run(["4761739001010119"])


def test_digit_count_is_str_isdigit():
    for text in ("", "476173******0119", "١٢٣abc", "²³", "v1:" + "9" * 64):
        assert digit_count(text) == sum(map(str.isdigit, text))


def test_is_pan_hash_is_the_expression():
    good = "v1:" + "0123456789abcdef" * 4
    samples = [good, "v12:" + good[3:], "v123:" + good[3:], "v1234:" + good[3:], "v:" + good[3:],
               good[:-1], good + "a", good.upper(), "w" + good[1:], "v1;" + good[3:], "v1:" + "g" * 64,
               "vé:" + good[3:], "v١:" + good[3:], ""]
    for text in samples:
        assert is_pan_hash(text) == bool(PAN_HASH.fullmatch(text)), text


def test_the_journal_guard_names_the_column_and_never_the_number():
    pan = with_check_digit("476173900101011")
    with pytest.raises(ValueError) as err:
        check_luhn_values(("auth_code", "acquirer_ref"), ("A1", "ref" + pan))
    assert "'acquirer_ref'" in str(err.value) and "16-digit" in str(err.value)
    assert pan not in str(err.value)
    check_luhn_values(("acquirer_ref",), ("ref" + pan[:-1],))  # 15 digits failing Luhn: fine
    with pytest.raises(ValueError, match="pan_masked"):
        check_pan_forms("47617390****0119", None)
    with pytest.raises(ValueError, match="pan_hash"):
        check_pan_forms(None, "v1:" + "A" * 64)
    check_pan_forms("476173******0119", "v1:" + "a" * 64)


@pytest.mark.parametrize("alphabet", ["0123456789" * 6 + "ab:-* ", "0123456789" * 6 + "é\xb2\xb3\xb9 "])
def test_luhn_run_agrees_with_the_expression_on_random_one_byte_text(alphabet):
    """ASCII and Latin-1 text, read byte by byte: what nearly every journal value is."""
    rng = random.Random(4111)
    for _ in range(5000):
        values = tuple("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
                       for _ in range(rng.randint(1, 4)))
        assert luhn_run(values) == reference(values), values


def test_digit_count_is_str_isdigit_on_every_latin1_character():
    text = "".join(map(chr, range(256)))
    assert digit_count(text) == sum(c.isdigit() for c in text) == 13
    assert digit_count(text * 3 + "٣") == 40


def test_pan_digits_is_what_check_pan_digits_asks():
    from switch.journal.pan_guard import check_pan_digits, pan_digits

    rng = random.Random(19)
    alphabet = "0123456789" * 4 + "a ٣\xb2"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 22)))
        want = text.isascii() and text.isdigit() and 8 <= len(text) <= 19
        assert pan_digits(text) is want, text
        if want:
            check_pan_digits(text)
        else:
            with pytest.raises(ValueError):
                check_pan_digits(text)


def test_mask_pan_shows_first_six_and_last_four_of_any_number():
    from native.panguard import mask_pan

    def reference(pan):
        if not pan:
            return pan
        n = len(pan)
        return pan[:6] + "*" * (n - 10) + pan[-4:] if n >= 13 else "*" * (n - 4) + pan[-4:] if n > 4 else pan

    rng = random.Random(6011)
    for text in [None, "", "1234", "12345", "123456789012", "4761739001010119", "1" * 19, "é" * 16, "٣" * 13,
                 *("".join(rng.choice("0123456789ab é٣") for _ in range(rng.randint(0, 25))) for _ in range(2000))]:
        masked = mask_pan(text)
        assert masked == reference(text) and type(masked) is type(text), text
        if text:
            assert masked.isascii() is reference(text).isascii()
            assert hash(masked) == hash(reference(text))
