"""The payShield-style codec and host logic, without sockets: every frame fed three ways."""
import pytest

from switch.security import pinblock, sandbox, thales
from switch.security.ciphers import tdes_decrypt, tdes_encrypt
from switch.security.mac import kcv, terminal_mac
from switch.security.thales_host import Host, Lmk

LMK = Lmk(sandbox.HSM_LMK_HEX)
TABLE = sandbox.hsm_key_table()
PAN = "4761739001010010"
ACCOUNT = "173900101001"  # the 12 digits left of the check digit

SAMPLES = {
    "CA": {"source_key": "U" + "1" * 32, "destination_key": "U" + "2" * 32, "max_pin_length": "12",
           "pin_block": "0123456789ABCDEF", "source_format": "01", "destination_format": "01", "account": ACCOUNT},
    "CC": {"source_key": "U" + "1" * 32, "destination_key": "R" + "2" * 48, "max_pin_length": "12",
           "pin_block": "0123456789ABCDEF", "source_format": "47", "destination_format": "48", "account": PAN},
    "CI": {"bdk": "U" + "3" * 32, "destination_key": "U" + "2" * 32, "ksn": "FFFF9876543210E00001",
           "pin_block": "0123456789ABCDEF", "destination_format": "01", "account": ACCOUNT},
    "G0": {"bdk": "R" + "3" * 48, "destination_key": "U" + "2" * 32, "ksn": "123456789012345600000001",
           "pin_block": "0123456789ABCDEF0123456789ABCDEF", "source_format": "48", "destination_format": "01",
           "account": PAN},
    "M6": {"mode": "0", "input_format": "0", "mac_size": "1", "algorithm": "3", "padding": "1", "key_type": "003",
           "key": "U" + "4" * 32, "data": "0200\x00\x01binary;data"},
    "M8": {"mode": "0", "input_format": "0", "mac_size": "1", "algorithm": "6", "padding": "0", "key_type": "003",
           "key": "R" + "4" * 48, "data": "x" * 300, "mac": "0011223344556677"},
    "GW": {"mode": "0", "bdk": "U" + "3" * 32, "ksn": "FFFF9876543210E00001", "data": "abc", "mac": "0011223344556677"},
    "A0": {"mode": "1", "key_type": "003", "scheme_lmk": "U", "kek_flag": "1", "kek": "U" + "5" * 32, "scheme_kek": "X"},
    "A6": {"key_type": "001", "kek": "U" + "6" * 32, "key": "X" + "7" * 32, "scheme_lmk": "U"},
    "NC": {},
}


def feed_three_ways(stream: bytes, expected_frames: int):
    """Whole, byte by byte, and with the first bytes of the next frame after it."""
    whole = thales.Framer().feed(stream)
    assert len(whole) == expected_frames
    byte_framer = thales.Framer()
    one_by_one = [f for i in range(len(stream)) for f in byte_framer.feed(stream[i : i + 1])]
    assert one_by_one == whole and byte_framer.pending == 0
    trailing = thales.Framer()
    assert trailing.feed(stream + stream[:3]) == whole and trailing.pending == 3
    return whole


@pytest.mark.parametrize("code", sorted(SAMPLES))
def test_every_request_round_trips_three_ways(code):
    framed = thales.encode_request("0042", code, SAMPLES[code])
    (body,) = feed_three_ways(framed, 1)
    msg = thales.decode_request(body)
    assert (msg.header, msg.code, msg.fields) == ("0042", code, SAMPLES[code])


def test_several_frames_in_one_stream():
    stream = b"".join(thales.encode_request("%04d" % i, code, SAMPLES[code]) for i, code in enumerate(sorted(SAMPLES)))
    bodies = feed_three_ways(stream, len(SAMPLES))
    assert [thales.decode_request(b).code for b in bodies] == sorted(SAMPLES)


def test_layouts_cover_the_documented_subset():
    assert sorted(thales.REQUESTS) == ["A0", "A6", "CA", "CC", "CI", "G0", "GW", "M6", "M8", "NC"]
    for code in thales.REQUESTS:
        assert thales.response_code(code) in thales.RESPONSES


def test_ca_bytes_match_the_public_layout():
    framed = thales.encode_request("0000", "CA", SAMPLES["CA"])
    assert framed[2:] == (b"0000CA" + b"U" + b"1" * 32 + b"U" + b"2" * 32 + b"12" + b"0123456789ABCDEF" + b"0101"
                          + ACCOUNT.encode())
    assert int.from_bytes(framed[:2], "big") == len(framed) - 2


def test_m6_bytes_match_the_public_layout():
    # header, M6, mode 0, input 0 (binary), size 1, algorithm 3, padding 1, key type 003, key, 4H length, data
    framed = thales.encode_request("0002", "M6", {**SAMPLES["M6"], "data": b"\x00\xff"})
    assert framed[2:] == b"0002M6" + b"00131003" + b"U" + b"4" * 32 + b"0002" + b"\x00\xff"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"0000ZZ", "command code 'ZZ' at offset 4 is not in this subset"),
        (b"0000CAQ" + b"1" * 32, "CA field source_key at offset 6: key scheme 'Q' is not one of UXTYR"),
        (b"0000CAU" + b"1" * 10, "CA field source_key at offset 7: expected 32 characters, got 10"),
        (thales.encode_request("0000", "NC", {})[2:] + b"X", "NC at offset 6: 1 characters after the last field"),
        (b"0000M600131003U" + b"4" * 32 + b"00G1", "M6 field data length at offset 47: expected 4 hex digits"),
        (b"0000GW0U" + b"3" * 32 + b"123", "GW field ksn at offset 40: KSN descriptor '123' is not 906 or A12"),
        (b"00", "expected header (4) and code"),
    ],
)
def test_decode_errors_name_field_and_offset(body, message):
    with pytest.raises(thales.CodecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        thales.decode_request(body)


@pytest.mark.parametrize("length", [b"\x00\x00", b"\x80\x00"])
def test_framer_refuses_bad_lengths(length):
    with pytest.raises(thales.CodecError, match="frame length"):
        thales.Framer().feed(length + b"0000NC")


def test_responses_round_trip():
    for code, fields in {
        "CB": {"pin_length": "04", "pin_block": "0123456789ABCDEF", "destination_format": "01"},
        "G1": {"pin_length": "04", "pin_block": "0123456789ABCDEF" * 2, "destination_format": "48"},
        "M7": {"mac": "0011223344556677"},
        "A1": {"key": "U" + "1" * 32, "key_under_kek": "X" + "2" * 32, "kcv": "08D7B4"},
        "ND": {"lmk_check": "0" * 16, "firmware": "PS-SIM-01"},
    }.items():
        framed = thales.encode_response("0007", code, "00", fields)
        (body,) = feed_three_ways(framed, 1)
        msg = thales.decode_response(body)
        assert (msg.header, msg.code, msg.error, msg.fields) == ("0007", code, "00", fields)
    failed = thales.decode_response(thales.encode_response("0007", "CB", "20")[2:])
    assert (failed.code, failed.error, failed.fields) == ("CB", "20", {})


def test_message_repr_hides_fields():
    msg = thales.decode_request(thales.encode_request("0000", "CA", SAMPLES["CA"])[2:])
    assert "0123456789ABCDEF" not in repr(msg) and ACCOUNT not in repr(msg)


# -- host logic (what the simulator runs) ------------------------------------------

def call(code, fields, header="0001"):
    body = Host(LMK).handle(thales.encode_request(header, code, fields)[2:])
    msg = thales.decode_response(body[2:])
    assert msg.header == header and msg.code == thales.response_code(code)
    return msg


def test_host_ca_translates_and_checks_the_format():
    tmk = bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
    tpk_token = LMK.encrypt(tmk, "tdes", "002")  # any TDES key will do as a TPK here
    block = tdes_encrypt(tmk, pinblock.encode_format0("1234", PAN))
    fields = {"source_key": tpk_token, "destination_key": TABLE["zpk-bank-a"]["token"], "max_pin_length": "12",
              "pin_block": block, "source_format": "01", "destination_format": "01", "account": ACCOUNT}
    answer = call("CA", fields)
    assert answer.error == "00" and answer.fields["pin_length"] == "04"
    zpk = bytes.fromhex(sandbox.ZPKS["bank-a"])
    assert pinblock.decode(tdes_decrypt(zpk, bytes.fromhex(answer.fields["pin_block"])), PAN) == (0, "1234")
    assert call("CA", {**fields, "source_format": "47"}).error == "20"  # it is a format 0 block
    assert call("CA", {**fields, "destination_format": "05"}).error == "23"  # never into format 1
    assert call("CA", {**fields, "max_pin_length": "03"}).error == "24"
    # a ZPK cryptogram presented as a TPK decrypts to another key: no valid block
    assert call("CA", {**fields, "source_key": TABLE["zpk-bank-a"]["token"]}).error == "20"


def test_host_mac_generate_and_verify():
    tak = bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")
    token = LMK.encrypt(tak, "tdes", "003")
    data = b"0200 some message bytes"
    m6 = call("M6", {**SAMPLES["M6"], "key": token, "data": data})
    assert m6.error == "00" and m6.fields["mac"] == terminal_mac(tak, data, "tdes").hex().upper()
    assert call("M8", {**SAMPLES["M6"], "key": token, "data": data, "mac": m6.fields["mac"]}).error == "00"
    assert call("M8", {**SAMPLES["M6"], "key": token, "data": data + b"!", "mac": m6.fields["mac"]}).error == "01"
    assert call("M6", {**SAMPLES["M6"], "key": token, "data": data, "algorithm": "6", "padding": "0"}).error == "15"


def test_host_a0_a6_nc():
    tmk = bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
    a0 = call("A0", {**SAMPLES["A0"], "kek": TABLE["demo-tmk-tdes"]["token"]})
    assert a0.error == "00"
    session = tdes_decrypt(tmk, bytes.fromhex(a0.fields["key_under_kek"][1:]))
    assert kcv(session, "tdes") == a0.fields["kcv"]
    assert LMK.decrypt(a0.fields["key"], "003")[0] == session
    zmk = bytes.fromhex("89E88CF7931444F334BD7547FC3F380C")
    zpk = bytes.fromhex("F039121BEC83D26B169BDCD5B22AAF8F")
    a6 = call("A6", {"key_type": "001", "kek": LMK.encrypt(zmk, "tdes", "000"),
                     "key": "X" + tdes_encrypt(zmk, zpk).hex().upper(), "scheme_lmk": "U"})
    assert a6.error == "00" and a6.fields["kcv"] == kcv(zpk, "tdes") and LMK.decrypt(a6.fields["key"], "001")[0] == zpk
    nc = call("NC", {})
    assert nc.fields == {"lmk_check": LMK.check(), "firmware": "PS-SIM-01"}


def test_host_answers_garbage_with_an_error_not_a_crash():
    host = Host(LMK)
    for body in (b"0001CAxyz", b"0001??", b"0001M6" + bytes(range(256)), b"0001"):
        answer = host.handle(body)
        assert answer[6:8] in (b"15", b"68") or answer[8:10] in (b"15", b"68")
