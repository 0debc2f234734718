"""The switch as a PCI DSS assessor tests it: no full PAN, track data, CVV
or PIN block leaves the switch (logs, journal, error messages, CLI output,
partner calls); keys are never in clear in the configuration; the
sandbox's public keys never work outside the sandbox.
"""
from __future__ import annotations

import pytest

from native.iso8583 import build_tlv48
from tests import test_vas as tv
from tests.test_service import VISA, call, request
from tests.test_vas import plugin_registered  # noqa: F401  (autouse: the scripted service, its keys)

GROUPED = ("4761 7390 0101 0119", "4761-7390-0101-0119", "4761 739001 010119")


# -- free text: one masking rule ----------------------------------------------------


@pytest.mark.parametrize("text, masked", [
    ("card 4761739001010119 ok", "card 476173******0119 ok"),
    ("card 4761 7390 0101 0119 ok", "card 4761 73** **** 0119 ok"),
    ("4761-7390-0101-0119", "4761-73**-****-0119"),
    ("RRN 000000004711 4761739001010119", "RRN 000000004711 476173******0119"),
    ("+25 PTS BALANCE 1234", "+25 PTS BALANCE 1234"),
    ("4761739001010118", "4761739001010118"),          # not Luhn-valid: not a card number
    ("47617390010101190000", "47617390010101190000"),  # 20 digits: not a card number
])
def test_mask_pans_masks_card_numbers_in_free_text_grouped_or_not(text, masked):
    from native.panguard import holds_pan, mask_pans

    assert mask_pans(text) == masked
    assert holds_pan(text) == (text != masked)


# -- value-added services ---------------------------------------------------------------


@pytest.mark.parametrize("coupon", (VISA,) + GROUPED + ("CARD" + VISA,))
def test_a_coupon_holding_a_card_number_goes_to_no_service(coupon):
    tv.Plugin.behaviour = {"before": lambda p: {"line": f"COUPON {p['coupon']} UNKNOWN"},
                           "after": lambda p: {"line": "+25 PTS"}}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000002500", f48=build_tlv48({"CP": coupon})))
        assert resp[39] == "00"
        return resp

    resp = tv.run(scenario)
    assert tv.SEEN and all(p["coupon"] is None for _, p in tv.SEEN)
    assert "4761739001010119" not in tv.tags(resp)["LY"].replace(" ", "").replace("-", "")


def test_a_plain_coupon_still_goes_to_the_services():
    tv.Plugin.behaviour = {"before": lambda p: {}}

    async def scenario(sw):
        await call(sw, request(amount="000000002500", f48=build_tlv48({"CP": "SPRING10"})))

    tv.run(scenario)
    assert tv.SEEN and all(p["coupon"] == "SPRING10" for _, p in tv.SEEN)


@pytest.mark.parametrize("written", (VISA,) + GROUPED)
def test_a_receipt_line_from_a_service_never_carries_a_card_number(written):
    tv.Plugin.behaviour = {"before": lambda p: {"line": f"CARD {written} SEEN"},
                           "after": lambda p: {"line": f"MEMBER {written}"}}

    async def scenario(sw):
        return await call(sw, request(amount="000000002500"))

    line = tv.tags(tv.run(scenario))["LY"]
    digits = "".join(ch for ch in line if ch.isdigit() or ch == "*")
    assert "4761739001010119" not in line.replace(" ", "").replace("-", "")
    assert digits.count("476173******0119") == 2, line


# -- error messages of undecodable messages -------------------------------------------------


@pytest.mark.parametrize("written", GROUPED)
def test_a_decode_error_never_quotes_a_grouped_card_number(written):
    from native.iso8583 import DecodeError, dialect

    t87 = dialect("terminal-87")
    raw = bytearray(t87.encode({"mti": "0200", 3: "000000", 43: (written + "Z").ljust(40)}))
    raw[-3] = 0x01  # not a printable character: field 43 (merchant name, not a card field) cannot be decoded
    with pytest.raises(DecodeError) as e:
        msg = t87.decode(bytes(raw))
        msg[43]
    text = str(e.value)
    assert text.startswith("field 43: expected 40 printable characters at offset 18, found 40 bytes holding ")
    assert "value not shown" in text
    assert "4761 7390 0" not in text and "4761-7390-0" not in text and "4761 739001" not in text


@pytest.mark.parametrize("written", (VISA,) + GROUPED)
def test_an_encode_error_never_quotes_a_card_number(written):
    from native.iso8583 import EncodeError, dialect

    with pytest.raises(EncodeError) as e:
        dialect("terminal-87").encode({"mti": "0200", 43: (written + "é").ljust(40)})
    assert "4761739001010119" not in str(e.value).replace(" ", "").replace("-", ""), str(e.value)


@pytest.mark.parametrize("written", GROUPED[:2])
def test_the_host_links_error_scrubber_masks_grouped_card_numbers(written):
    from adapters.card.messages import scrub

    assert "0101" not in scrub(f"field 43 value {written} bad")


# -- payswitch send -----------------------------------------------------------------------


def test_send_masks_card_numbers_in_every_field_it_prints():
    from switch.client import describe

    pan = bytes.fromhex("4761739001010119")
    answer = {"mti": "0210", 39: "00", 43: "SHOP 4761-7390-0101-0119",
              48: build_tlv48({"LY": "MEMBER 4761 7390 0101 0119", "CP": VISA}),
              55: b"\x5a\x08" + pan + b"\x57\x0c" + pan + bytes.fromhex("D2512201") + b"\x91\x02\x01\x02"}
    text = "\n".join(describe(answer))
    assert "0101" not in text and "010119" not in text and "4761739001010119" not in text, text
    assert "476173" in text  # masked, not dropped: first 6 and last 4
    assert "5A(withheld) 57(withheld) 91020102" in text  # the rest of the EMV data is shown


def test_send_masks_card_numbers_in_the_errors_it_prints(monkeypatch, capsys):
    from switch import cli, client

    class Broken:
        def __init__(self, *a, **kw):
            raise ValueError("answer cannot be decoded: field 43 b'4761 7390 0101 0119'")

    monkeypatch.setattr(client, "Terminal", Broken)
    assert cli.main(["send", "purchase", "--pan", "4111111111111111", "--amount", "100"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "0101 0119" not in err and "4761 73** **** 0119" in err
