"""Known-answer and negative tests of the city-card crypto (spec 4.1)."""
import pytest

from adapters.citycard import crypto

DEMO_MK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
CARD = "8800123456789015"
DK = bytes.fromhex("0BEEB5AC342E597193B0C71AB7C1C32E")
EXAMPLE = (CARD, "00001", "000000002500", "0000000001", "DEMO0001")


def test_spec_worked_example_dk():
    assert crypto.derive_dk(DEMO_MK, CARD) == DK


def test_spec_worked_example_tac():
    assert crypto.tac(DK, *EXAMPLE) == "69C169C3"


def test_dk_uses_rightmost_16_digits_left_padded():
    assert crypto.derive_dk(DEMO_MK, "99" + CARD) == DK
    assert crypto.derive_dk(DEMO_MK, "123") == crypto.derive_dk(DEMO_MK, "0000000000000123")


def test_retail_mac_pyemv_vector():
    # pyemv tests/test_mac.py: mac_iso9797_3(AA.., BB.., b"hello world", padding 2)
    key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    assert crypto.retail_mac(key, b"hello world").hex().upper() == "2BC2D9EDE0CF31F6"


def test_retail_mac_icao_9303_bac_vector():
    # ICAO Doc 9303 part 11, BAC worked example: MAC of E_IFD with K_MAC (alg 3, padding 2).
    key = bytes.fromhex("7962D9ECE03D1ACD4C76089DCE131543")
    data = bytes.fromhex("72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F2")
    assert crypto.retail_mac(key, data).hex().upper() == "5F1448EEA8AD90A7"


@pytest.mark.parametrize("n", range(0, 18))
def test_padding_method2(n):
    padded = crypto.pad_method2(b"F" * n)
    assert len(padded) % 8 == 0 and len(padded) > n
    assert padded[:n] == b"F" * n and padded[n] == 0x80 and set(padded[n + 1 :]) <= {0}


def test_retail_mac_equal_keys_is_single_des_cbc_mac():
    # With K' == K the output transformation cancels: plain DES CBC-MAC.
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    from switch.security.ciphers import TripleDES

    key8 = bytes.fromhex("0123456789ABCDEF")
    data = b"Now is the time for all "
    cbc = Cipher(TripleDES(key8 * 3), modes.CBC(b"\0" * 8)).encryptor()
    expected = (cbc.update(crypto.pad_method2(data)) + cbc.finalize())[-8:]
    assert crypto.retail_mac(key8 + key8, data) == expected


def test_wrong_key_or_data_mismatch():
    good = crypto.tac(DK, *EXAMPLE)
    other_dk = crypto.derive_dk(DEMO_MK, "8800123456789023")
    assert crypto.tac(other_dk, *EXAMPLE) != good
    assert crypto.tac(DK, CARD, "00002", *EXAMPLE[2:]) != good
    assert crypto.tac(DK, CARD, "00001", "000000002501", *EXAMPLE[3:]) != good
    assert crypto.tac(DK, *EXAMPLE[:4], "DEMO0002") != good
    assert crypto.tac(bytes(16), *EXAMPLE) != good


def test_mac1_mac2_differ_from_tac_and_each_other():
    codes = {crypto.tac(DK, *EXAMPLE), crypto.mac1(DK, *EXAMPLE), crypto.mac2(DK, *EXAMPLE)}
    assert len(codes) == 3
    for code in codes:
        assert len(code) == 8 and code == code.upper()
        int(code, 16)
    data = crypto.mac_input(*EXAMPLE)
    assert crypto.mac1(DK, *EXAMPLE) == crypto.retail_mac(DK, data + b"LOAD")[:4].hex().upper()
    assert crypto.mac2(DK, *EXAMPLE) == crypto.retail_mac(DK, data + b"OK")[:4].hex().upper()


def test_verify():
    assert crypto.verify("69C169C3", "69c169c3")
    assert not crypto.verify("69C169C3", "69C169C4")
    assert not crypto.verify("69C169C3", "69C169C")
    assert not crypto.verify("69C169C3", "69C169C\u00e9")


@pytest.mark.parametrize(
    "args",
    [
        (CARD, "0001", "000000002500", "0000000001", "DEMO0001"),
        (CARD, "00001", "2500", "0000000001", "DEMO0001"),
        (CARD, "00001", "000000002500", "1", "DEMO0001"),
        (CARD, "00001", "000000002500", "0000000001", "DEMO01"),
    ],
)
def test_malformed_inputs_raise(args):
    with pytest.raises(ValueError):
        crypto.tac(DK, *args)


def test_bad_keys_raise():
    with pytest.raises(ValueError):
        crypto.derive_dk(DEMO_MK[:8], CARD)
    with pytest.raises(ValueError):
        crypto.derive_dk(DEMO_MK, "88001234X")
    with pytest.raises(ValueError):
        crypto.retail_mac(DK[:8], b"x")
