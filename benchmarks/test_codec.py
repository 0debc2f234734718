"""The ISO 8583 codec, side by side with pyiso8583 and with the floor, in one run.

Each group holds the same work done by ``ours`` (native.iso8583), ``pyiso8583``
and, for decoding, ``floor`` (benchmarks/floor.pyx). benchmarks/conftest.py
prints the ratios of the medians at the end of the run. ``make bench`` runs
them; with ``--benchmark-disable`` (the suite's default) each function still
runs once and its result is checked.
"""
from __future__ import annotations

import iso8583
import pytest
from iso8583.specs import default as TERMINAL_SPEC

from benchmarks import floor
from native import iso8583 as codec
from tests import samples

HOST_SPEC = samples.pyiso8583_host_spec()

TERMINAL = codec.dialect("terminal-87")
HOST = codec.dialect("host-87-bcd")

REQUEST = samples.terminal_0200()
REQUEST_BYTES = bytes(iso8583.encode(samples.pyiso8583_doc(REQUEST), TERMINAL_SPEC)[0])
RESPONSE = samples.terminal_0210(REQUEST)
HOST_REQUEST = samples.host_0200(REQUEST)
HOST_RESPONSE = samples.host_0210(HOST_REQUEST)
HOST_RESPONSE_BYTES = bytes(HOST.encode(HOST_RESPONSE))

# What the switch copies from the terminal's request to the acquirer, and back.
TO_ACQUIRER = (2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 35, 41, 42, 49, 52, 55)
TO_TERMINAL = samples.TERMINAL_0210_FIELDS


def fields_of(mapping) -> dict:
    return {k: v for k, v in mapping.items() if k != "mti"}


# ---------------------------------------------------------------------------
# decode terminal 0200 and read every field


def decode_ours(data: bytes):
    msg = TERMINAL.decode(data)
    return msg.mti, msg.fields()


def decode_pyiso8583(data: bytes):
    doc_dec, _ = iso8583.decode(data, TERMINAL_SPEC)
    return doc_dec


@pytest.mark.benchmark(group="decode terminal 0200 + read all fields")
def test_decode_0200_ours(benchmark):
    benchmark.extra_info["impl"] = "ours"
    mti, fields = benchmark(decode_ours, REQUEST_BYTES)
    assert (mti, fields) == ("0200", fields_of(REQUEST))


@pytest.mark.benchmark(group="decode terminal 0200 + read all fields")
def test_decode_0200_pyiso8583(benchmark):
    benchmark.extra_info["impl"] = "pyiso8583"
    doc = benchmark(decode_pyiso8583, REQUEST_BYTES)
    assert doc["2"] == samples.PAN and len(doc) == len(REQUEST) + 1  # + "p"


@pytest.mark.benchmark(group="decode terminal 0200 + read all fields")
def test_decode_0200_floor(benchmark):
    benchmark.extra_info["impl"] = "floor"
    fields = benchmark(floor.slice_fields, REQUEST_BYTES)
    assert fields == REQUEST


# ---------------------------------------------------------------------------
# encode terminal 0200


@pytest.mark.benchmark(group="encode terminal 0200")
def test_encode_0200_ours(benchmark):
    benchmark.extra_info["impl"] = "ours"
    assert bytes(benchmark(TERMINAL.encode, REQUEST)) == REQUEST_BYTES


@pytest.mark.benchmark(group="encode terminal 0200")
def test_encode_0200_pyiso8583(benchmark):
    benchmark.extra_info["impl"] = "pyiso8583"
    doc = samples.pyiso8583_doc(REQUEST)
    data, _ = benchmark(iso8583.encode, doc, TERMINAL_SPEC)
    assert bytes(data) == REQUEST_BYTES


# ---------------------------------------------------------------------------
# a switch's work per transaction: terminal 0200 in, host 0200 out,
# host 0210 in, terminal 0210 out


def transaction_ours(request: bytes, host_response: bytes) -> tuple[bytes, bytes]:
    req = TERMINAL.decode(request)
    out = {"mti": "0200"}
    for n in TO_ACQUIRER:
        out[n] = req[n]
    out[32] = samples.ACQUIRER_ID
    out[37] = samples.RRN
    to_acquirer = HOST.encode(out)
    resp = HOST.decode(host_response)
    answer = {"mti": "0210"}
    for n in TO_TERMINAL:
        answer[n] = resp[n]
    return to_acquirer, TERMINAL.encode(answer)


def transaction_pyiso8583(request: bytes, host_response: bytes) -> tuple[bytes, bytes]:
    req, _ = iso8583.decode(request, TERMINAL_SPEC)
    out = {"t": "0200"}
    for n in TO_ACQUIRER:
        out[str(n)] = req[str(n)]
    out["35"] = samples.host_track2(out["35"])
    out["32"] = samples.ACQUIRER_ID
    out["37"] = samples.RRN
    to_acquirer, _ = iso8583.encode(out, HOST_SPEC)
    resp, _ = iso8583.decode(host_response, HOST_SPEC)
    answer = {"t": "0210"}
    for n in TO_TERMINAL:
        answer[str(n)] = resp[str(n)]
    to_terminal, _ = iso8583.encode(answer, TERMINAL_SPEC)
    return to_acquirer, to_terminal


TO_ACQUIRER_BYTES = bytes(iso8583.encode(samples.pyiso8583_doc(HOST_REQUEST, HOST_SPEC), HOST_SPEC)[0])
TO_TERMINAL_BYTES = bytes(iso8583.encode(samples.pyiso8583_doc(RESPONSE), TERMINAL_SPEC)[0])


def test_host_dialect_matches_its_pyiso8583_spec():
    assert bytes(HOST.encode(HOST_REQUEST)) == TO_ACQUIRER_BYTES
    assert HOST_RESPONSE_BYTES == bytes(iso8583.encode(samples.pyiso8583_doc(HOST_RESPONSE, HOST_SPEC), HOST_SPEC)[0])


@pytest.mark.benchmark(group="switch transaction: 0200 in, host 0200 out, host 0210 in, 0210 out")
def test_transaction_ours(benchmark):
    benchmark.extra_info["impl"] = "ours"
    to_acquirer, to_terminal = benchmark(transaction_ours, REQUEST_BYTES, HOST_RESPONSE_BYTES)
    assert (bytes(to_acquirer), bytes(to_terminal)) == (TO_ACQUIRER_BYTES, TO_TERMINAL_BYTES)


@pytest.mark.benchmark(group="switch transaction: 0200 in, host 0200 out, host 0210 in, 0210 out")
def test_transaction_pyiso8583(benchmark):
    benchmark.extra_info["impl"] = "pyiso8583"
    to_acquirer, to_terminal = benchmark(transaction_pyiso8583, REQUEST_BYTES, HOST_RESPONSE_BYTES)
    assert (bytes(to_acquirer), bytes(to_terminal)) == (TO_ACQUIRER_BYTES, TO_TERMINAL_BYTES)
