"""A third-party acquirer adapter, installed as its own distribution, routes a payment.

The adapter and its packaging are the worked example of docs/adapters.md,
read from the document itself, so the guide cannot drift from what works.
The distribution is installed the way pip leaves it: the module and a
``.dist-info`` with ``entry_points.txt`` in a directory on the path.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from switch import config, wiring
from tests import e2e
from tests.e2e import Client, purchase

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "adapters.md").read_text()


def block_after(marker: str, lang: str) -> str:
    """The first fenced ``lang`` block after ``marker`` in the guide."""
    at = GUIDE.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(GUIDE, at)
    assert m, f"no {lang} block after {marker!r}"
    return m.group(1)


def install(site: Path) -> Path:
    """The guide's package, as ``pip install`` would leave it in ``site``."""
    project = tomllib.loads(block_after("`pyproject.toml` of the package:", "toml"))["project"]
    site.mkdir(parents=True, exist_ok=True)
    (site / "toy_acquirer.py").write_text(block_after("`toy_acquirer.py`:", "python"))
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


SWITCH_SNIPPET = block_after("name the type in the switch's configuration:", "toml")


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(path))
    yield path
    sys.modules.pop("toy_acquirer", None)


def test_the_bundled_types_are_registered_in_pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        registered = tomllib.load(f)["project"]["entry-points"][wiring.GROUP]
    assert registered == wiring.BUNDLED


def test_an_installed_type_is_found_without_touching_the_switch(site):
    assert "toy" not in wiring.BUNDLED
    types = wiring.acquirer_types()
    assert types["toy"].value == "toy_acquirer:factory"
    assert {"card", "citycard", "wallet-tradepay", "wallet-micropay"} <= set(types)
    cfg = config.loads(SWITCH_SNIPPET, "switch.toml")
    adapter = wiring.build_acquirer(cfg.acquirers[0], 0, None, source=cfg.source)
    assert type(adapter).__name__ == "ToyAcquirer" and adapter.limit == 5000 and adapter.name == "toy-bank"


def test_without_the_package_the_type_is_unknown():
    with pytest.raises(config.ConfigError) as e:
        config.loads(SWITCH_SNIPPET, "switch.toml")
    assert str(e.value) == (
        "switch.toml: unknown acquirer type 'toy' (registered: card, citycard, wallet-micropay, wallet-tradepay)"
        " - at `$.acquirers[0].type`"
    )


def test_a_route_kind_the_adapter_does_not_serve_is_refused(site):
    text = SWITCH_SNIPPET.replace('kind = "card"', 'kind = "wallet"')
    with pytest.raises(config.ConfigError) as e:
        config.loads(text, "switch.toml")
    assert str(e.value).endswith(
        "a wallet route cannot use acquirer 'toy-bank': type 'toy' serves card routes - at `$.routes[0].acquirers[0]`"
    )


def test_the_adapters_own_refusal_is_one_line_from_check_config(site, tmp_path):
    [documented] = [ln for ln in GUIDE.splitlines() if ln.startswith("payswitch: configuration error:")]
    path = tmp_path / "switch.toml"
    path.write_text(SWITCH_SNIPPET.replace("limit = 5000", 'limit = "lots"'))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
    p = subprocess.run([sys.executable, "-m", "switch.cli", "check-config", "switch.toml"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr == documented + "\n"


@pytest.mark.e2e
def test_a_payment_goes_through_the_installed_adapter(site, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{ROOT}")
    ports = {"term": e2e.free_port(), "http": e2e.free_port()}
    text = e2e.base_config(tmp_path, ports) + SWITCH_SNIPPET
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        c = Client(ports["term"])
        try:
            ok = c.transact(purchase(1250))
            assert (ok["39"], ok["38"]) == ("00", "T00001")
            assert "LY013paid with toy" in ok["48"]
            declined = c.transact(purchase(6000))
            assert declined["39"] == "51"
        finally:
            c.close()
    finally:
        proc.stop()
