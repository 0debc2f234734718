"""Configuration: the embedded default, and every bad input named by file and key path."""
import pytest

from switch import config


def test_embedded_default_is_the_spec_sandbox():
    cfg = config.default()
    assert cfg.listeners[0].port == 8583
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 9583)
    assert cfg.journal.url == "sqlite://payswitch-journal.sqlite"
    merchant, secured = cfg.merchants
    assert merchant.id == "DEMO00000000001"
    tids = config.expand_terminals(merchant.terminals[0])
    assert tids[0] == "DEMO0001" and tids[-1] == "DEMO0999" and len(tids) == 999
    assert cfg.security.policy("DEMO00000000001") == "none"
    # v1.1: the second demo merchant, terminals under the security of section 8.
    assert secured.id == "DEMOSEC00000001" and cfg.security.policy(secured.id) == "mac+pin"
    tids = config.expand_terminals(secured.terminals[0])
    assert tids[0] == "SEC00001" and tids[-1] == "SEC00299"
    keys = {t: cfg.security.terminal_keys(secured.id, t) for t in ("SEC00001", "SEC00150", "SEC00299")}
    assert (keys["SEC00001"].tmk, keys["SEC00150"].tmk, keys["SEC00299"].bdk) == (
        "demo-tmk-tdes", "demo-tmk-aes", "demo-bdk-tdes")
    assert {a.acquirer for a in cfg.security.acquirers} == {"bank-a", "bank-b", "cup"}
    routes = {r.name: (r.prefixes, r.acquirers) for r in cfg.routes}
    assert routes["visa"] == (["4"], ["bank-a"])
    assert routes["mastercard"] == (["5", "2"], ["bank-b"])
    assert routes["unionpay"] == (["62"], ["cup"])


def _bad(text, tmp_path):
    p = tmp_path / "switch.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    return str(e.value)


BASE = """
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
"""


def test_wrong_type_names_file_and_key_path(tmp_path):
    msg = _bad('[[listeners]]\nport = "eighty"\n', tmp_path)
    assert msg == f"{tmp_path / 'switch.toml'}: Expected `int`, got `str` - at `$.listeners[0].port`"


def test_unknown_key_is_refused(tmp_path):
    msg = _bad("[http]\nprot = 1\n", tmp_path)
    assert "switch.toml" in msg and "Object contains unknown field `prot`" in msg and "$.http" in msg


def test_route_to_unknown_acquirer(tmp_path):
    msg = _bad(BASE + '[[routes]]\nname="x"\nkind="card"\nprefixes=["4"]\nacquirers=["bank-z"]\n', tmp_path)
    assert msg.endswith("unknown acquirer 'bank-z' - at `$.routes[0].acquirers[0]`")


@pytest.mark.parametrize(
    "prefix, why",
    [("4x", "is not digits"), ("30-25", "starts after it ends"), ("1-123", "different lengths")],
)
def test_bad_prefix(tmp_path, prefix, why):
    msg = _bad(BASE + f'[[routes]]\nname="x"\nkind="card"\nprefixes=["{prefix}"]\nacquirers=["bank-a"]\n', tmp_path)
    assert why in msg and "$.routes[0].prefixes[0]" in msg


def _route(name, prefixes, extra=""):
    return f'[[routes]]\nname="{name}"\nkind="card"\nprefixes={prefixes}\nacquirers=["bank-a"]\n{extra}\n'


@pytest.mark.parametrize("first, second, path", [
    ('["4"]', '["4"]', "$.routes[1].prefixes[0]"),
    ('["40-49"]', '["45"]', "$.routes[1].prefixes[0]"),
    ('["4"]', '["5", "4"]', "$.routes[1].prefixes[1]"),
])
def test_a_prefix_an_earlier_unconditional_route_takes_is_refused(tmp_path, first, second, path):
    msg = _bad(BASE + _route("first", first) + _route("second", second), tmp_path)
    assert "is never used" in msg and "route 'first'" in msg and msg.endswith(f"- at `{path}`")


@pytest.mark.parametrize("first, second", [
    (_route("refunds", '["4"]', 'processing_codes=["20"]'), _route("rest", '["4"]')),  # falls through
    (_route("short", '["4"]'), _route("longer", '["45"]')),  # the longest prefix wins
])
def test_routes_the_table_can_still_choose_are_accepted(tmp_path, first, second):
    p = tmp_path / "switch.toml"
    p.write_text(BASE + first + second)
    config.load(p)


PAN = "4761739001010119"  # a whole card number written as a prefix (an account range of a BIN table can be as long)


@pytest.mark.parametrize("first, second, prefix", [
    (_route("first", f'["{PAN}"]'), _route("second", f'["{PAN}"]'), "'476173******0119'"),  # never used
    (_route("first", '["4"]'), _route("second", f'["{PAN}x"]'), "'476173******0119x'"),  # not digits
    (_route("first", f'["{PAN}-4761739001010118"]'), "", "'476173******0119-476173******0118'"),  # backwards
    (_route("first", f'["{PAN}-476"]'), "", "'476173******0119-476'"),  # ends of different lengths
    (_route("first", '["4761739001010119000"]'), _route("second", '["4761739001010119000"]'),
     "'476173*********9000'"),  # 19 digits
])
def test_a_config_error_never_quotes_a_prefix_of_13_digits_or_more_in_full(tmp_path, first, second, prefix):
    """A prefix that long may be a card number: an error masks it as the switch masks a PAN (README)."""
    msg = _bad(BASE + first + second, tmp_path)
    assert prefix in msg and "$.routes[" in msg
    assert PAN not in msg and "4761739001010118" not in msg and PAN[:13] not in msg


def test_a_prefix_as_long_as_a_card_number_is_accepted(tmp_path):
    """Account-range tables give 16 to 19 digits per issuer range: refusing them would refuse real tables."""
    p = tmp_path / "switch.toml"
    p.write_text(BASE + _route("ranges", '["4761739001010000-4761739001019999", "4761739001020000000"]'))
    cfg = config.load(p)
    assert cfg.routes[0].prefixes[1] == "4761739001020000000"


def test_bad_endpoint(tmp_path):
    msg = _bad('[[acquirers]]\nname="a"\ntype="card"\nendpoints=["localhost"]\n', tmp_path)
    assert "expected 'host:port', got 'localhost'" in msg and "$.acquirers[0].endpoints[0]" in msg


def test_acquirer_timeout_must_fit_the_terminal_budget(tmp_path):
    msg = _bad(BASE.replace('endpoints', 'timeout = 90.0\nendpoints'), tmp_path)
    assert "shorter than response_timeout" in msg and "$.acquirers[0].timeout" in msg


@pytest.mark.parametrize("text, path, words", [
    ("reversal_retry = 5.0\nreversal_backoff_max = 2.0\n", "reversal_backoff_max",
     "2.0 is below reversal_retry (5.0)"),
    ("reversal_backoff_max = 0.0\n", "reversal_backoff_max", "0.0 is below reversal_retry (5.0)"),
    ("retransmission_window = 59.0\n", "retransmission_window", "59.0 is shorter than response_timeout (60.0)"),
    ("response_timeout = 30.0\nretransmission_window = 0.0\n", "retransmission_window",
     "0.0 is shorter than response_timeout (30.0)"),
])
def test_timing_keys_in_the_wrong_order_name_both(tmp_path, text, path, words):
    msg = _bad(text + BASE, tmp_path)
    assert msg.startswith(f"{tmp_path / 'switch.toml'}: ") and msg.endswith(f"- at `$.{path}`") and words in msg, msg


def test_timing_keys_in_order_pass(tmp_path):
    p = tmp_path / "switch.toml"
    p.write_text("reversal_retry = 5.0\nreversal_backoff_max = 5.0\nretransmission_window = 60.0\n" + BASE)
    cfg = config.load(p)
    assert (cfg.reversal_backoff_max, cfg.retransmission_window) == (5.0, 60.0)


def test_terminal_in_two_merchants(tmp_path):
    msg = _bad(
        '[[merchants]]\nid="M1"\nterminals=["T0000001-T0000005"]\n[[merchants]]\nid="M2"\nterminals=["T0000003"]\n',
        tmp_path,
    )
    assert "terminal 'T0000003' already belongs to merchant 'M1'" in msg and "$.merchants[1].terminals[0]" in msg


def test_terminals_of_one_wallet_order_prefix_are_refused(tmp_path):
    # One merchant, a range and a single ID: order numbers are terminal ID + field 7 + STAN
    # with every other character than a letter or digit as "_".
    msg = _bad('[[merchants]]\nid="M1"\nterminals=["AB 00001-AB 00009", "AB_00007"]\n', tmp_path)
    assert msg == (f"{tmp_path / 'switch.toml'}: terminal 'AB_00007' gives the same wallet order numbers as "
                   "terminal 'AB 00007' at `$.merchants[0].terminals[0]` (prefix 'AB_00007'): rename one of them"
                   " - at `$.merchants[0].terminals[1]`")
    # Field 41 is ans8: its padding is not part of the prefix either.
    msg = _bad('[[merchants]]\nid="M1"\nterminals=["AB00001"]\n[[merchants]]\nid="M2"\nterminals=["AB00001 "]\n',
               tmp_path)
    assert "terminal 'AB00001 ' gives the same wallet order numbers as terminal 'AB00001'" in msg
    assert msg.endswith("- at `$.merchants[1].terminals[0]`")


def test_distinct_order_prefixes_pass_and_the_longest_fits_the_wallets():
    cfg = config.loads('[[merchants]]\nid="M1"\nterminals=["AB_00001", "AB000001", "ab_00001"]\n')
    assert [m.terminals for m in cfg.merchants] == [["AB_00001", "AB000001", "ab_00001"]]
    from switch.core.acquirer import order_number

    longest = order_number("AB.00001", "1231235959", "999999")
    assert longest == "AB_000011231235959999999" and len(longest) == 24  # micropay: 32 at most, trade.pay 64
    assert set(longest) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def test_invalid_toml_and_missing_file(tmp_path):
    assert "invalid TOML" in _bad("listeners = [", tmp_path)
    with pytest.raises(config.ConfigError, match="nope.toml: cannot read"):
        config.load(tmp_path / "nope.toml")


def test_missing_key_env(tmp_path, monkeypatch):
    monkeypatch.delenv("PAYSWITCH_TEST_KEY", raising=False)
    msg = _bad('[journal]\nhmac_key_env = "PAYSWITCH_TEST_KEY"\n', tmp_path)
    assert "PAYSWITCH_TEST_KEY is not set" in msg and "$.journal.hmac_key_env" in msg


def test_terminal_ranges():
    assert config.expand_terminals("POS00008-POS00011") == ["POS00008", "POS00009", "POS00010", "POS00011"]
    assert config.expand_terminals("SINGLE01") == ["SINGLE01"]
    with pytest.raises(ValueError):
        config.expand_terminals("AB0009-AB0001")


def test_a_terminal_range_is_bounded_before_it_is_expanded(tmp_path):
    """A digit too many in a range ("T0000001-T9999999") once took half a minute and
    gigabytes before anything was said; nine-character IDs were expanded before
    their length was checked (a billion of them for T000000001-T999999999)."""
    def merchants(*ranges):
        return "".join(f'[[merchants]]\nid = "M{i}"\nterminals = ["{r}"]\n' for i, r in enumerate(ranges))

    msg = _bad(merchants("T0000001-T1000001"), tmp_path)
    assert msg.endswith("terminal range 'T0000001-T1000001' names 1,000,001 terminals: a configuration names "
                        "at most 1,000,000 - at `$.merchants[0].terminals[0]`"), msg
    msg = _bad(merchants("A0000001-A0600000", "B0000001-B0600000"), tmp_path)
    assert msg.endswith("terminal range 'B0000001-B0600000' names 600,000 terminals: a configuration names at "
                        "most 1,000,000, more than the 400,000 left of those - at `$.merchants[1].terminals[0]`"), msg
    msg = _bad(merchants("T00000001-T00000009"), tmp_path)
    assert msg.endswith("terminal ID 'T00000001' must be 1 to 8 characters - at `$.merchants[0].terminals[0]`"), msg


SECURED = BASE + """
[[merchants]]
id = "SHOP00000000001"
terminals = ["SHOP0001-SHOP0009"]

[security.module]
kind = "software"
key_store = "keys.json"
master_key_env = "PAYSWITCH_MASTER"
"""


@pytest.mark.parametrize("extra, path, words", [
    ('[[security.merchants]]\nmerchant = "SHOP00000000001"\npolicy = "mac"\n',
     "security.merchants[0].terminals", "needs terminal keys"),
    ('[[security.merchants]]\nmerchant = "NOSUCH000000001"\n',
     "security.merchants[0].merchant", "no merchant"),
    ('[[security.merchants]]\nmerchant = "SHOP00000000001"\npolicy = "mac"\n'
     '[[security.merchants.terminals]]\nterminals = "SHOP0001-SHOP0009"\ntmk = "t"\nbdk = "b"\n',
     "security.merchants[0].terminals[0]", "exactly one of tmk or bdk"),
    ('[[security.acquirers]]\nacquirer = "bank-z"\nzpk = "z"\n', "security.acquirers[0].acquirer", "no acquirer"),
    ('[[security.acquirers]]\nacquirer = "bank-a"\nzpk = "zpk-a"\nzmk = "zmk-a"\n', "security.acquirers[0].zmk",
     "not supported: the switch never reads it"),
])
def test_security_problems_name_their_key_path(tmp_path, extra, path, words):
    msg = _bad(SECURED + extra, tmp_path)
    assert msg.endswith(f"- at `$.{path}`") and words in msg, msg


def test_a_policy_needs_a_module(tmp_path):
    text = BASE + """
[[merchants]]
id = "SHOP00000000001"
terminals = ["SHOP0001"]

[[security.merchants]]
merchant = "SHOP00000000001"
policy = "mac"
[[security.merchants.terminals]]
terminals = "SHOP0001"
tmk = "shop-tmk"
"""
    msg = _bad(text, tmp_path)
    assert msg.endswith("- at `$.security.module`") and "needs a security module" in msg


@pytest.mark.parametrize("section, host, why", [
    ("http", "999.1.1.1", "Octet 999 (> 255) not permitted in '999.1.1.1'"),
    ("http", "1.2.3", "Expected 4 octets in '1.2.3'"),  # the resolver would read 1.2.0.3
    ("http", "::g", "Only hex digits permitted in 'g' in '::g'"),
    ("listeners", "999.1.1.1", "Octet 999 (> 255) not permitted in '999.1.1.1'"),
    ("listeners", "1.2.3", "Expected 4 octets in '1.2.3'"),
    ("listeners", "::g", "Only hex digits permitted in 'g' in '::g'"),
])
def test_an_invalid_ip_address_is_named_before_the_token_rule(tmp_path, section, host, why):
    table = "[http]" if section == "http" else "[[listeners]]"
    path = "http.host" if section == "http" else "listeners[0].host"
    msg = _bad(f'{table}\nhost = "{host}"\n', tmp_path)
    assert msg == f"{tmp_path / 'switch.toml'}: invalid IP address: {why} - at `$.{path}`"


def test_host_names_and_valid_addresses_are_still_accepted():
    for host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "switch-1.example"):  # "[::1]" is refused: it cannot be bound
        token = "" if host in ("localhost", "127.0.0.1", "::1") else 'admin_token_env = "PAYSWITCH_ADMIN_TOKEN"\n'
        config.loads(f'[http]\nhost = "{host}"\n{token}[[listeners]]\nhost = "{host}"\n', "x.toml")


def test_the_loader_records_the_sections_a_file_leaves_out(tmp_path):
    assert config.loads("", "x.toml").left_out == ("listeners", "merchants")
    assert config.loads('[[listeners]]\nport = 8583\n', "x.toml").left_out == ("merchants",)
    assert config.default().left_out == ()
    # Set by the loader, never a key of the file; a reload that adds merchants applies them and nothing else.
    assert _bad("left_out = []\n", tmp_path).endswith("Object contains unknown field `left_out`")
    with_merchant = config.loads('[[merchants]]\nid = "SHOP00000000001"\nterminals = ["SHOP0001"]\n', "x.toml")
    assert config.reload_changes(config.loads("", "x.toml"), with_merchant) == (["merchants"], [])


@pytest.mark.parametrize("text, path, code", [
    ('[[merchants]]\nid="M1"\nterminals=["T1"]\ncurrency="999"\n', "merchants[0].currency", "999"),
    ('[[merchants]]\nid="M1"\nterminals=["T1"]\ncurrency="97"\n', "merchants[0].currency", "97"),
    ('[[merchants]]\nid="M1"\nterminals=["T1"]\ncurrency="EUR"\n', "merchants[0].currency", "EUR"),
    ('[[acquirers]]\nname="w"\ntype="wallet-micropay"\nendpoints=["http://127.0.0.1:1"]\nsecret_file="s"\ncurrency="000"\n',
     "acquirers[1].currency", "000"),
    (_route("x", '["4"]', 'currencies=["978", "963"]'), "routes[0].currencies[1]", "963"),
])
def test_a_currency_that_iso_4217_does_not_list_is_refused_naming_the_key(tmp_path, text, path, code):
    msg = _bad(BASE + text, tmp_path)
    assert msg == (f"{tmp_path / 'switch.toml'}: expected the ISO 4217 numeric code of a currency, "
                   f"got {code!r} - at `$.{path}`")


def test_currencies_iso_4217_lists_are_accepted(tmp_path):
    p = tmp_path / "switch.toml"
    p.write_text(BASE + '[[merchants]]\nid="M1"\nterminals=["T1"]\ncurrency="978"\n'
                 + _route("x", '["4"]', 'currencies=["840", "344"]'))
    assert config.load(p).merchants[0].currency == "978"
