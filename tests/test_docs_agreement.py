"""The documents agree with the code: every bounded key's range in the README,
every key of the value-added services in their document, every metric, alert
and admin endpoint the runbook names."""
from __future__ import annotations

import re

import msgspec

from switch import config, config_places, config_vas
from tests.test_docs import README, section
from tests.test_ops_files import OPS, ROOT, alerts, exported_names

RUNBOOK = (OPS / "runbook.md").read_text()
VAS_DOC = (ROOT / "docs" / "value-added-services.md").read_text()


# --- ranges -------------------------------------------------------------------------


def range_rows() -> list[str]:
    """The rows of the README's table of ranges (| keys | range |)."""
    table = section(README, "## Configuration reference").split("| keys | range |")[1].split("\n\n")[0]
    return [line for line in table.splitlines() if line.startswith("| `")]


def bounded_keys() -> dict[str, float]:
    """Every key config_places (and config.py: frame size, ports) bounds, with its highest value."""
    tables = {"": config_places._TOP, "listeners.": config_places._LISTENER, "acquirers.": config_places._ACQUIRER,
              "security.module.": config_places._HSM, "vas.": config_places._VAS, "events.": config_places._EVENTS,
              "token_keys.": config_places._TOKEN_KEY, "routes.": config_places._ROUTE}
    out = {prefix + key: high for prefix, table in tables.items() for key, _low, high, _open in table}
    out["listeners.max_frame"] = 65535
    out.update({"listeners.port": 65535, "http.port": 65535, "simulators.port": 65535})  # config.py's own checks
    return out


def spelled(high: float) -> set[str]:
    """The ways a range's upper bound is written in the README: 600, 86400, 1,000,000, 7 days."""
    n = int(high)
    ways = {str(n), f"{n:,}"}
    if n >= 2 * 86400 and n % 86400 == 0:
        ways.add(f"{n // 86400} days")
    return ways


def range_row_keys() -> dict[str, str]:
    """Each key the table of ranges names -> its row.  A row names `listeners.frame_timeout`,
    `idle_timeout`: a key without a dot is in the table of the dotted key before it."""
    out = {}
    for row in range_rows():
        prefix = ""
        for token in re.findall(r"`([a-z_.]+)`", row):
            if "." in token:
                prefix = token.rsplit(".", 1)[0] + "."
                out.setdefault(token, row)
            else:
                out.setdefault(prefix + token, row)  # its own row first; a later one may only mention it
    return out


def test_every_bounded_key_has_its_range_in_the_readme():
    rows = range_row_keys()
    missing = sorted(k for k in bounded_keys() if k not in rows)
    wrong = [f"{key}: at most {high}, README: {rows[key]}" for key, high in bounded_keys().items()
             if key in rows and not any(way in rows[key] for way in spelled(high))]
    assert (missing, wrong) == ([], [])


# --- value-added services, tokens, events ---------------------------------------------


def struct_keys(struct: type) -> set[str]:
    return {f.name for f in msgspec.structs.fields(struct)}


def test_every_key_of_the_services_tokens_and_events_is_in_their_document():
    """The README's reference sends these sections to docs/value-added-services.md: each key is named there."""
    undocumented = []
    for struct, heading in ((config_vas.TokenKey, "[[token_keys]]"), (config_vas.VasService, "[[vas]]"),
                            (config_vas.Events, "[events]"), (config_vas.Partner, "[[events.partners]]")):
        for key in struct_keys(struct):
            if key == "partners":  # the [[events.partners]] table itself
                continue
            if not re.search(rf"`{key}`|^#? *{key} *=|[ ,{{]{key} *=", VAS_DOC, re.M):
                undocumented.append(f"{heading} {key}")
    assert undocumented == []


def test_the_readme_points_to_that_document_for_exactly_those_sections():
    row = next(line for line in section(README, "## Configuration reference").splitlines()
               if "`[[token_keys]]`" in line)
    assert "docs/value-added-services.md" in row and "`[[vas]]`" in row and "`[events]`" in row
    assert set(config.Config.__struct_fields__) >= {"token_keys", "vas", "events"}


# --- the runbook ------------------------------------------------------------------------


def named_metrics(text: str) -> set[str]:
    """Series names a document gives in full (``payswitch_reversal_*`` is a family, not a name)."""
    return {m for m in re.findall(r"\bpayswitch_[a-z0-9_]+\b", text) if not m.endswith("_")}


def test_the_runbook_the_readme_and_docs_name_only_exported_metrics():
    declared = exported_names()
    declared |= {n.rsplit("_", 1)[0] for n in declared if n.endswith("_bucket")}  # a histogram by its name
    docs = {"runbook": RUNBOOK, "README": README} | {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    unknown = {doc: sorted(n for n in named_metrics(text) if n not in declared) for doc, text in docs.items()}
    assert unknown == {doc: [] for doc in docs}


def test_the_runbook_names_only_alerts_of_the_rules():
    rules = set(alerts())
    named = set(re.findall(r"\bPayswitch[A-Z][A-Za-z]+\b", RUNBOOK))
    assert sorted(named - rules) == []


def test_the_runbook_names_only_endpoints_the_admin_http_serves():
    from switch.io import fleet_http, http

    served = {p.decode() for p in http._ROUTES} | {p.decode() for p in fleet_http._FLEET_ROUTES if isinstance(p, bytes)}
    close = re.compile(r"^/admin/reversals/[^/]+/close$")
    for doc, text in (("runbook", RUNBOOK), ("README", README)):
        for path in set(re.findall(r"(?<![\w.])(/(?:admin|metrics|healthz|readyz|status)[\w./<>-]*)", text)):
            path = path.rstrip(".")
            if path in ("/admin/", "/admin") or close.match(path):
                continue
            assert path in served, f"{doc} names {path}, which the admin HTTP does not serve"


# --- the README's sample error lines -------------------------------------------------


_SAMPLE_FILES = {  # a switch.toml that makes each sample line of the configuration reference
    "$.listeners[0].port": '[[listeners]]\nport = "8583"\n',
    "$.journal.url": '[journal]\nurl = "postgresql://db/payswitch"\n',
    "$.routes[0].acquirers[0]": (
        '[[acquirers]]\nname = "wallet-a"\ntype = "wallet-tradepay"\nendpoints = ["http://127.0.0.1:9201"]\n'
        'merchant_key_file = "m.pem"\nwallet_public_key_file = "w.pem"\n'
        '[[routes]]\nname = "cards"\nkind = "card"\nprefixes = ["4"]\nacquirers = ["wallet-a"]\n'),
}


def test_the_sample_configuration_errors_are_what_the_switch_prints():
    block = section(README, "## Configuration reference").split("exit 2, so a systemd")[1].split("```")[1]
    samples = [line for line in block.splitlines() if line.startswith("payswitch: configuration error:")]
    assert len(samples) == len(_SAMPLE_FILES)
    for line in samples:
        path = line.rsplit("`", 2)[1]
        try:
            config.loads(_SAMPLE_FILES[path], "switch.toml")
        except config.ConfigError as e:
            assert config.error_line(e, None) == line
        else:
            raise AssertionError(f"no error for {path}")


def test_an_http_service_refuses_an_options_table_it_would_ignore(tmp_path):
    """The document says the http type reads no options: a table given to it is a mistake, said at load."""
    import pytest

    from adapters.vas.http import http

    secret = tmp_path / "secret"
    secret.write_text("ab" * 16 + "\n")
    service = config_vas.VasService(name="loyalty", merchants=["M1"], url="http://127.0.0.1:9401",
                                    secret_file=str(secret), options={"stamps": 5})
    with pytest.raises(ValueError, match=r"http services take no options table \(got stamps\)"):
        http(service)


# --- the spec's sandbox (section 7) and the embedded default --------------------------


def test_the_demo_merchants_refund_up_to_100000_minor_units_in_any_currency():
    """Spec 6.1: "The demo merchant refunds at most 1000.00 (100000 minor units) at once": a refund
    of the sandbox in whatever field 49 a newcomer's client sends is held to that, never refused 12."""
    import pytest

    from switch.core import messages, refunds
    from switch.core.currencies import CURRENCIES

    for merchant in config.default().merchants:
        for currency in sorted(CURRENCIES):
            assert refunds.limit_in(merchant.refund_max, currency, merchant.currency) == 100000, (merchant.id, currency)
        assert refunds.limit_in(merchant.refund_daily_max, "840", merchant.currency) is None
    with pytest.raises(messages.Rejection):  # a merchant of one's own still names its currencies
        refunds.limit_in({"978": 100000}, "840", "978")


# --- the README's commands ----------------------------------------------------------


def test_every_option_the_readme_gives_a_command_is_one_the_command_takes():
    """The quick start's `payswitch send …` lines and the table of commands name only options the code parses."""
    source = "".join(p.read_text() for d in ("switch", "adapters", "benchmarks", "loadtest") for p in (ROOT / d).rglob("*.py"))
    commands = section(README, "## Commands")
    lines = [line for line in README.splitlines() if "bin/payswitch " in line or line.lstrip().startswith("--")]
    lines += [line.split("|")[1] for line in commands.splitlines() if line.startswith("| `payswitch")]
    unknown = sorted({flag for line in lines for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]+", line.split("#")[0])
                      if f'"{flag}"' not in source})
    assert unknown == []


# --- configuration examples ------------------------------------------------------------


def test_every_configuration_example_of_the_documents_names_only_keys_the_code_reads(monkeypatch):
    """A TOML block of the README (a whole file) or of docs/ (its sections) is read by the code's own structs."""
    import tomllib

    monkeypatch.setenv("PAYSWITCH_JOURNAL_KEY", "5e" * 32)  # the README's example names it
    for block in re.findall(r"```toml\n(.*?)```", README, re.S):
        config.loads(block, "README example")
    structs = {"token_keys": config_vas.TokenKey, "vas": config_vas.VasService, "events": config_vas.Events,
               "merchants": config.Merchant, "acquirers": config.Acquirer, "routes": config.Route}
    seen = set()
    for doc in ("value-added-services.md", "adapters.md"):
        for block in re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S):
            for key, value in tomllib.loads(block).items():
                if key in structs:  # [project] and [build-system] are a package's pyproject.toml
                    seen.add(key)
                    for one in value if isinstance(value, list) else [value]:
                        msgspec.convert(one, structs[key])
    assert seen == {"token_keys", "vas", "events", "acquirers", "routes"}


def test_the_embedded_default_is_the_sandbox_of_spec_section_7():
    """Listeners, HTTP, the secured demo merchant's terminal ranges, policies and public keys, as section 7 gives them."""
    from switch.security import sandbox
    from tests.test_docs import SPEC

    spec = " ".join(section(SPEC, "## 7. Defaults and the sandbox").split())
    cfg = config.default()
    assert [(lst.port, lst.dialect) for lst in cfg.listeners] == [(8583, "terminal-87"), (8584, "iso87-ascii")]
    assert "on 8584 in the dialect of pyiso8583's `default_ascii` spec" in spec
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 9583) and "port 9583, bound to 127.0.0.1" in spec
    demo, secured = cfg.security.merchants[0], cfg.security.policy("DEMO00000000001")
    assert (demo.merchant, demo.policy, secured) == ("DEMOSEC00000001", "mac+pin", "none")
    keys = {t.terminals: (t.tmk or t.bdk) for t in demo.terminals}
    assert keys == {"SEC00001-SEC00099": "demo-tmk-tdes", "SEC00100-SEC00199": "demo-tmk-aes",
                    "SEC00200-SEC00299": "demo-bdk-tdes"}
    assert "`SEC00001` … `SEC00099` policy `mac+pin` with TDES keys, `SEC00100` … `SEC00199` the same with " \
           "AES-128 keys, `SEC00200` … `SEC00299` TDES DUKPT" in spec
    for name, words in (("demo-tmk-tdes", "TMK (TDES)"), ("demo-tmk-aes", "TMK (AES)"),
                        ("demo-bdk-tdes", "DUKPT base derivation key")):
        kind, algorithm, clear = sandbox.KEYS[name]
        assert f"{words} `{clear}`" in spec, name
        assert (kind, algorithm) == (name.split("-")[1], name.split("-")[2])
    assert f"`{sandbox.PIN}` is right for every card" in spec
