"""The bundled acquirer simulator says which message it cannot read, and quotes no byte of it.

Through a damaged bitmap any field may hold the card number: here a flipped
bit of the primary bitmap makes field 37 start on the packed-BCD PAN of field
35, and the codec's error quotes what it found there, which no PAN masking
catches (as packed BCD a PAN is no run of digits).  The simulator names the
message's length, the field and the offset, and closes the connection.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.card.sim import decoded
from native.framing import Framer
from native.iso8583 import DecodeError, dialect

HOST = dialect("host-87-bcd")
PAN = "4761739001010119"
REQUEST = {"mti": "0200", 2: PAN, 3: "000000", 4: "000000001000", 7: "1124120001", 11: "000002",
           12: "120001", 13: "1124", 22: "051", 32: "10000000042", 35: PAN + "=2512101",
           37: "000000000002", 41: "DEMO0001", 42: "DEMO00000000001", 49: "840"}
WIRE = HOST.encode(REQUEST)
DAMAGED = bytes([*WIRE[:2], WIRE[2] ^ 0x01, *WIRE[3:]])  # field 8 said present: the fields after it move
SAID = f"bad message, closing: {len(DAMAGED)} bytes, field 37 does not decode at offset 49 (its bytes not shown)"


def _quotes_nothing_of(text: str, wire: bytes) -> None:
    assert "b'" not in text and "\\x" not in text, text
    seen = wire.decode("latin-1")
    for i in range(len(seen) - 3):  # no 4 bytes of the message in a row, read as text
        assert seen[i:i + 4] not in text, (seen[i:i + 4], text)
    for digits in (PAN, PAN[:6], PAN[-4:]):
        assert digits not in text, text


def test_the_codecs_own_words_name_the_field_and_offset_and_quote_no_byte_of_the_card_number():
    """native/iso8583_errors.pyx: the bytes field 37 finds are track 2's, packed (47 61 73 90 01 ...)."""
    with pytest.raises(DecodeError) as caught:
        HOST.decode(DAMAGED)
    assert (caught.value.field, caught.value.offset) == (37, 49)
    assert str(caught.value) == (
        "field 37: expected 12 alphanumeric characters at offset 49, found a byte that is not an ASCII alphanumeric"
        " character at offset 50"
    )
    _quotes_nothing_of(str(caught.value), DAMAGED)


def test_a_message_that_does_not_decode_is_said_by_length_field_and_offset():
    said = []
    acq = SimpleNamespace(dialect=HOST, log=said.append)
    assert decoded(acq, [WIRE, DAMAGED]) is None  # the whole read is dropped, the connection closes
    assert said == [SAID]
    _quotes_nothing_of(said[0], DAMAGED)
    assert decoded(acq, [WIRE])[0][1] == WIRE and len(said) == 1


@pytest.mark.parametrize("fast", [False, True], ids=["trio", "fast"])
def test_the_simulator_process_closes_on_a_damaged_message_and_quotes_none_of_it(tmp_path, fast):
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.card.sim", "--port", "0", "--name", "bank-t", "--seed", "5",
         "--ledger", str(tmp_path / "ledger.jsonl")] + (["--fast"] if fast else []),
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            sock.sendall(Framer("binary2", max_frame=8192).encode(DAMAGED))
            assert sock.recv(65536) == b""  # closed, nothing answered
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err.splitlines() == [f"bank-t: {SAID}"], err
    _quotes_nothing_of(err, DAMAGED)
