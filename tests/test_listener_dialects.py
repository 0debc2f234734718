"""A dialect per listener: configuration, and the codec each listener answers in."""
from __future__ import annotations

import iso8583
import pytest
from iso8583.specs import default_ascii as PYISO_ASCII

from native.iso8583 import DecodeError, dialect
from switch import config
from switch.core import messages as m
from switch.core.codecs import HexFieldsCodec, listener_codec
from tests import samples

# ---------------------------------------------------------------------------
# configuration


def test_the_embedded_default_has_a_terminal_87_and_an_iso87_ascii_listener():
    cfg = config.default()
    assert [(lst.port, lst.dialect) for lst in cfg.listeners] == [(8583, "terminal-87"), (8584, "iso87-ascii")]


def test_a_listener_takes_a_shipped_dialect_or_a_dialect_file(tmp_path):
    own = tmp_path / "fleet-b.toml"
    own.write_text(pathlib_text("terminal-87").replace('name = "terminal-87"', 'name = "fleet-b"'))
    cfg = config.loads(
        f'[[listeners]]\nport = 1\ndialect = "host-87-bcd"\n[[listeners]]\nport = 2\ndialect = "{own}"\n', "x.toml"
    )
    assert [lst.dialect for lst in cfg.listeners] == ["host-87-bcd", str(own)]
    assert listener_codec(cfg.listeners[1].dialect).name == "fleet-b"


def pathlib_text(name: str) -> str:
    with open(dialect(name).path) as f:
        return f.read()


def _bad(text: str, tmp_path) -> str:
    p = tmp_path / "switch.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    return str(e.value)


def test_an_unknown_dialect_name_is_a_config_error_naming_key_and_file(tmp_path):
    msg = _bad('[[listeners]]\nport = 1\n[[listeners]]\nport = 2\ndialect = "iso93-binary"\n', tmp_path)
    assert msg == (
        f"{tmp_path / 'switch.toml'}: unknown dialect 'iso93-binary': expected one of "
        "host-87-bcd, iso87-ascii, terminal-87 or a path to a .toml file - at `$.listeners[1].dialect`"
    )


def test_a_missing_or_broken_dialect_file_is_a_config_error_naming_both_files(tmp_path):
    missing = tmp_path / "nowhere.toml"
    msg = _bad(f'[[listeners]]\ndialect = "{missing}"\n', tmp_path)
    assert msg == f"{tmp_path / 'switch.toml'}: {missing}: cannot read dialect: No such file or directory - at `$.listeners[0].dialect`"
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "broken"\nmti = "ascii"\n')
    msg = _bad(f'[[listeners]]\ndialect = "{broken}"\n', tmp_path)
    assert msg.startswith(f"{tmp_path / 'switch.toml'}: {broken}: ") and msg.endswith(" - at `$.listeners[0].dialect`")


# ---------------------------------------------------------------------------
# codecs


def test_terminal_87_is_the_compiled_dialect_itself():
    assert listener_codec("terminal-87") is dialect("terminal-87")
    assert listener_codec("host-87-bcd") is dialect("host-87-bcd")  # no hex-text fields


def test_iso87_ascii_presents_binary_fields_as_bytes_and_answers_in_hex_text():
    codec = listener_codec("iso87-ascii")
    assert isinstance(codec, HexFieldsCodec) and codec.hex_fields >= {52, 55, 64, 128}
    doc = {str(k) if k != "mti" else "t": (v.hex().upper() if isinstance(v, bytes) else v)
           for k, v in samples.terminal_0200().items()}
    raw, _ = iso8583.encode(doc, PYISO_ASCII)  # a pyiso8583 default_ascii terminal
    msg = codec.decode(bytes(raw))
    assert msg[55] == samples.icc_request() and msg[52] == samples.terminal_0200()[52]
    m.check_icc(msg[55])
    resp = m.build_response(msg, "00", "000000000042", auth_code="A1B2C3", icc=samples.icc_response())
    body = codec.encode(resp)
    answer, _ = iso8583.decode(body, PYISO_ASCII)
    assert answer["t"] == "0210" and answer["39"] == "00" and answer["11"] == doc["11"]
    assert answer["55"] == samples.icc_response().hex().upper()
    assert "52" not in answer and "2" not in answer


def test_iso87_ascii_decode_errors_are_the_wire_dialects_and_salvage_reads_the_wire():
    codec = listener_codec("iso87-ascii")
    good = codec.encode({"mti": "0200", 3: "000000", 11: "000321", 41: "DEMO0001", 55: b"\x9a\x03\x25\x11\x24"})
    assert good.endswith(b"0109A03251124")
    odd = good[:-13] + b"0099A0325112"  # 9 hex digits of field 55
    with pytest.raises(DecodeError, match="^field 55: 9 hex digits, expected an even number$"):
        codec.decode(odd)
    assert m.salvage_echo(odd, codec, {"DEMO0001"}) == {"mti": "0210", 11: "000321", 41: "DEMO0001"}
