"""The documents in the repository: the terminal interface, its references, the README's sandbox."""
from __future__ import annotations

import re
from pathlib import Path

from switch import config

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "docs" / "terminal-interface.md").read_text()
README = (ROOT / "README.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.compile(r"^#{1,2} ", re.M).search(text, start + len(heading))
    return text[start : nxt.start() if nxt else len(text)]


def test_the_terminal_interface_is_v1_1_with_all_sections():
    assert SPEC.startswith("# payswitch terminal interface (v1.1)\n")
    headings = re.findall(r"^## (\d+)\. ", SPEC, re.M)
    assert headings == [str(n) for n in range(1, 9)]
    for sub in ("### 4.1 City-card TAC", "### 6.1 Edge cases (v1.1)"):
        assert sub in SPEC


def test_references_point_into_the_repository():
    offenders = []
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".md", ".toml", ".pyx") or {".venv", ".git", "build"} & set(path.parts):
            continue
        if path == Path(__file__).resolve() or path.name == "terminal-interface.md":
            continue
        text = path.read_text(errors="replace")
        if "../shared/" in text or re.search(r"(?<![\w/])spec/terminal-interface\.md", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" not in link:
            assert (ROOT / link).exists(), link


def numbers(text: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, text))


def test_readme_sandbox_agrees_with_the_spec_and_the_embedded_default():
    readme = section(README, "## Quick start: the sandbox")
    spec = section(SPEC, "## 7. Defaults and the sandbox")
    cfg = config.default()
    readme_ports = numbers(readme.split("It prints where")[0], r"\*\*(?:http://[\d.]+:)?(\d{4,5})\*\*")
    assert readme_ports == {"8583", "8584", "9583"}
    spec_ports = {p for p in re.findall(r"\b(\d{4})\b", spec) if p.startswith(("85", "95"))}
    assert readme_ports <= spec_ports
    assert {str(lst.port) for lst in cfg.listeners} | {str(cfg.http.port)} == readme_ports
    # merchant and terminal range
    merchant = "DEMO00000000001"
    assert merchant in readme and merchant in spec and cfg.merchants[0].id == merchant
    assert "`DEMO0001` … `DEMO0999`" in readme and "`DEMO0001` to `DEMO0999`" in spec
    tids = config.expand_terminals(cfg.merchants[0].terminals[0])
    assert (tids[0], tids[-1]) == ("DEMO0001", "DEMO0999")
    # the route tables list the same routes
    rows = lambda text: {line for line in text.splitlines() if line.startswith("| card") or line.startswith("| wallet")
                         or line.startswith("| city card")}
    assert rows(spec) <= rows(README)


# --- the README's configuration reference and switch/config.py -----------------------

def config_keys(struct: type, prefix: str = "") -> dict[str, object]:
    """Every key path a configuration file may set (``acquirers.timeout``), with its default."""
    import typing

    import msgspec

    out: dict[str, object] = {}
    tag = struct.__struct_config__.tag_field  # [security.module] kind = "software" | "hsm"
    if tag:
        out[f"{prefix}{tag}"] = None
    for f in msgspec.structs.fields(struct):
        if f.name in config._NOT_KEYS:  # set by the loader (where the file came from, what it left out)
            continue
        path = f"{prefix}{f.name}"
        default = f.default
        if default is msgspec.NODEFAULT and f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        out[path] = default
        inner = [t for t in (f.type, *typing.get_args(f.type)) for t in (t, *typing.get_args(t))]
        for t in inner:
            if isinstance(t, type) and issubclass(t, msgspec.Struct):
                out.update(config_keys(t, path + "."))
    return out


def readme_reference() -> dict[str, list[str]]:
    """The keys of the README's configuration table, each with the default its row gives ([] for none).

    A row names keys as `[[listeners]]` `host`, `port` or `acquirers.mac`, `mac_key` (the
    second key in the first one's table); a default cell lists one default per key, in order.
    """
    table = section(README, "## Configuration reference").split("| key | default | meaning |")[1]
    keys: dict[str, list[str]] = {}
    for row in re.findall(r"^\| (.+?) \|\s*(.*?)\s*\| .*\|$", table, re.M):
        prefix, names = "", []
        for token in re.findall(r"`([^`]+)`", row[0]):
            if token.startswith("["):
                prefix = token.strip("[]") + "."
                keys.setdefault(token.strip("[]"), [])
                continue
            if "." in token:
                prefix = token.rsplit(".", 1)[0] + "."
                names.append(token)
            else:
                names.append(prefix + token)
        # One default per key, commas apart ("`0.0.0.0`, `8583`"; ", , `4`" leaves the first two out)
        given = iter(re.findall(r"`([^`]+)`", row[1]))
        defaults = [[next(given)] if "`" in part else [] for part in re.sub(r"`[^`]*`", "`", row[1]).split(",")]
        for i, name in enumerate(names):
            keys[name] = defaults[i] if len(defaults) == len(names) else []
    return keys


def test_the_readme_configuration_reference_has_every_key_and_its_default():
    import tomllib

    documented = readme_reference()
    keys = config_keys(config.Config)
    # A section documented elsewhere stands for its keys: value-added services, tokens, events.
    elsewhere = {k for k in documented if k in ("token_keys", "vas", "events")}
    undocumented = [
        k for k in keys
        if k not in documented and k.split(".")[0] not in elsewhere and not any(d.startswith(k + ".") for d in documented)
    ]
    unknown = [k for k in documented if k not in keys]
    assert (undocumented, unknown) == ([], [])
    wrong = []
    for key, given in documented.items():
        if not given or keys[key] is None:  # none given, or the type decides (e.g. a card host's dialect)
            continue
        try:
            value = tomllib.loads(f"v = {given[0]}")["v"]
        except tomllib.TOMLDecodeError:
            value = given[0]  # 0.0.0.0, thread, ...
        if value != keys[key]:
            wrong.append(f"{key}: README {given[0]}, config.py {keys[key]!r}")
    assert wrong == []


def test_the_reference_check_sees_a_missing_key(monkeypatch):
    import sys

    text = README.replace("| `merchants.currency` |", "| `merchants.kurrency` |")
    monkeypatch.setattr(sys.modules[__name__], "README", text)
    documented = readme_reference()
    assert "merchants.kurrency" in documented and "merchants.currency" not in documented
