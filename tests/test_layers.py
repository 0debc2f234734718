"""Imports flow one way (DESIGN.md, "Layout"): entry points -> switch.io -> switch.core -> native.

switch/core is sans-I/O: no asyncio, no sockets, no configuration loading, no
adapters; switch/io finds adapters only through the wiring (entry points);
native/ imports nothing from the project.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports count too)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py*")):
        if path.suffix not in (".py", ".pyx"):
            continue
        text_imports = imports(path) if path.suffix == ".py" else set()
        if path.suffix == ".pyx":  # Cython: read the plain import lines
            for line in path.read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from", "cimport"):
                    text_imports.add(words[1])
        for name in text_imports:
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("switch/core", ("asyncio", "socket", "switch.io", "switch.config", "switch.wiring", "adapters", "trio")),
        ("switch/io", ("adapters", "trio")),
        ("native", ("switch", "adapters")),
    ],
)
def test_imports_flow_one_way(folder, forbidden):
    assert offenders(folder, forbidden) == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    bad = tmp_path / "switch" / "core"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    import asyncio\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offenders("switch/core", ("asyncio",)) == ["switch/core/x.py imports asyncio"]
