"""switch/wiring.py: bundled adapters from configuration, dialect and header on card links, the journal key."""
from __future__ import annotations

import os
import shutil
import stat

import pytest

from switch import config, wiring

CARD = """
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
acquirer_id = "10000000001"
"""


def card(extra: str = ""):
    cfg = config.loads(CARD.replace('acquirer_id', extra + "\nacquirer_id"), "switch.toml")
    return wiring.build_acquirer(cfg.acquirers[0], 0, None, source=cfg.source)


def test_card_link_defaults():
    link = card()
    assert type(link).__name__ == "HostLinkAcquirer"
    assert link.framer_factory().encode(b"x" * 10)[:2] == b"\x00\x0a"  # binary2


@pytest.mark.parametrize("header, prefix", [("bcd2", b"\x00\x10"), ("ascii4", b"0010"), ("binary2", b"\x00\x0a")])
def test_card_link_header_from_config(header, prefix):
    assert card(f'header = "{header}"').framer_factory().encode(b"x" * 10).startswith(prefix)


def test_card_link_dialect_by_name_and_by_file(tmp_path):
    import native
    from native.iso8583 import dialect

    assert card('dialect = "iso87-ascii"').dialect is dialect("iso87-ascii")
    own = tmp_path / "acme.toml"
    shutil.copy(os.path.join(os.path.dirname(native.__file__), "dialects", "host-87-bcd.toml"), own)
    link = card(f'dialect = "{own}"')
    assert link.dialect is dialect(str(own)) and link.dialect is not dialect("host-87-bcd")


def test_an_adapter_refusal_names_the_acquirer():
    with pytest.raises(config.ConfigError) as e:
        card("options = { speed = 3 }")
    assert str(e.value) == "switch.toml: acquirer 'bank-a': card acquirers take no options table (got speed) - at `$.acquirers[0]`"


def journal_cfg(tmp_path, **journal):
    lines = [f'url = "sqlite://{tmp_path}/j.sqlite"'] + [f'{k} = "{v}"' for k, v in journal.items()]
    return config.loads("[journal]\n" + "\n".join(lines) + "\n", "switch.toml")


def test_the_journal_key_is_created_beside_the_journal_only_when_asked(tmp_path):
    cfg = journal_cfg(tmp_path)
    assert wiring.load_hmac_key(cfg, create=False) is None
    assert os.listdir(tmp_path) == []
    key = wiring.load_hmac_key(cfg)
    path = tmp_path / "j.sqlite.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert wiring.load_hmac_key(cfg, create=False) == key == wiring.load_hmac_key(cfg)


def test_the_journal_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "k").write_text("ab" * 16 + "\n")
    assert wiring.load_hmac_key(journal_cfg(tmp_path, hmac_key_file=tmp_path / "k")) == b"\xab" * 16
    monkeypatch.setenv("PAYSWITCH_TEST_KEY", "cd" * 20)
    assert wiring.load_hmac_key(journal_cfg(tmp_path, hmac_key_env="PAYSWITCH_TEST_KEY")) == b"\xcd" * 20
    monkeypatch.setenv("PAYSWITCH_TEST_KEY", "not hex")
    with pytest.raises(config.ConfigError) as e:
        wiring.load_hmac_key(journal_cfg(tmp_path, hmac_key_env="PAYSWITCH_TEST_KEY"))
    assert str(e.value) == (
        "switch.toml: environment variable PAYSWITCH_TEST_KEY must hold at least 16 bytes as hex - at `$.journal.hmac_key_env`"
    )


def test_a_missing_journal_directory_is_named_not_created(tmp_path):
    cfg = config.loads(f'[journal]\nurl = "sqlite://{tmp_path}/no/j.sqlite"\n', "switch.toml")
    for create in (False, True):
        with pytest.raises(config.ConfigError) as e:
            wiring.load_hmac_key(cfg, create=create)
        assert str(e.value) == f"switch.toml: directory {tmp_path}/no for the journal key does not exist - at `$.journal.url`"
    assert os.listdir(tmp_path) == []
