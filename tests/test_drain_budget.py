"""How long a stop drains: never less than a request taken just before SIGTERM may still
need (response_timeout) unless the file says so, and then check-config says what it costs."""
import os
import subprocess
import sys

from switch import config
from switch.config_timing import drain_warning
from tests import e2e

ACQUIRER = """
[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
timeout = 20.0
"""


def _load(tmp_path, text):
    p = tmp_path / "switch.toml"
    p.write_text(text)
    return config.load(p)


def test_the_embedded_default_drains_for_as_long_as_any_call_may_take():
    cfg = config.default()
    assert cfg.drain_timeout is None and cfg.drain_budget == cfg.response_timeout == 60.0
    # the wallets' customers confirm for up to their acquirer's timeout: all within the drain
    assert all(a.timeout <= cfg.drain_budget for a in cfg.acquirers)
    assert drain_warning(cfg) is None


def test_without_the_key_the_drain_follows_response_timeout(tmp_path):
    cfg = _load(tmp_path, "response_timeout = 45.0\n" + ACQUIRER)
    assert cfg.drain_budget == 45.0 and drain_warning(cfg) is None
    new = _load(tmp_path, "response_timeout = 50.0\n" + ACQUIRER)
    assert new.drain_budget == 50.0
    # a reload of response_timeout takes the drain with it, and names one key
    assert config.reload_changes(cfg, new) == (["response_timeout"], [])


def test_an_explicit_drain_timeout_is_kept(tmp_path):
    cfg = _load(tmp_path, "drain_timeout = 90.0\n" + ACQUIRER)
    assert cfg.drain_budget == 90.0 and drain_warning(cfg) is None
    assert _load(tmp_path, "drain_timeout = 60.0\n" + ACQUIRER).drain_budget == 60.0


def test_a_negative_drain_timeout_is_refused(tmp_path):
    p = tmp_path / "switch.toml"
    p.write_text("drain_timeout = -1.0\n" + ACQUIRER)
    try:
        config.load(p)
    except config.ConfigError as e:
        assert str(e).endswith("must be 0 or more, got -1.0 - at `$.drain_timeout`"), e
    else:
        raise AssertionError("a negative drain_timeout was taken")


def test_a_drain_shorter_than_response_timeout_is_warned_about_naming_key_and_file(tmp_path):
    cfg = _load(tmp_path, "drain_timeout = 30.0\n" + ACQUIRER)
    why = drain_warning(cfg)
    assert why.startswith(f"{tmp_path / 'switch.toml'}: drain_timeout 30.0 is shorter than response_timeout (60.0)")
    assert why.endswith("- at `$.drain_timeout`")


def test_check_config_prints_the_warning_and_passes(tmp_path):
    """Allowed (a supervisor's stop timeout may force a short drain), but never silent."""
    p = tmp_path / "switch.toml"
    env = dict(os.environ, DRAIN_TEST_KEY="ab" * 32)
    journal = f'[journal]\nurl = "sqlite://{tmp_path / "j.sqlite"}"\nhmac_key_env = "DRAIN_TEST_KEY"\n'
    p.write_text("drain_timeout = 30.0\n" + journal + ACQUIRER)
    out = subprocess.run([sys.executable, "-m", "switch.cli", "check-config", str(p)],
                         capture_output=True, text=True, timeout=60, cwd=e2e.ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert f"{p}: drain_timeout 30.0 is shorter than response_timeout (60.0)" in out.stderr
    p.write_text(journal + ACQUIRER)
    out = subprocess.run([sys.executable, "-m", "switch.cli", "check-config", str(p)],
                         capture_output=True, text=True, timeout=60, cwd=e2e.ROOT, env=env)
    assert out.returncode == 0 and "drain_timeout" not in out.stderr, out.stderr
