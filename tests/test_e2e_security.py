"""End to end, spec section 8: secured terminals against the real switch, card simulators and HSM simulator.

A DEMOSEC terminal signs on, gets session keys under its TMK and sends a
MACed purchase with a PIN (``payswitch send --sandbox-keys --pin-env``);
the card simulator decrypts field 52 under its own ZPK and records whether
the PIN was 1234 (its ledger).  A wrong MAC answers A0 and never reaches the
acquirer; a wrong PIN answers 55.  The same again with the security module
being ``payswitch sim hsm`` (``[security.module] kind = "hsm"``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from switch.client import Terminal, build, sign_wire
from switch.security import sandbox
from tests import e2e

pytestmark = pytest.mark.e2e

VISA = e2e.VISA  # bank-a
MASTERCARD = e2e.MASTERCARD  # bank-b
SEC_MERCHANT = "DEMOSEC00000001"

MERCHANT_TOML = f"""
[[merchants]]
id = "{SEC_MERCHANT}"
terminals = ["SEC00001-SEC00299"]
"""

POLICY_TOML = f"""
[[security.merchants]]
merchant = "{SEC_MERCHANT}"
policy = "mac+pin"
[[security.merchants.terminals]]
terminals = "SEC00001-SEC00099"
tmk = "demo-tmk-tdes"
pin_formats = [0, 3]
[[security.merchants.terminals]]
terminals = "SEC00100-SEC00199"
tmk = "demo-tmk-aes"
pin_formats = [4]
[[security.merchants.terminals]]
terminals = "SEC00200-SEC00299"
bdk = "demo-bdk-tdes"
""" + "".join(f"""
[[security.acquirers]]
acquirer = "{a}"
zpk = "zpk-{a}"
""" for a in ("bank-a", "bank-b", "cup"))

SOFTWARE_TOML = f"""
[security.module]
kind = "software"
key_store = "{sandbox.STORE}"
master_key_file = "{sandbox.MASTER_KEY_FILE}"
"""


class HsmSim:
    def __init__(self, tmp):
        self.table = tmp / "hsm-keys.json"
        env = {**os.environ, "PYTHONPATH": str(e2e.ROOT)}
        subprocess.run([sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--write-key-table",
                        str(self.table)], check=True, env=env, capture_output=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--port", "0"],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.endpoint = line.split()[-1]

    def toml(self) -> str:
        return f"""
[security.module]
kind = "hsm"
endpoints = ["{self.endpoint}"]
key_table = "{self.table}"
"""

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def module_switch(module: str, tmp, configure):
    """Yield a card switch (``e2e.card_config``) on the software module or the HSM simulator
    (``module``: "software" or "hsm"), its TOML made by ``configure(text, tmp, module_toml)``;
    then stop both.  For module-scoped fixtures parametrized over the two."""
    hsm = HsmSim(tmp) if module == "hsm" else None
    text, ports = e2e.card_config(tmp, acquirer_timeout=2.0)
    text = "sandbox = true\n" + text  # the sandbox's key store and HSM key table (switch.security.sandbox_only)
    proc = e2e.SwitchProcess(tmp, configure(text, tmp, hsm.toml() if hsm else SOFTWARE_TOML), ports).start()
    proc.module = module
    yield proc
    proc.stop()
    if hsm:
        hsm.stop()


@pytest.fixture(scope="module", params=["software", "hsm"])
def switch(request, tmp_path_factory):
    def configure(text, tmp, module):
        return text.replace("\n[[acquirers]]", MERCHANT_TOML + "\n[[acquirers]]", 1) + module + POLICY_TOML

    yield from module_switch(request.param, tmp_path_factory.mktemp(f"security-{request.param}"), configure)


def send(switch, *args, pin=None):
    env = {**os.environ, "PYTHONPATH": str(e2e.ROOT)}
    if pin is not None:
        env["TEST_PIN"] = pin
    cmd = [sys.executable, "-m", "switch.cli", "send", *args, "--port", str(switch.ports["term"]), "--timeout", "20"]
    if pin is not None:
        cmd += ["--pin-env", "TEST_PIN"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def auths(switch, acquirer, amount):
    return [e for e in switch.ledger(acquirer) if e.get("event") == "authorization" and e.get("amount") == amount]


def wait_ledger(switch, acquirer, amount, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := auths(switch, acquirer, amount):
            return found
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("terminal, pan, acquirer, amount", [("SEC00001", VISA, "bank-a", 1201),
                                                              ("SEC00250", MASTERCARD, "bank-b", 1202),
                                                              ("SEC00150", VISA, "bank-a", 1200)],
                         ids=["session-keys", "dukpt", "aes-format4-in-PB"])
def test_maced_pin_purchase_reaches_the_acquirer_under_its_zpk(switch, terminal, pan, acquirer, amount):
    # SEC00150 has AES keys: its format 4 block travels in field 48 tag PB (a project addition).
    amount += 10 * (switch.module == "hsm")
    out = send(switch, "purchase", "--terminal", terminal, "--merchant", SEC_MERCHANT, "--sandbox-keys",
               "--pan", pan, "--amount", str(amount), pin="1234")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MAC of the answer: ok" in out.stdout
    # The request is printed as it went: MACed, a DUKPT KSN in 48 KS, an AES PIN block in 48 PB withheld.
    sent = out.stdout.rsplit("→", 1)[1].split("←")[0]
    assert "  64  MAC                (MAC)" in sent, sent
    assert ("'KS': 'FFFF" in sent) == (terminal == "SEC00250"), sent
    assert ("{'PB': '(withheld)'}" in sent) == (terminal == "SEC00150"), sent
    [auth] = wait_ledger(switch, acquirer, amount)
    assert (auth["pin"], auth["response_code"], auth["terminal_id"]) == ("ok", "00", terminal)
    # The PIN as a number of its own (a STAN such as 901234 holds its digits by chance).
    pin = re.compile(r"(?<![0-9A-Fa-f])1234(?![0-9A-Fa-f])")
    assert not pin.search(out.stdout) and not pin.search(switch.log_text())
    assert f"security module: {switch.module}" in switch.log_text()


def test_wrong_pin_answers_55_from_the_acquirer(switch):
    amount = 1303 + 10 * (switch.module == "hsm")
    out = send(switch, "purchase", "--terminal", "SEC00002", "--merchant", SEC_MERCHANT, "--sandbox-keys",
               "--pan", VISA, "--amount", str(amount), pin="4321")
    assert out.returncode == 3 and " 55" in out.stdout, out.stdout + out.stderr
    [auth] = wait_ledger(switch, "bank-a", amount)
    assert (auth["pin"], auth["response_code"]) == ("wrong", "55")


def test_wrong_mac_answers_a0_and_never_reaches_the_acquirer(switch):
    amount = 1404 + 10 * (switch.module == "hsm")
    kind, algorithm, tmk = sandbox.KEYS["demo-tmk-tdes"][0], "tdes", bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2])
    from switch.client import TerminalSecurity

    with Terminal("127.0.0.1", switch.ports["term"], timeout=20) as t:
        sec = TerminalSecurity(algorithm, tmk=tmk)
        sec.take_keys(t.transact(build("keyexchange", terminal="SEC00003")))
        req = build("purchase", terminal="SEC00003", merchant=SEC_MERCHANT, pan=VISA, amount=amount)
        good = sign_wire(t.codec, req, sec.tak, algorithm)
        bad = good[:-1] + bytes([good[-1] ^ 0x01])
        answer = t.codec.decode(t.transact_wire(bad))
        assert answer[39] == "A0" and 64 not in answer
        unmaced = t.codec.decode(t.transact_wire(t.codec.encode({**req, 11: "%06d" % (int(req[11]) % 999999 + 1)})))
        assert unmaced[39] == "A0"
        # The same request with its right MAC (a new STAN) goes through.
        req[11] = "%06d" % ((int(req[11]) + 2) % 999999 + 1)
        ok = t.codec.decode(t.transact_wire(sign_wire(t.codec, req, sec.tak, algorithm)))
        assert ok[39] == "00"
    found = wait_ledger(switch, "bank-a", amount)
    assert len(found) == 1 and found[0]["stan"] is not None  # only the MACed one reached bank-a
