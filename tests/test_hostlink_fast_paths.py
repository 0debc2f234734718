"""What the host link reads in C instead of through Python calls reads the same:
a STAN's or field 7's digits (valid_stan / valid_f7, as ``str.isdigit``)."""
import pytest

from adapters.card.messages import valid_f7, valid_stan


@pytest.mark.parametrize("text", ["000042", "999999", "00004", "0000420", "", "00004a", "00 042", "٠٠٠٠٤٢",
                                  "００００４２", "00004²", "0000\u00b942"])
def test_valid_stan_is_six_characters_isdigit_takes(text):
    assert valid_stan(text) is (len(text) == 6 and text.isdigit())


@pytest.mark.parametrize("text", ["1114221320", "111422132", "11142213200", "111422132x", "١١١٤٢٢١٣٢٠",
                                  "111422132²", ""])
def test_valid_f7_is_ten_characters_isdigit_takes(text):
    assert valid_f7(text) is (len(text) == 10 and text.isdigit())


def test_valid_stan_and_f7_of_what_is_not_a_str():
    assert valid_stan(None) is False and valid_f7(None) is False

    class Digits(str):
        pass

    assert valid_stan(Digits("000042")) is True and valid_f7(Digits("111422132x")) is False
    assert valid_stan(b"000042") is True and valid_f7(b"1114221320") is True
