"""End to end, operator side: reload without dropping connections, the CLI terminal,
back-pressure against a client that never reads, restart recovery."""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests import e2e
from tests.e2e import Client, http_post as post, purchase

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    text, ports = e2e.card_config(tmp, acquirer_timeout=1.5)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    yield proc
    proc.stop()


def test_sighup_while_starting_is_kept_for_when_it_serves(tmp_path):
    """SIGHUP (systemctl reload) while the simulators start and the acquirers sign on: the
    process does not die of the signal's default action; it starts and re-reads the file."""
    text, ports = e2e.card_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG="INFO")
    sw.proc = subprocess.Popen([sys.executable, "-m", "switch.cli", "serve", "--config", str(sw.config)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=sw.log, text=True)
    try:
        assert e2e.wait_for(lambda: "simulator bank-a listening" in sw.log_text(), timeout=20), sw.log_text()
        sw.config.write_text(text.replace('terminals = ["DEMO0001-DEMO0999"]',
                                          'terminals = ["DEMO0001-DEMO0999", "NEWT0001"]'))
        sw.proc.send_signal(signal.SIGHUP)
        out = ""
        while line := sw.proc.stdout.readline():
            out += line
            if line.startswith("payswitch: ready"):
                break
        assert "payswitch: ready" in out, (sw.proc.poll(), out, sw.log_text())
        log = e2e.wait_for(lambda: "configuration reloaded from" in sw.log_text() and sw.log_text(), timeout=20)
        assert log and "SIGHUP received while starting" in log, (sw.proc.poll(), out, sw.log_text())
        c = Client(ports["term"])
        try:  # the edit made while it started is in force
            answer = c.transact(purchase(100, terminal="NEWT0001"))
            assert answer["39"] == "00", (answer, sw.log_text())
        finally:
            c.close()
    finally:
        sw.stop()
    assert sw.proc.returncode == 0


def test_reload_adds_terminals_without_dropping_connections(switch):
    c = Client(switch.ports["term"])
    try:
        assert c.transact(purchase(100, terminal="NEWT0001"))["39"] == "03"
        cfg = switch.config.read_text().replace('terminals = ["DEMO0001-DEMO0999"]', 'terminals = ["DEMO0001-DEMO0999", "NEWT0001"]')
        switch.config.write_text(cfg)
        os.kill(switch.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if c.transact(purchase(100, terminal="NEWT0001"))["39"] == "00":
                break
            time.sleep(0.1)
        else:
            pytest.fail("reload did not take effect")
        # a bad file is refused through the admin API and the running config stays
        switch.config.write_text(cfg.replace("response_timeout = 30.0", 'response_timeout = "soon"'))
        status, body = post(switch.ports["http"], "/admin/reload")
        assert status == 400 and b"response_timeout" in body and b"switch.toml" in body
        assert c.transact(purchase(100, terminal="NEWT0001"))["39"] == "00"  # same connection, old config
    finally:
        switch.config.write_text(cfg)
        c.close()


def test_cli_send_prints_masked_pan(switch):
    out = subprocess.run(
        [sys.executable, "-m", "switch.cli", "send", "purchase", "--port", str(switch.ports["term"]),
         "--pan", e2e.VISA, "--amount", "1250", "--expiry", "2812"],
        capture_output=True, text=True, timeout=30, cwd=e2e.ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "476173******0119" in out.stdout
    assert e2e.VISA not in out.stdout
    assert "response code" in out.stdout and " 00" in out.stdout
    declined = subprocess.run(
        [sys.executable, "-m", "switch.cli", "send", "purchase", "--port", str(switch.ports["term"]),
         "--pan", e2e.VISA, "--amount", "1051"],
        capture_output=True, text=True, timeout=30, cwd=e2e.ROOT,
    )
    assert declined.returncode == 3 and " 51" in declined.stdout


def test_client_that_never_reads_does_not_stop_others(switch):
    hog = socket.create_connection(("127.0.0.1", switch.ports["term"]))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    sent = 0
    body = e2e.encode(purchase(101))
    frame = struct.pack(">H", len(body)) + body
    # Loopback socket buffers hold a few MiB; past them a switch that stopped
    # reading makes our send() block.  64 MiB (~600k frames) means it never did.
    limit = (64 << 20) // len(frame)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and sent < limit:
            try:
                hog.send(frame)  # the same request: answered from the journal each time
                sent += 1
            except BlockingIOError:
                break  # the switch stopped reading us: back-pressure works
        assert sent < limit, "the switch kept reading from a client that never reads"
        c = Client(switch.ports["term"])
        try:
            # another terminal: the hog's own terminal ID is at its in-flight limit (91, issue 8)
            assert c.transact(purchase(102, terminal="DEMO0002"))["39"] == "00"
        finally:
            c.close()
    finally:
        hog.close()


def test_bad_config_does_not_start(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[routes]]\nname = "x"\nkind = "card"\nprefixes = ["4"]\nacquirers = ["nobody"]\n')
    out = subprocess.run([sys.executable, "-m", "switch.cli", "serve", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30, cwd=e2e.ROOT)
    assert out.returncode == 2
    assert f"{cfg}: unknown acquirer <value not shown> - at `$.routes[0].acquirers[0]`" in out.stderr


def test_a_second_switch_on_the_same_journal_does_not_start(switch, tmp_path):
    """Its start-up recovery would take the first one's payments at the acquirer for a dead
    run's and reverse them: refused, naming the journal and the process that holds it."""
    text = (switch.tmp / "switch.toml").read_text()
    for port in switch.ports.values():
        text = text.replace(str(port), str(e2e.free_port()))
    cfg = tmp_path / "second.toml"
    cfg.write_text(text)
    out = subprocess.run([sys.executable, "-m", "switch.cli", "serve", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=e2e.ROOT)
    assert out.returncode == 1, out.stderr
    journal = switch.tmp / "journal.sqlite"
    # One line, the file and the key too, and found before its simulators were started.
    [line] = [ln for ln in out.stderr.splitlines() if not ln[:4].isdigit()]  # log lines start with the date
    assert line == (f"payswitch: cannot start: {cfg}: journal {journal} is in use by another payswitch"
                    f" process (pid {switch.proc.pid}): one journal, one switch (or one supervisor with"
                    " --workers) - at `$.journal.url`")
    assert "simulator" not in out.stderr, out.stderr
    c = Client(switch.ports["term"])  # the first one serves on
    try:
        assert c.transact(purchase(1000))["39"] == "00"
    finally:
        c.close()


def core_limits(pid: int) -> tuple[str, str]:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max core file size"):
            return tuple(line.split()[4:6])
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_switch_and_its_children_never_dump_core(tmp_path):
    """Its memory holds clear session keys, the master key, PANs and PIN blocks in flight: a crash
    must not write them to a core file (PCI DSS 3.3), whatever limit the shell or unit gave it."""
    import resource

    text, ports = e2e.card_config(tmp_path)
    sw = e2e.SwitchProcess(tmp_path, text, ports)
    old = resource.getrlimit(resource.RLIMIT_CORE)
    if old[1] == 0:  # e.g. an in-process `serve` of an earlier test took it: nothing here could fail
        pytest.skip("this process may not dump core either, so neither may the switch it starts")
    resource.setrlimit(resource.RLIMIT_CORE, (old[1], old[1]))  # as a shell with `ulimit -c unlimited`
    try:
        sw.start()
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, old)
    try:
        children = [int(p) for p in open(f"/proc/{sw.proc.pid}/task/{sw.proc.pid}/children").read().split()]
        assert children  # the bundled acquirer simulators
        assert {pid: core_limits(pid) for pid in [sw.proc.pid, *children]} == {
            pid: ("0", "0") for pid in [sw.proc.pid, *children]}
    finally:
        sw.stop()
