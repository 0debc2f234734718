"""The request path runs compiled (switch/compiled.py), and never silently from its source."""
from __future__ import annotations

import importlib
import importlib.machinery
import os

import pytest

from switch import cli, compiled

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.mark.parametrize("name", compiled.MODULES)
def test_every_request_path_module_is_imported_from_its_extension(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith(SUFFIX), f"{name} runs from {module.__file__}"
    assert compiled.verdict(name, module.__file__) is None


def test_nothing_is_out_of_date_in_this_checkout():
    assert compiled.problems() == []


def test_a_module_loaded_from_its_source_is_named(tmp_path):
    src = tmp_path / "engine.py"
    src.write_text("")
    line = compiled.verdict("switch.core.engine", str(src))
    assert line is not None and "switch.core.engine is not compiled" in line and "make build" in line


def checkout(tmp_path):
    """A source checkout's switch/core (a setup.py at its root)."""
    (tmp_path / "setup.py").write_text("")
    core = tmp_path / "switch" / "core"
    core.mkdir(parents=True)
    return core


def test_an_extension_older_than_its_source_is_named(tmp_path):
    core = checkout(tmp_path)
    ext, src = core / f"engine{SUFFIX}", core / "engine.py"
    ext.write_bytes(b"")
    src.write_text("")
    os.utime(ext, (1_000_000, 1_000_000))
    os.utime(src, (2_000_000, 2_000_000))
    line = compiled.verdict("switch.core.engine", str(ext))
    assert line is not None and "compiled before" in line and "engine.py" in line and "make build" in line
    os.utime(src, (500_000, 500_000))  # compiled after its source's last change: fine
    assert compiled.verdict("switch.core.engine", str(ext)) is None


def test_an_extension_older_than_its_pxd_is_named(tmp_path):
    # The .pxd declares its classes' C fields: compiled before it changed, the extension is stale too.
    core = checkout(tmp_path)
    ext, src, pxd = core / f"engine{SUFFIX}", core / "engine.py", core / "engine.pxd"
    for f, t in ((src, 500_000), (ext, 1_000_000), (pxd, 2_000_000)):
        f.write_bytes(b"")
        os.utime(f, (t, t))
    line = compiled.verdict("switch.core.engine", str(ext))
    assert line is not None and "compiled before" in line and "engine.pxd" in line and "make build" in line
    os.utime(pxd, (500_000, 500_000))
    assert compiled.verdict("switch.core.engine", str(ext)) is None


def test_an_extension_without_its_source_is_fine(tmp_path):
    ext = checkout(tmp_path) / f"engine{SUFFIX}"
    ext.write_bytes(b"")
    assert compiled.verdict("switch.core.engine", str(ext)) is None


def test_an_installation_is_not_judged_by_its_files_times(tmp_path):
    # pip unpacks a wheel in its own order: a .py written after its .so is not a change.
    core = tmp_path / "site-packages" / "switch" / "core"
    core.mkdir(parents=True)
    ext, src = core / f"engine{SUFFIX}", core / "engine.py"
    ext.write_bytes(b"")
    src.write_text("")
    os.utime(ext, (1_000_000, 1_000_000))
    assert compiled.verdict("switch.core.engine", str(ext)) is None


def test_a_module_that_does_not_exist_is_named():
    assert compiled.problems(("switch.core.no_such_module",)) == ["switch.core.no_such_module: not found"]


def test_serve_refuses_to_start_on_an_uncompiled_request_path(monkeypatch, capsys):
    monkeypatch.setattr(compiled, "problems", lambda: ["switch.core.engine is not compiled (...): run `make build`"])
    assert cli.main(["serve", "--demo"]) == 2
    err = capsys.readouterr().err
    assert "payswitch serve: switch.core.engine is not compiled" in err and "make build" in err


def test_every_attribute_a_compiled_class_sets_is_declared_in_its_pxd():
    """An extension type (a class its .pxd declares) has only the fields the .pxd names: an
    attribute set in the .py but not declared is an AttributeError at run time, on the path
    that sets it, which may be a rare one."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    checked = 0
    for pxd in sorted([*root.glob("switch/**/*.pxd"), *root.glob("adapters/**/*.pxd")]):
        text = pxd.read_text()
        sections = dict(re.findall(r"cdef class (\w+)[^\n]*\n((?:[ \t#][^\n]*\n|\n)*)", text))
        for node in ast.walk(ast.parse(pxd.with_suffix(".py").read_text())):
            if not isinstance(node, ast.ClassDef) or node.name not in sections:
                continue
            declared = set(re.findall(r"\w+", sections[node.name]))
            assigned = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                        and isinstance(n.value, ast.Name) and n.value.id == "self"}
            assert assigned <= declared, f"{pxd.relative_to(root)}: {node.name} sets {sorted(assigned - declared)}"
            checked += 1
    assert checked >= 10  # the engine, its commands, metrics, ... (a pattern that finds none checks nothing)
