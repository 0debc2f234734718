"""Known-answer tests of the security primitives, each against a published vector."""
import pytest

from switch.security import ciphers, dukpt, mac, pinblock

TDES_DEMO = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # spec 7 TMK and BDK; X9.24-1 Annex A BDK
RFC4493_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # spec 7 AES TMK; RFC 4493 section 4 key


# -- ISO 9797-1 MAC algorithm 3 ----------------------------------------------

def test_retail_mac_padding_1_pyemv_vector():
    """pyemv tests/test_mac.py (mac_iso9797_3, padding 1): key AA..AA|BB..BB over b"hello world"."""
    key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    assert mac.retail_mac(key, b"hello world", padding=1).hex().upper() == "78DA3D3DEB48FD4D"
    assert mac.terminal_mac(key, b"hello world", "tdes").hex().upper() == "78DA3D3DEB48FD4D"


def test_retail_mac_padding_2_icao_vector():
    """ICAO Doc 9303 part 11, BAC worked example: MAC of E_IFD with K_MAC (algorithm 3, padding 2)."""
    key = bytes.fromhex("7962D9ECE03D1ACD4C76089DCE131543")
    data = bytes.fromhex("72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F2")
    assert mac.retail_mac(key, data, padding=2).hex().upper() == "5F1448EEA8AD90A7"


@pytest.mark.parametrize("n", range(0, 18))
def test_padding_method1(n):
    padded = mac.pad_method1(b"F" * n)
    assert len(padded) % 8 == 0 and len(padded) >= max(n, 8)
    assert padded[:n] == b"F" * n and set(padded[n:]) <= {0}
    assert len(padded) - n < 8 or n == 0


def test_retail_mac_refuses_bad_key_and_padding():
    with pytest.raises(ValueError, match="16 bytes"):
        mac.retail_mac(bytes(8), b"x")
    with pytest.raises(ValueError, match="padding method must be 1 or 2"):
        mac.retail_mac(bytes(16), b"x", padding=3)


# -- AES-CMAC (RFC 4493 section 4) -------------------------------------------

@pytest.mark.parametrize(
    "message, tag",
    [
        ("", "BB1D6929E95937287FA37D129B756746"),
        ("6BC1BEE22E409F96E93D7E117393172A", "070A16B46B4D4144F79BDD9DD04A287C"),
        (
            "6BC1BEE22E409F96E93D7E117393172AAE2D8A571E03AC9C9EB76FAC45AF8E5130C81C46A35CE411",
            "DFA66747DE9AE63030CA32611497C827",
        ),
        (
            "6BC1BEE22E409F96E93D7E117393172AAE2D8A571E03AC9C9EB76FAC45AF8E51"
            "30C81C46A35CE411E5FBC1191A0A52EFF69F2445DF4F9B17AD2B417BE66C3710",
            "51F0BEBF7E3B9D92FC49741779363CFE",
        ),
    ],
)
def test_aes_cmac_rfc4493_examples(message, tag):
    """RFC 4493 section 4, examples 1-4 (the 8-byte terminal MAC is the leftmost half)."""
    data = bytes.fromhex(message)
    assert mac.aes_cmac(RFC4493_KEY, data).hex().upper() == tag
    assert mac.terminal_mac(RFC4493_KEY, data, "aes").hex().upper() == tag[:16]


# -- key check values ---------------------------------------------------------

def test_tdes_kcv_published():
    """The check value of 0123456789ABCDEF FEDCBA9876543210 is 08D7B4 (as payShield and EFTlab print it)."""
    assert mac.kcv(TDES_DEMO, "tdes") == "08D7B4"


def test_aes_kcv_is_cmac_of_zero_block():
    """Spec section 8: AES check value = CMAC of zeros, first 3 bytes; cross-checked against RFC 4493 CMAC."""
    expected = mac.aes_cmac(RFC4493_KEY, bytes(16))[:3].hex().upper()
    assert mac.kcv(RFC4493_KEY, "aes") == expected == "7AD386"
    assert mac.kcv(bytes(16), "aes") != expected


# -- ISO 9564 PIN blocks --------------------------------------------------------

def test_format0_x924_annex_a_block():
    """X9.24-1:2009 A.4: PIN 1234, PAN 4012345678909 -> clear format 0 block 041274EDCBA9876F."""
    block = pinblock.encode_format0("1234", "4012345678909")
    assert block.hex().upper() == "041274EDCBA9876F"
    assert pinblock.decode(block, "4012345678909") == (0, "1234")


def test_format0_wikipedia_example():
    """ISO 9564 article (Wikipedia): PIN 1234, PAN 43219876543210987: PIN field 041234FF.., PAN field 0000987654321098."""
    assert pinblock.pan_field("43219876543210987").hex().upper() == "0000987654321098"
    assert pinblock.encode_format0("1234", "43219876543210987").hex().upper() == ciphers.xor(
        bytes.fromhex("041234FFFFFFFFFF"), bytes.fromhex("0000987654321098")
    ).hex().upper()


def test_format3_structure_and_round_trip():
    pan = "4111111111111111"
    blocks = {pinblock.encode_format3("98765", pan) for _ in range(8)}
    assert len(blocks) > 1  # random A-F fill
    for block in blocks:
        field = ciphers.xor(block, pinblock.pan_field(pan)).hex().upper()
        assert field.startswith("3598765") and set(field[7:]) <= set("ABCDEF")
        assert pinblock.decode(block, pan) == (3, "98765")


def test_pin_block_fill_keeps_the_interpreter_lock_and_is_uniform(monkeypatch):
    """Fill comes from switch.entropy: os.urandom (and secrets) release the GIL on the loop's thread."""
    import collections
    import os
    import secrets

    def released(*_):
        raise AssertionError("os.urandom on the request path")

    monkeypatch.setattr(os, "urandom", released)
    monkeypatch.setattr(secrets, "token_bytes", released)
    monkeypatch.setattr(secrets, "randbelow", released)
    pan = "4111111111111111"
    counts = collections.Counter()
    for _ in range(600):
        field = ciphers.xor(pinblock.encode_format3("1234", pan), pinblock.pan_field(pan)).hex().upper()
        counts.update(field[6:])
    assert set(counts) == set("ABCDEF") and min(counts.values()) > 0.8 * 6000 / 6  # 10 fill nibbles each
    assert len({pinblock.encode_format4("1234")[8:] for _ in range(50)}) == 50


def test_format4_fields_x924_3_supplement():
    """X9.24-3:2017 supplement, AES PIN block format 4: PIN 1234 -> 441234AAAAAAAAAA..., PAN 4111111111111111 -> 44111111111111111000..."""
    field = pinblock.encode_format4("1234")
    assert field[:8].hex().upper() == "441234AAAAAAAAAA"
    assert pinblock.encode_format4("1234")[8:] != field[8:]  # random second half
    assert pinblock.pan_field4("4111111111111111").hex().upper() == "44111111111111111000000000000000"
    # short PAN: left padded to 12 digits, M = 0
    assert pinblock.pan_field4("123456789").hex().upper() == "0000123456789" + "0" * 19


def test_format4_encipher_round_trip_and_pan_binding():
    key = bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB")  # X9.24-3 AES DUKPT PIN key, counter 1
    pan = "4111111111111111"
    block = pinblock.encipher_format4(key, pinblock.encode_format4("1234"), pan)
    assert pinblock.decode(pinblock.decipher_format4(key, block, pan), pan) == (4, "1234")
    with pytest.raises(pinblock.PinBlockError):  # another PAN garbles the PIN field
        pinblock.decode(pinblock.decipher_format4(key, block, "4111111111111112"), pan)


@pytest.mark.parametrize(
    "clear, pan",
    [
        ("141234FFFFFFFFFF", "4111111111111111"),  # format 1: not bound to the PAN
        ("541234FFFFFFFFFF", "4111111111111111"),  # format nibble 5
        ("021234FFFFFFFFFF", None),  # length nibble 2
        ("04123AFFFFFFFFFF", None),  # a non-decimal PIN digit
        ("041234FFFFFFFFFE", None),  # fill not F
        ("3D1234AAAAAAAAAA", None),  # format 3, length nibble 13
        ("421234AAAAAAAAAA" + "00" * 8, None),  # format 4, length nibble 2
        ("441234AAAAAAAAAB" + "00" * 8, None),  # format 4, fill not A
    ],
)
def test_invalid_blocks_give_one_message_whatever_the_fault(clear, pan):
    """Which check a clear block fails is its content: told apart, it is an oracle (PCI PIN security)."""
    pan = pan or "4000000000000000"
    raw = bytes.fromhex(clear)
    if len(raw) == 8 and raw[0] >> 4 in (0, 3):
        raw = ciphers.xor(raw, pinblock.pan_field(pan))
    with pytest.raises(pinblock.PinBlockError) as e:
        pinblock.decode(raw, pan)
    assert str(e.value) == pinblock.UNUSABLE
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    encrypted = ciphers.tdes_encrypt(key, raw) if len(raw) == 8 else pinblock.encipher_format4(key, raw, pan)
    with pytest.raises(pinblock.PinBlockError) as e:
        pinblock.decipher(key, "tdes" if len(raw) == 8 else "aes", encrypted, pan)
    assert str(e.value) == pinblock.UNUSABLE


def test_an_accepted_format_the_block_is_not_in_gives_the_same_message():
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    block = pinblock.encipher(key, "tdes", 3, "1234", "4000000000000000")
    with pytest.raises(pinblock.PinBlockError) as e:
        pinblock.decipher(key, "tdes", block, "4000000000000000", accept=(0,))
    assert str(e.value) == pinblock.UNUSABLE


def test_public_faults_say_what_is_wrong():
    """The encrypted block's length and a key that cannot carry an accepted format are no oracle."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    with pytest.raises(pinblock.PinBlockError, match="8 or 16 bytes"):
        pinblock.decode(b"\x04\x12", "4000000000000000")
    with pytest.raises(pinblock.PinBlockError, match="under a TDES key is 8 bytes, got 16"):
        pinblock.decipher(key, "tdes", bytes(16), "4000000000000000")
    with pytest.raises(pinblock.PinBlockError, match="format 4 is not accepted"):
        pinblock.decipher(key, "aes", bytes(16), "4000000000000000", accept=(0, 3))


def test_bad_pin_refused_without_quoting_it():
    with pytest.raises(pinblock.PinBlockError) as e:
        pinblock.encode_format0("12a4", "4111111111111111")
    assert "12a4" not in str(e.value)


# -- TDES DUKPT (ANSI X9.24-1:2009 Annex A.4) -------------------------------------

X924_1_PIN_BLOCK = bytes.fromhex("041274EDCBA9876F")
X924_1_SEQUENCE = [  # counter, transaction (future) key, encrypted PIN block  (A.4.2, A.4.3)
    ("FFFF9876543210E00001", "042666B49184CFA368DE9628D0397BC9", "1B9C1845EB993A7A"),
    ("FFFF9876543210E00002", "C46551CEF9FD24B0AA9AD834130D3BC7", "10A01C8D02C69107"),
    ("FFFF9876543210E00003", "0DF3D9422ACA56E547676D07AD6BADFA", "18DC07B94797B466"),
    ("FFFF9876543210E00010", "59598DCBD9BD94C094165CE453585F57", "D5D9638559EF53D6"),
    ("FFFF9876543210E00015", "E161D1956A61F6D2F37AFD7F9CC3699A", "72105C22EBC791E6"),
    ("FFFF9876543210EFF800", "F9CDFEBF4F5B1D9EB3EC12454527E176", "33365F5CC6F23C35"),
    ("FFFF9876543210EFFC00", "F9430DF975082491C77BE4EF4FDB91EE", "DEFC6F09F8927B71"),
    ("FFFF9876543210F00000", "AA4D58DB653EC74A48C75F2F047DD2B5", "73EC88AD0AC5830E"),
]


def test_tdes_ipek_annex_a():
    """X9.24-1:2009 A.4: BDK 0123..3210, KSN FFFF9876543210E00000 -> IPEK 6AC292FAA1315B4D858AB3A3D7D5933A."""
    ipek = dukpt.tdes_ipek(TDES_DEMO, bytes.fromhex("FFFF9876543210E00000"))
    assert ipek.hex().upper() == "6AC292FAA1315B4D858AB3A3D7D5933A"
    # the counter bits of the KSN never reach the IPEK
    assert dukpt.tdes_ipek(TDES_DEMO, bytes.fromhex("FFFF9876543210E00015")) == ipek


@pytest.mark.parametrize("ksn, future_key, encrypted", X924_1_SEQUENCE)
def test_tdes_dukpt_annex_a_sequence(ksn, future_key, encrypted):
    """X9.24-1:2009 A.4.2 (initial sequence) and A.4.3 (rollover): future keys and PIN blocks under the PIN variant."""
    raw = bytes.fromhex(ksn)
    ipek = dukpt.tdes_ipek(TDES_DEMO, raw)
    assert dukpt.tdes_transaction_key(ipek, raw).hex().upper() == future_key
    pin_key = dukpt.tdes_working_key(TDES_DEMO, raw, "pin")
    assert ciphers.tdes_encrypt(pin_key, X924_1_PIN_BLOCK).hex().upper() == encrypted


def test_tdes_variants_are_the_x924_masks():
    raw = bytes.fromhex("FFFF9876543210E00001")
    future = bytes.fromhex("042666B49184CFA368DE9628D0397BC9")
    assert dukpt.tdes_working_key(TDES_DEMO, raw, "pin") == ciphers.xor(future, bytes.fromhex("00000000000000FF" * 2))
    assert dukpt.tdes_working_key(TDES_DEMO, raw, "mac") == ciphers.xor(future, bytes.fromhex("000000000000FF00" * 2))
    assert dukpt.tdes_working_key(TDES_DEMO, raw, "mac-response") == ciphers.xor(
        future, bytes.fromhex("00000000FF000000" * 2)
    )
    data_variant = ciphers.xor(future, bytes.fromhex("0000000000FF0000" * 2))
    assert dukpt.tdes_working_key(TDES_DEMO, raw, "data") == ciphers.tdes_encrypt(
        data_variant, data_variant[:8]
    ) + ciphers.tdes_encrypt(data_variant, data_variant[8:])


@pytest.mark.parametrize(
    "ksn, message",
    [
        ("FFFF9876543210E00000", "counter is zero"),
        ("FFFF9876543210E007FF", "more than 10 one-bits"),  # 11 bits set: a terminal skips it
        ("FFFF9876543210FFFFFF", "more than 10 one-bits"),  # exhausted
    ],
)
def test_tdes_ksn_counter_rules(ksn, message):
    with pytest.raises(dukpt.KsnError, match=message):
        dukpt.tdes_working_key(TDES_DEMO, bytes.fromhex(ksn), "pin")


def test_tdes_ten_bit_counter_is_accepted():
    dukpt.tdes_working_key(TDES_DEMO, bytes.fromhex("FFFF9876543210E003FF"), "pin")  # 10 one-bits


# -- AES DUKPT (ANSI X9.24-3:2017 Annex B / supplement test vectors, AES-128 BDK) ----

AES_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
AES_IKID = bytes.fromhex("1234567890123456")


def test_aes_initial_key():
    """X9.24-3:2017 B.1: BDK FEDCBA9876543210F1.., initial key ID 1234567890123456 -> 1273671EA26AC29AFA4D1084127652A1."""
    assert dukpt.aes_initial_key(AES_BDK, AES_IKID).hex().upper() == "1273671EA26AC29AFA4D1084127652A1"


@pytest.mark.parametrize(
    "counter, key",
    [
        (0x00000001, "4F21B565BAD9835E112B6465635EAE44"),
        (0x00000002, "2F34D68DE10F68D38091A73B9E7C437C"),
        (0x00000003, "031504E530365CF81264238540518318"),
        (0x00000008, "718EE6CF0B27E53D5F7AF99C4D8146A2"),
        (0x0001FFFE, "E21E8C8D347F8561A2BE752DAA85A111"),
        (0x00020000, "F7AE9025468A25D37B7249CFFED224C8"),
        (0xFFFE2000, "48E585B694EB0B18D5C35443E163C0BA"),
        (0xFFFF0000, "F6BA59389BD14A9855BE9727E7C52E3C"),
    ],
)
def test_aes_derivation_keys(counter, key):
    """X9.24-3:2017 supplement test vectors: derivation (transaction) keys for the given counters."""
    ksn = AES_IKID + counter.to_bytes(4, "big")
    ik = dukpt.aes_initial_key(AES_BDK, AES_IKID)
    assert dukpt.aes_transaction_key(ik, ksn).hex().upper() == key


@pytest.mark.parametrize(
    "counter, usage, key",
    [
        (1, "pin", "AF8CB133A78F8DC2D1359F18527593FB"),
        (1, "mac-generate", "A2DC23DE6FDE0824A2BC321E08E4B8B7"),
        (1, "mac-verify", "DBB463945B286C07CD3AD82EE96FD9C9"),
        (1, "mac", "85675439D18D7F1158BD8E3EAA3D502B"),
        (1, "data-encrypt", "A35C412EFD41FDB98B69797C02DCD08F"),
        (1, "data-decrypt", "16292C6EA8F64C5420A0584BFBC577BE"),
        (1, "data", "A308E080DD15A1B741F1721BF67DE11C"),
        (1, "kek", "36A724B7BEFA5A25F5E7B5782A4554A2"),
        (2, "pin", "D30BDC73EC9714B000BEC66BDB7B6D09"),
        (8, "pin", "4D9DF3FBEE3448FC3E676D04320A90F5"),
        (8, "mac-generate", "6FD572E5D59E618875F193484F9178FB"),
    ],
)
def test_aes_working_keys(counter, usage, key):
    """X9.24-3:2017 supplement test vectors: AES-128 working keys by usage (PIN, MAC, data, KEK)."""
    ksn = AES_IKID + counter.to_bytes(4, "big")
    assert dukpt.aes_working_key(AES_BDK, ksn, usage).hex().upper() == key


@pytest.mark.parametrize("counter, message", [(0, "counter is zero"), (0x0001FFFF, "more than 16 one-bits")])
def test_aes_ksn_counter_rules(counter, message):
    """X9.24-3: counter 0x1FFFF has 17 one-bits and is never used (the supplement lists it as skipped)."""
    with pytest.raises(dukpt.KsnError, match=message):
        dukpt.aes_working_key(AES_BDK, AES_IKID + counter.to_bytes(4, "big"), "pin")


def test_working_key_from_field48_ksn():
    key, algorithm = dukpt.working_key(TDES_DEMO, "FFFF9876543210E00001", "pin")
    assert algorithm == "tdes" and key.hex().upper() == "042666B49184CF5C68DE9628D0397B36"
    key, algorithm = dukpt.working_key(AES_BDK, "123456789012345600000001", "pin")
    assert algorithm == "aes" and key.hex().upper() == "AF8CB133A78F8DC2D1359F18527593FB"
    for bad in ("FFFF", "Z" * 20, "1" * 22):
        with pytest.raises(dukpt.KsnError):
            dukpt.working_key(TDES_DEMO, bad, "pin")


def test_reused_mac_contexts_restart_the_chain_for_every_message():
    """RetailMac keeps its CBC context between messages; every MAC must equal a fresh computation."""
    import random

    rng = random.Random(8)
    key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    tdes, aes = mac.TerminalMac(key, "tdes"), mac.TerminalMac(RFC4493_KEY, "aes")
    assert tdes(b"hello world").hex().upper() == "78DA3D3DEB48FD4D"
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 100))
        assert tdes(data) == mac.retail_mac(key, data, 1)
        assert aes(data) == mac.aes_cmac(RFC4493_KEY, data)[:8]
    assert tdes(b"hello world").hex().upper() == "78DA3D3DEB48FD4D"
    assert "AAAA" not in repr(tdes) + repr(mac.RetailMac(key))
