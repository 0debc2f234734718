"""The benchmark's pyiso8583 reference (benchmarks/pyiso_switch.py) is the same switch.

``make bench`` compares the switch with the same switch decoding and encoding
by pyiso8583.  That comparison means something only if the second switch
really runs on pyiso8583 everywhere the switch reads or writes ISO 8583 (its
listeners, the engine, the card host links), and answers exactly as the
compiled one does.  These tests check both: the codec adapter against the
compiled codec on the sample messages of every shipped dialect, every module
of the shimmed process for a compiled ``dialect`` left behind, and the two
switches end to end on the same purchases.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import pyiso_codec, switches
from native import iso8583 as native
from tests import e2e, samples

ROOT = Path(__file__).resolve().parent.parent


def test_pyiso_dialects_read_and_write_what_the_compiled_ones_do():
    cases = {
        "terminal-87": [samples.terminal_0200(), samples.terminal_0210()],
        "host-87-bcd": [samples.host_0200(), samples.host_0210()],
        "iso87-ascii": [{**samples.terminal_0200(), 52: "7A3C1E9B2D4F6081", 55: samples.icc_request().hex().upper()}],
    }
    for name, messages in cases.items():
        compiled, pyiso = native.dialect(name), pyiso_codec.dialect(name)
        assert pyiso_codec.dialect(name) is pyiso  # one per dialect, as `codec is self.term` expects
        for mapping in messages:
            wire = compiled.encode(mapping)
            assert pyiso.encode(mapping) == wire, (name, mapping["mti"])
            ours, theirs = compiled.decode(wire), pyiso.decode(wire)
            assert (theirs.mti, theirs.fields()) == (ours.mti, ours.fields()), (name, mapping["mti"])
            assert pyiso.encode(theirs) == wire and pyiso.encode(ours) == wire
            assert compiled.encode(theirs.fields() | {"mti": theirs.mti}) == wire
            # what can still be read of a cut message, as a format-error answer echoes it
            assert pyiso.salvage(wire[:40]).fields() == compiled.salvage(wire[:40]).fields()


def test_pyiso_dialect_errors_are_the_compiled_codecs_exceptions():
    pyiso = pyiso_codec.dialect("terminal-87")
    wire = native.dialect("terminal-87").encode(samples.terminal_0200())
    with pytest.raises(native.DecodeError) as e:
        pyiso.decode(wire[:30])
    assert e.value.field == 3 and samples.PAN not in str(e.value)
    with pytest.raises(native.DecodeError):
        pyiso.salvage(b"02")
    with pytest.raises(native.EncodeError) as e:
        pyiso.encode({"mti": "0200", 2: "4" * 25})
    assert e.value.field == 2 and "4444" not in str(e.value)
    with pytest.raises(native.EncodeError):
        pyiso.new("0200", {1: b"\0" * 8})


def test_no_module_of_the_shimmed_switch_keeps_the_compiled_codec():
    """Every ``dialect`` the switch and its adapters bound is pyiso8583's, after loading them all."""
    probe = (
        "import sys\n"
        "from benchmarks import pyiso_switch\n"
        "pyiso_switch.install()\n"
        "import native.iso8583 as n\n"
        "from benchmarks import pyiso_codec\n"
        "import switch.cli, switch.io.app, switch.io.server, switch.io.service, switch.core.engine\n"
        "import switch.core.codecs, switch.config, switch.preflight, adapters.card.link, adapters.card.plugin\n"
        "compiled = pyiso_codec._compiled_dialect\n"
        "left = [m for m, mod in list(sys.modules.items()) if m.split('.')[0] in ('switch', 'adapters')\n"
        "        and any(v is compiled for v in vars(mod).values())]\n"
        "assert not left, left\n"
        "assert n.dialect is pyiso_codec.dialect\n"
        "assert type(switch.core.codecs.listener_codec('terminal-87')).__name__ == 'PyisoDialect'\n"
        "assert type(switch.core.codecs.listener_codec('iso87-ascii').wire).__name__ == 'PyisoDialect'\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_installing_after_the_switch_was_imported_is_refused():
    probe = "import switch.core.engine\nfrom benchmarks import pyiso_switch\npyiso_switch.install()\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True)
    assert out.returncode != 0 and "would not apply" in out.stderr


@pytest.mark.e2e
def test_the_shimmed_switch_answers_purchases_as_the_compiled_one_does():
    answers = {}
    t = e2e.now()  # the same requests to both
    for module in (switches.COMPILED, switches.PYISO):
        tmp = Path(tempfile.mkdtemp(prefix="payswitch-pyiso-"))
        text, ports = e2e.card_config(tmp)
        sw = switches.BenchSwitch(tmp, text, ports, module).start()
        try:
            client = e2e.Client(ports["term"])
            docs = [e2e.purchase(1000 + 100 * i, pan, **{"11": "%06d" % (700 + i), **t})
                    for i, pan in enumerate((e2e.VISA, e2e.MASTERCARD, e2e.UNIONPAY, e2e.VISA))]
            # Not a digit in an n field: the compiled codec refuses it (30); pyiso8583 reads it,
            # so a different answer proves the requests went through pyiso8583.
            odd = e2e.purchase(1000, **{"11": "000799", **t})
            odd["4"] = "00000000100A"
            answers[module] = [client.transact(d) for d in docs] + [client.transact(odd)]
            client.close()
            answers[module + " banner"] = sw.banner
        finally:
            sw.stop()
    assert any("pyiso8583" in line for line in answers[switches.PYISO + " banner"])
    assert not any("pyiso8583" in line for line in answers[switches.COMPILED + " banner"])
    compiled, pyiso = answers[switches.COMPILED], answers[switches.PYISO]
    for ours, theirs in zip(compiled[:-1], pyiso[:-1]):
        assert ours["39"] == "00"
        # 38 is the simulator's random approval code; everything else, RRN included, is the switch's
        assert len(theirs.pop("38")) == len(ours.pop("38")) == 6
        assert theirs == ours
    assert compiled[-1]["39"] == "30" and pyiso[-1]["39"] != "30"


@pytest.mark.parametrize("folder", ["switch", "adapters", "native"])
def test_the_switch_never_imports_pyiso8583_or_the_benchmarks(folder):
    """pyiso8583 is a test dependency: only benchmarks.pyiso_switch puts it in a switch process."""
    from tests.test_layers import offenders

    assert offenders(folder, ("iso8583", "benchmarks")) == []
