"""End-to-end harness: the real switch and simulators as processes, an independent client.

The client is built on pyiso8583's ``default`` spec (the terminal interface says
third-party clients must work unchanged), so these tests never use our own codec
to talk to the switch.
"""
from __future__ import annotations

import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import iso8583
from iso8583.specs import default as SPEC

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = "DEMO0001"
MERCHANT = "DEMO00000000001"
VISA = "4761739001010119"  # Luhn-valid test PAN
MASTERCARD = "5413330089010434"
UNIONPAY = "6250947000000014"


_PORTS = random.Random(os.getpid() ^ time.time_ns())
# The last ports handed out: free when checked, but maybe not bound yet by whoever asked
# (a configuration asks for five before anything starts), so never handed out again soon.
_GIVEN: collections.deque[int] = collections.deque(maxlen=1000)


def free_port() -> int:
    """A port free now, below the kernel's range for outgoing connections
    (32768-60999 here): between this check and the switch's bind, no client
    socket of another test can take it, as one could a port from that range;
    nor is it one of the last ports this process handed out (two names of one
    configuration on the same port)."""
    for _ in range(200):
        port = _PORTS.randrange(20000, 32000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.append(port)
        return port
    raise RuntimeError("no free port between 20000 and 32000")


ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"  # the admin API's bearer token in base_config


def base_config(tmp: Path, ports: dict, *, reversal_retry: float = 0.5) -> str:
    """What every test switch has: listener and HTTP on ``ports``, a journal and its
    key file in ``tmp``, the demo merchant.  Acquirers and routes follow it."""
    # Apart from the journal's directory, which is backed up and shipped (switch.preflight.keys_beside_journal).
    (tmp / "keys").mkdir(exist_ok=True)
    (tmp / "keys" / "journal.key").write_text(os.urandom(32).hex())
    (tmp / "keys" / "admin.token").write_text(ADMIN_TOKEN + "\n")
    for secret in ("journal.key", "admin.token"):
        (tmp / "keys" / secret).chmod(0o600)
    return f"""
response_timeout = 30.0
reversal_retry = {reversal_retry}

[[listeners]]
host = "127.0.0.1"
port = {ports['term']}
max_in_flight = 128

[http]
host = "127.0.0.1"
port = {ports['http']}
admin_token_file = "{tmp / 'keys' / 'admin.token'}"

[journal]
url = "sqlite://{tmp / 'journal.sqlite'}"
hmac_key_file = "{tmp / 'keys' / 'journal.key'}"

[[merchants]]
id = "{MERCHANT}"
terminals = ["DEMO0001-DEMO0999"]
"""


def card_config(tmp: Path, *, acquirer_timeout: float = 2.0, extra: str = "") -> tuple[str, dict]:
    """A config like the embedded default on free ports, with simulator ledgers in ``tmp``."""
    ports = {name: free_port() for name in ("term", "http", "bank-a", "bank-b", "cup")}
    sims = ""
    acqs = ""
    for name, acq_id in (("bank-a", "10000000001"), ("bank-b", "10000000002"), ("cup", "10000000062")):
        acqs += f"""
[[acquirers]]
name = "{name}"
type = "card"
endpoints = ["127.0.0.1:{ports[name]}"]
timeout = {acquirer_timeout}
acquirer_id = "{acq_id}"
echo_interval = 5.0
"""
        sims += f"""
[[simulators]]
kind = "acquirer"
name = "{name}"
port = {ports[name]}
args = ["--ledger", "{tmp / (name + '.ledger')}"]
"""
    text = base_config(tmp, ports) + f"""{acqs}
[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "mastercard"
kind = "card"
prefixes = ["5", "2"]
acquirers = ["bank-b"]

[[routes]]
name = "unionpay"
kind = "card"
prefixes = ["62"]
acquirers = ["cup"]
{sims}
{extra}
"""
    return text, ports


class SwitchProcess:
    def __init__(self, tmp: Path, config_text: str, ports: dict):
        self.tmp = tmp
        self.ports = ports
        self.config = tmp / "switch.toml"
        self.config.write_text(config_text)
        self.log = open(tmp / "switch.log", "w")
        self.proc = None
        self.log_level = "INFO"  # PAYSWITCH_LOG of the process start() runs
        self.command = [sys.executable, "-m", "switch.cli"]  # what start() runs, before "serve --config FILE"

    def start(self, timeout: float = 30.0):
        # This checkout first: an editable install elsewhere (another worktree's) must not be what runs.
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PAYSWITCH_LOG=self.log_level,
                   PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--config", str(self.config)],
            cwd=self.tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("payswitch: ready"):
                return self
        self.stop()
        raise RuntimeError("switch did not start:\n" + "".join(lines) + (self.tmp / "switch.log").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def log_text(self) -> str:
        self.log.flush()
        return (self.tmp / "switch.log").read_text()

    def ledger(self, acquirer: str) -> list[dict]:
        p = self.tmp / f"{acquirer}.ledger"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def http_get(self, path: str) -> tuple[int, bytes]:
        return http_request(self.ports["http"], "GET", path)

    def http_post(self, path: str) -> tuple[int, bytes]:
        """An admin POST (with the admin token) to the switch's HTTP port."""
        return http_post(self.ports["http"], path)


def http_request(port: int, method: str, path: str, headers: str = "") -> tuple[int, bytes]:
    """One HTTP/1.1 request to 127.0.0.1:``port``: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def http_post(port: int, path: str) -> tuple[int, bytes]:
    """An admin POST with no body and the sandbox admin token: (status, body)."""
    return http_request(port, "POST", path, f"Content-Length: 0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n")


def wait_for(predicate, timeout: float = 8.0, interval: float = 0.05):
    """Call ``predicate`` until it gives something true or ``timeout`` seconds pass; what it gave last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(interval)
    return predicate()


_stan = [int(time.time()) % 500000]


def stan() -> str:
    _stan[0] += 1
    return "%06d" % _stan[0]


def now() -> dict:
    t = datetime.now(timezone.utc)
    return {"7": t.strftime("%m%d%H%M%S"), "12": t.strftime("%H%M%S"), "13": t.strftime("%m%d")}


def purchase(amount: int, pan: str = VISA, *, pcode: str = "000000", mti: str = "0200", terminal: str = TERMINAL, **extra) -> dict:
    doc = {
        "t": mti,
        "2": pan,
        "3": pcode,
        "4": "%012d" % amount,
        "11": stan(),
        "14": "2812",
        "22": "051",
        "25": "00",
        "41": terminal,
        "42": MERCHANT,
        "49": "978",
        # No field 52: a demo terminal has no PIN key (spec 8); PINs are tried
        # with the DEMOSEC terminals (tests/test_e2e_security.py).
        "55": "9F2608A1B2C3D4E5F607089F2701809F370411223344",
    }
    doc.update(now())
    doc.update(extra)
    return doc


def reversal_of(orig: dict, **extra) -> dict:
    doc = {
        "t": "0400",
        "3": orig["3"],
        "4": orig["4"],
        "7": now()["7"],
        "11": stan(),
        "41": orig["41"],
        "42": MERCHANT,
        "90": orig["t"] + orig["11"] + orig["7"] + "0" * 22,
    }
    doc.update(extra)
    return doc


def encode(doc: dict) -> bytes:
    raw, _ = iso8583.encode(dict(doc), SPEC)
    return bytes(raw)


def decode(body: bytes) -> dict:
    doc, _ = iso8583.decode(body, SPEC)
    return doc


class Client:
    """A terminal connection: pyiso8583 messages, 2-byte length framing."""

    def __init__(self, port: int, timeout: float = 40.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def close(self):
        self.sock.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, doc: dict):
        body = encode(doc)
        self.sock.sendall(struct.pack(">H", len(body)) + body)

    def recv(self) -> dict:
        return decode(self.recv_body())

    def recv_body(self) -> bytes:
        (n,) = struct.unpack(">H", self._read(2))
        return self._read(n)

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the switch")
            buf += chunk
        return buf

    def transact(self, doc: dict) -> dict:
        self.send(doc)
        return self.recv()
