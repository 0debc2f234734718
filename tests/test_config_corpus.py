"""Broken configurations: ``check-config`` and ``serve`` say the same one line and exit 2.

Each case changes one thing in a configuration that passes ``check-config``;
both commands run as subprocesses in an empty working directory, which must
stay empty (no stray journal key from a failed start).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "keys").mkdir()
    (tmp / "keys" / "journal.key").write_text(os.urandom(32).hex())
    (tmp / "keys" / "micropay_secret").write_text(os.urandom(16).hex() + "\n")
    (tmp / "keys" / "random.bin").write_bytes(b"\xdb" + os.urandom(31))
    (tmp / "keys" / "short.token").write_text("0123456789\n")
    (tmp / "keys" / "utf16.toml").write_bytes('name = "host-87-utf16"\n'.encode("utf-16"))  # an editor's "Unicode"
    for secret in ("journal.key", "micropay_secret", "random.bin", "short.token"):
        (tmp / "keys" / secret).chmod(0o600)  # as a deployment keeps them: check-config says nothing
    return {"keys": str(tmp / "keys"), "data": str(tmp)}


BASE = """
response_timeout = 30.0

[[listeners]]
host = "127.0.0.1"
port = {term}

[http]
host = "127.0.0.1"
port = {http}

[journal]
url = "sqlite://{data}/journal.sqlite"
hmac_key_file = "{keys}/journal.key"

[[merchants]]
id = "DEMO00000000001"
terminals = ["DEMO0001-DEMO0999"]

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9"]
acquirer_id = "10000000001"
timeout = 5.0

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9"]
timeout = 20.0
secret_file = "{keys}/micropay_secret"

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "wallet-b"
kind = "wallet"
prefixes = ["10-15"]
acquirers = ["wallet-b"]
"""

TLS = '\ntls_cert_file = "{keys}/cert.pem"\ntls_key_file = "{keys}/key.pem"\n'

# (case, old text, new text, expected message after "<file>: ")
CASES = [
    ("journal URL without scheme", 'url = "sqlite://{data}/journal.sqlite"', 'url = "{data}/journal.sqlite"',
     "journal URL has no scheme: expected sqlite://PATH, e.g. sqlite://payswitch-journal.sqlite - at `$.journal.url`"),
    ("postgresql journal", 'url = "sqlite://{data}/journal.sqlite"', 'url = "postgresql://payswitch:hunter2@db/payswitch"',
     "journal URL scheme <value not shown> is not supported yet: use sqlite://PATH - at `$.journal.url`"),
    ("unknown journal scheme", 'url = "sqlite://{data}/journal.sqlite"', 'url = "mysql://db/payswitch"',
     "unknown journal URL scheme <value not shown> (supported: sqlite) - at `$.journal.url`"),
    ("journal directory missing", 'url = "sqlite://{data}/journal.sqlite"', 'url = "sqlite://{data}/nowhere/journal.sqlite"',
     "directory {data}/nowhere for the journal does not exist - at `$.journal.url`"),
    ("connections = 0", 'acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nconnections = 0',
     "must be at least 1, got 0 - at `$.acquirers[0].connections`"),
    ("non-numeric acquirer_id", 'acquirer_id = "10000000001"', 'acquirer_id = "BANK-A"',
     "must be 1 to 11 digits (field 32), got <value not shown> - at `$.acquirers[0].acquirer_id`"),
    ("missing wallet key file", 'secret_file = "{keys}/micropay_secret"', 'secret_file = "{keys}/gone"',
     "cannot read secret <value not shown>: No such file or directory - at `$.acquirers[1].secret_file`"),
    ("missing journal key file", 'hmac_key_file = "{keys}/journal.key"', 'hmac_key_file = "{keys}/gone.key"',
     "cannot read journal key file <value not shown>: No such file or directory - at"
     " `$.journal.hmac_key_file`"),
    ("journal key too short", 'hmac_key_file = "{keys}/journal.key"', 'hmac_key_file = "{keys}/random.bin"',
     "journal key file <value not shown> must hold at least 16 bytes as hex - at `$.journal.hmac_key_file`"),
    # serve used to stop with "cannot start: UnicodeDecodeError", exit 1
    ("micropay secret not text", 'secret_file = "{keys}/micropay_secret"', 'secret_file = "{keys}/random.bin"',
     "acquirer <value not shown>: secret_file <value not shown> must hold the wallet's API key as"
     " printable ASCII text - at `$.acquirers[1].secret_file`"),
    ("missing TLS certificate", "port = {term}\n", "port = {term}" + TLS,
     "cannot read TLS certificate <value not shown>: No such file or directory - at"
     " `$.listeners[0].tls_cert_file`"),
    ("TLS certificate without key", "port = {term}\n", 'port = {term}\ntls_cert_file = "{keys}/journal.key"\n',
     "TLS needs both tls_cert_file and tls_key_file - at `$.listeners[0]`"),
    ("card route to a wallet acquirer", 'acquirers = ["bank-a"]', 'acquirers = ["wallet-b"]',
     "a card route cannot use acquirer <value not shown>: type 'wallet-micropay' serves wallet routes - at"
     " `$.routes[0].acquirers[0]`"),
    # An unknown key says which key was meant (switch.config_hint).
    ("journal key written in clear", 'hmac_key_file = "{keys}/journal.key"', 'hmac_key = "hunter2"',
     "Object contains unknown field `hmac_key` - at `$.journal`; it is read from a file or an environment variable"
     " (`hmac_key_file` or `hmac_key_env`), never written in the configuration"),
    ("misspelt key", "response_timeout = 30.0", "respones_timeout = 30.0",
     "Object contains unknown field `respones_timeout`; did you mean `response_timeout`?"),
    ("top-level key below a table", 'acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nresponse_timeout = 20.0',
     "Object contains unknown field `response_timeout` - at `$.acquirers[0]`; `response_timeout` is a top-level key:"
     " write it above the file's first [table] header"),
    ("key of no likeness", "port = {term}\n", "port = {term}\ntls = true\n",
     "Object contains unknown field `tls` - at `$.listeners[0]`; the keys taken here: host, port, header, tpdu,"
     " max_frame, max_in_flight, dialect, tls_cert_file, tls_key_file, frame_timeout, idle_timeout"),
    ("terminal range backwards", '"DEMO0001-DEMO0999"', '"DEMO0999-DEMO0001"',
     "terminal range <value not shown> starts after it ends - at `$.merchants[0].terminals[0]`"),
    ("terminal range two stems", '"DEMO0001-DEMO0999"', '"DEMO0001-SHOP0999"',
     "terminal range <value not shown> has two different stems - at `$.merchants[0].terminals[0]`"),
    ("unregistered acquirer type", 'type = "card"', 'type = "carrier-pigeon"',
     "unknown acquirer type <value not shown> (registered: card, citycard, wallet-micropay,"
     " wallet-tradepay) - at `$.acquirers[0].type`"),
    ("unknown dialect", 'acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\ndialect = "host-93-ebcdic"',
     "unknown dialect <value not shown>: expected one of host-87-bcd, iso87-ascii, terminal-87 or a path"
     " to a .toml file - at `$.acquirers[0].dialect`"),
    ("missing dialect file", 'acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\ndialect = "{keys}/host.toml"',
     "cannot read dialect file <value not shown>: No such file or directory - at `$.acquirers[0].dialect`"),
    # named the byte but not the file
    ("acquirer dialect file not UTF-8", 'acquirer_id = "10000000001"',
     'acquirer_id = "10000000001"\ndialect = "{keys}/utf16.toml"',
     "<value not shown>: not UTF-8 text (byte 0xff at offset 0) - at `$.acquirers[0].dialect`"),
    ("listener dialect file not UTF-8", "port = {term}\n", 'port = {term}\ndialect = "{keys}/utf16.toml"\n',
     "<value not shown>: not UTF-8 text (byte 0xff at offset 0) - at `$.listeners[0].dialect`"),
    ("bad length header", 'acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nheader = "ebcdic4"',
     "Invalid enum value <value not shown> - at `$.acquirers[0].header`"),
    ("dialect on a wallet", 'secret_file = "{keys}/micropay_secret"', 'secret_file = "{keys}/micropay_secret"\nheader = "bcd2"',
     "header applies to card host links, not to a wallet-micropay acquirer - at `$.acquirers[1].header`"),
    # serve used to find these only after the acquirers had started (check-config: ok)
    ("missing admin token file", "port = {http}\n", 'port = {http}\nadmin_token_file = "{keys}/admin.token"\n',
     "cannot read admin_token_file <value not shown>: No such file or directory - at"
     " `$.http.admin_token_file`"),
    ("admin token too short", "port = {http}\n", 'port = {http}\nadmin_token_file = "{keys}/short.token"\n',
     "the admin token in admin_token_file <value not shown> is missing or shorter than 16 characters - at"
     " `$.http.admin_token_file`"),
    # ... and these were accepted: a second bind that always fails, a simulator port taken modulo 65536,
    # names that must pick one entry
    ("two listeners on one port", "[http]", "[[listeners]]\nport = {term}\n\n[http]",
     "port {term} is already taken by `$.listeners[0].port` - at `$.listeners[1].port`"),
    ("a listener on the HTTP port", "port = {term}\n", "port = {http}\n",
     "port {http} is already taken by `$.http.port` - at `$.listeners[0].port`"),
    ("simulator port out of range", "[[routes]]", '[[simulators]]\nkind = "acquirer"\nname = "bank-a"\nport = 700000\n\n[[routes]]',
     "port 700000 out of range - at `$.simulators[0].port`"),
    ("two simulators of one name", "[[routes]]",
     '[[simulators]]\nkind = "acquirer"\nname = "bank-a"\nport = 9\n\n'
     '[[simulators]]\nkind = "acquirer"\nname = "bank-a"\nport = 10\n\n[[routes]]',
     "duplicate simulator name <value not shown> - at `$.simulators[1].name`"),
    ("two merchants of one ID", "[[acquirers]]",
     '[[merchants]]\nid = "DEMO00000000001"\nterminals = ["SHOP0001"]\n\n[[acquirers]]',
     "duplicate merchant ID <value not shown> - at `$.merchants[1].id`"),
    # both terminals' wallet payments got the same order number: the second failed (96) at the journal
    ("two terminal IDs of one wallet order prefix", "[[acquirers]]",
     '[[merchants]]\nid = "SHOP00000000001"\nterminals = ["AB 00001"]\n\n'
     '[[merchants]]\nid = "SHOP00000000002"\nterminals = ["DEMO1000", "AB_00001"]\n\n[[acquirers]]',
     "terminal <value not shown> gives the same wallet order numbers as terminal <value not shown> at"
     " `$.merchants[1].terminals[0]` (prefix <value not shown>): rename one of them - at"
     " `$.merchants[2].terminals[1]`"),
    ("two routes of one name", 'name = "wallet-b"\nkind = "wallet"', 'name = "visa"\nkind = "wallet"',
     "duplicate route name <value not shown> - at `$.routes[1].name`"),
    # accepted: a route that can never match
    ("a route without prefixes", 'prefixes = ["4"]', "prefixes = []",
     "needs at least one prefix: a route without one never matches - at `$.routes[0].prefixes`"),
    # accepted: a merchant no terminal belongs to (every request under its ID answered 03)
    ("a merchant without terminals", 'terminals = ["DEMO0001-DEMO0999"]', "terminals = []",
     "needs at least one terminal ID or range: no terminal can pay a merchant without one - at `$.merchants[0].terminals`"),
    ("a route's amounts crossed", 'prefixes = ["4"]', 'prefixes = ["4"]\nmin_amount = 500\nmax_amount = 100',
     "500 is above max_amount 100: the route never matches - at `$.routes[0].min_amount`"),
    # accepted: a back-off ceiling below its start cut the first wait short (at 0 the sender spun), and a
    # window shorter than the terminal's budget authorized a repeat of a request still being answered again
    ("reversal back-off ceiling below its start", "response_timeout = 30.0",
     "response_timeout = 30.0\nreversal_retry = 10.0\nreversal_backoff_max = 5.0",
     "5.0 is below reversal_retry (10.0): the wait between repeats of a reversal doubles from reversal_retry"
     " up to reversal_backoff_max - at `$.reversal_backoff_max`"),
    ("retransmission window shorter than the budget", "response_timeout = 30.0",
     "response_timeout = 30.0\nretransmission_window = 20.0",
     "20.0 is shorter than response_timeout (30.0): a terminal's repeat of a request still being answered"
     " would be authorized a second time - at `$.retransmission_window`"),
    # accepted and never read: an operator could think it protected the PIN key
    ("an acquirer's zmk", "[[routes]]", '[[security.acquirers]]\nacquirer = "bank-a"\nzpk = "zpk-a"\nzmk = "zmk-a"\n\n[[routes]]',
     "not supported: the switch never reads it (zpk names a key already in the security module, no key is"
     " exchanged under a ZMK); remove it - at `$.security.acquirers[0].zmk`"),
    ("a source key", "response_timeout = 30.0", 'source = "elsewhere.toml"\nresponse_timeout = 30.0',
     "Object contains unknown field `source`"),
    # check-config passed these: serve refused the token key, and took the service secret, then every
    # call to the service failed (silently: a service never fails a payment)
    ("token key not hex", "[[routes]]", '[[token_keys]]\ngroup = "g"\nkey_file = "{keys}/random.bin"\n\n[[routes]]',
     "token key must hold at least 16 bytes as hex - at `$.token_keys[0].key_file`"),
    ("service secret not hex", "[[routes]]",
     '[[vas]]\nname = "loyalty"\nurl = "http://127.0.0.1:9"\nmerchants = ["DEMO00000000001"]\n'
     'secret_file = "{keys}/random.bin"\n\n[[routes]]',
     "service secret must hold at least 16 bytes as hex - at `$.vas[0].secret_file`"),
    # the relay retried a failing webhook at once, forever; an http:// URL went to NATS as nats://http://...
    ("webhook retry_max 0", "[[routes]]", "[events]\nretry_max = 0.0\n\n[[routes]]",
     "must be > 0, got 0.0 - at `$.events.retry_max`"),
    # accepted: NaN passed every "must be > 0" (no deadline ever came), a second route's identical
    # prefix was never chosen, and a simulator on a taken port could never start
    ("response_timeout nan", "response_timeout = 30.0", "response_timeout = nan",
     "must be a finite number, got nan - at `$.response_timeout`"),
    ("an acquirer timeout of inf", "timeout = 5.0", "timeout = inf",
     "must be a finite number, got inf - at `$.acquirers[0].timeout`"),
    ("a prefix an earlier route takes", 'prefixes = ["10-15"]\nacquirers = ["wallet-b"]',
     'prefixes = ["10-15"]\nacquirers = ["wallet-b"]\n\n[[routes]]\nname = "visa-2"\nkind = "card"\n'
     'prefixes = ["5", "4"]\nacquirers = ["bank-a"]',
     "prefix <value not shown> is never used: `$.routes[0].prefixes[0]` (<value not shown>, route <value"
     " not shown>) comes first and takes every such number, with no condition - at"
     " `$.routes[2].prefixes[1]`"),
    ("a simulator on the listener's port", "[[routes]]",
     '[[simulators]]\nkind = "acquirer"\nname = "bank-a"\nport = {term}\n\n[[routes]]',
     "port {term} is already taken by `$.listeners[0].port` - at `$.simulators[0].port`"),
    ("two simulators on one port", "[[routes]]",
     '[[simulators]]\nkind = "acquirer"\nname = "bank-a"\nport = 9\n\n'
     '[[simulators]]\nkind = "acquirer"\nname = "bank-b"\nport = 9\n\n[[routes]]',
     "port 9 is already taken by `$.simulators[0].port` - at `$.simulators[1].port`"),
    ("NATS URL of another scheme", "[[routes]]", '[events]\nnats_url = "http://127.0.0.1:4222"\n\n[[routes]]',
     "expected host:port or a URL of nats://, tls://, ws://, wss://, got <value not shown> - at"
     " `$.events.nats_url`"),
]


def _run(args: list[str], cwd: Path, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PAYSWITCH_LOG="INFO")
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "switch.cli", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def base(tmp_path):
    subs = _files(tmp_path) | {"term": _free_port(), "http": _free_port()}
    return tmp_path, subs


def test_the_base_configuration_passes(base):
    tmp, subs = base
    (tmp / "ok.toml").write_text(BASE.format(**subs))
    p = _run(["check-config", str(tmp / "ok.toml")], tmp)
    out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (0, "")
    assert out == f"{tmp / 'ok.toml'}: ok (2 routes, 2 acquirers, 1 merchants)\n"
    # The flag serve takes works too; a file given twice, or none, is one line and exit 2.
    p = _run(["check-config", "--config", str(tmp / "ok.toml")], tmp)
    assert p.communicate(timeout=60) == (out, "") and p.returncode == 0
    for args in ([], [str(tmp / "ok.toml"), "--config", str(tmp / "ok.toml")]):
        p = _run(["check-config", *args], tmp)
        out2, err = p.communicate(timeout=60)
        assert (p.returncode, out2, len(err.splitlines())) == (2, "", 1) and "check-config FILE" in err


def test_check_config_says_which_defaults_apply_to_a_file_without_listeners_or_merchants(base):
    """Such a file is accepted, but an operator who forgot the section sees what it means; serve is unchanged."""
    tmp, subs = base
    text = BASE.format(**subs)
    listeners = f'[[listeners]]\nhost = "127.0.0.1"\nport = {subs["term"]}\n'
    merchants = '[[merchants]]\nid = "DEMO00000000001"\nterminals = ["DEMO0001-DEMO0999"]\n'
    assert listeners in text and merchants in text
    (tmp / "bare.toml").write_text(text.replace(listeners, "").replace(merchants, ""))
    p = _run(["check-config", str(tmp / "bare.toml")], tmp)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0
    # The default listener, on every address without TLS, is a link in clear (switch/clear_links.py).
    assert [ln.split(": ", 1)[1] for ln in err.splitlines()] == [
        "terminal listener 0.0.0.0:8583 is in clear (no TLS): card data and keys would cross the network "
        "readable - at `$.listeners[0]`"], err
    bare = tmp / "bare.toml"
    assert out.splitlines() == [
        f"no listeners in {bare}: the default listener applies (0.0.0.0:8583, terminal-87)",
        f"no merchants in {bare}: no terminal is known, every request is answered 03 "
        "(the demo merchants come only with serve without --config)",
        f"{bare}: ok (2 routes, 2 acquirers, 0 merchants)",
    ]


def test_every_broken_configuration_is_one_line_and_exit_2(base):
    tmp, subs = base
    runs = []
    for i, (case, old, new, want) in enumerate(CASES):
        text = BASE.format(**subs)
        old, new = old.format(**subs), new.format(**subs)
        assert old in text, case
        work = tmp / f"case{i}"
        work.mkdir()
        path = work / "switch.toml"
        path.write_text(text.replace(old, new, 1))
        expected = f"payswitch: configuration error: {path}: {want.format(**subs)}"
        for cmd in (["check-config", str(path)], ["serve", "--config", str(path)]):
            runs.append((case, cmd[0], expected, work, _run(cmd, work)))
    failures = []
    for case, cmd, expected, work, p in runs:
        out, err = p.communicate(timeout=60)
        lines = err.splitlines()
        if lines != [expected] or p.returncode != 2 or out:
            failures.append(f"{case} ({cmd}): exit {p.returncode}\n  want {expected}\n  got  {err!r} {out!r}")
        if sorted(os.listdir(work)) != ["switch.toml"]:
            failures.append(f"{case} ({cmd}): left files behind: {sorted(os.listdir(work))}")
        assert "hunter2" not in err + out
    assert not failures, "\n".join(failures)


def test_check_config_creates_no_journal_key(base):
    """Without hmac_key_file the key is created beside the journal on first start, never by check-config;
    check-config refuses that place outside the sandbox (issue 8), and creates nothing either way."""
    tmp, subs = base
    text = BASE.format(**subs).replace(f'hmac_key_file = "{subs["keys"]}/journal.key"\n', "")
    text = text.replace(f"sqlite://{subs['data']}/journal.sqlite", "sqlite://journal.sqlite")
    work = tmp / "fresh"
    work.mkdir()
    (work / "switch.toml").write_text(text)
    p = _run(["check-config", "switch.toml"], work)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "journal key file journal.sqlite.key is in the journal's directory" in err, err
    assert sorted(os.listdir(work)) == ["switch.toml"]


def test_a_failed_start_leaves_no_journal_key(base):
    tmp, subs = base
    text = BASE.format(**subs).replace(f'hmac_key_file = "{subs["keys"]}/journal.key"\n', "")
    text = text.replace(f"sqlite://{subs['data']}/journal.sqlite", "sqlite://journal.sqlite")
    text = text.replace('acquirer_id = "10000000001"', 'acquirer_id = "10000000001"\nconnections = 0')
    work = tmp / "fresh"
    work.mkdir()
    (work / "switch.toml").write_text(text)
    p = _run(["serve", "--config", "switch.toml"], work)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert err == "payswitch: configuration error: switch.toml: must be at least 1, got 0 - at `$.acquirers[0].connections`\n"
    assert sorted(os.listdir(work)) == ["switch.toml"]


def test_a_bad_log_level_is_one_line_and_exit_2(base):
    tmp, subs = base
    (tmp / "ok.toml").write_text(BASE.format(**subs))
    p = _run(["serve", "--config", str(tmp / "ok.toml")], tmp, {"PAYSWITCH_LOG": "LOUD"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert err == "payswitch: PAYSWITCH_LOG must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'\n"


def _serve_alone(tmp: Path, text: str, name: str) -> tuple[Path, subprocess.Popen]:
    """``serve`` of ``text`` in a directory of its own, its journal in there too."""
    work = tmp / name
    work.mkdir()
    (work / "switch.toml").write_text(text.replace(f"sqlite://{tmp}/journal.sqlite", f"sqlite://{work}/journal.sqlite"))
    return work, _run(["serve", "--config", str(work / "switch.toml")], work)


def test_a_port_in_use_is_not_a_configuration_error(base):
    """Another process holds a port: one line naming the file, the key and the address,
    exit 1, and nothing started first (no journal opened, no acquirer signed on)."""
    tmp, subs = base
    text = BASE.format(**subs)
    with socket.socket() as held:
        held.bind(("127.0.0.1", subs["term"]))
        held.listen()
        work, p = _serve_alone(tmp, text, "term")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == "", err
    assert err == (f"payswitch: cannot start: {work / 'switch.toml'}: 127.0.0.1:{subs['term']} is already in use"
                   " by another process - at `$.listeners[0].port`\n")
    assert sorted(os.listdir(work)) == ["switch.toml"]
    with socket.socket() as held:
        held.bind(("127.0.0.1", subs["http"]))
        held.listen()
        work, p = _serve_alone(tmp, text, "http")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == "", err
    assert err == (f"payswitch: cannot start: {work / 'switch.toml'}: 127.0.0.1:{subs['http']} is already in use"
                   " by another process - at `$.http.port`\n")
    assert sorted(os.listdir(work)) == ["switch.toml"]


@pytest.mark.parametrize("host, message", [
    ("no-such-host.invalid", "cannot resolve host 'no-such-host.invalid': "),
    ("192.0.2.1", "'192.0.2.1' is not an address of this machine"),  # TEST-NET-1, on no interface here
])
def test_a_listener_address_that_cannot_be_bound_is_named_before_anything_starts(base, host, message):
    tmp, subs = base
    text = BASE.format(**subs).replace('host = "127.0.0.1"\nport = ' + str(subs["term"]),
                                       f'host = "{host}"\nport = ' + str(subs["term"]))
    work, p = _serve_alone(tmp, text, "host")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and out == "", err
    [line] = [ln for ln in err.splitlines() if "in clear (no TLS)" not in ln]  # a warning: the listener has no TLS
    assert line.startswith(f"payswitch: cannot start: {work / 'switch.toml'}: {message}"), line
    assert line.endswith(" - at `$.listeners[0].host`"), line
    assert sorted(os.listdir(work)) == ["switch.toml"]
