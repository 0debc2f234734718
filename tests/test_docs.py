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
