"""The switch with pyiso8583 as its ISO 8583 codec: the benchmark's second reference.

    PYTHONPATH=<checkout> python -m benchmarks.pyiso_switch serve --config switch.toml

Same arguments as ``payswitch`` (``switch.cli``); the process is the very same
switch, except that every dialect it loads (the listeners' codecs, the
engine's terminal-87, the card host links' host-87-bcd) is a
:class:`benchmarks.pyiso_codec.PyisoDialect`: decoding and encoding by
pyiso8583 instead of the compiled ``native.iso8583``.  Framing, routing, the
journal and everything else stay as they are.  The simulators the switch
starts, and its journal writer process, are separate programs and keep the
compiled codec.

For benchmarks and tests only (pyiso8583 is a test dependency).
"""
from __future__ import annotations

import sys


def install() -> None:
    """Make ``native.iso8583.dialect`` hand out pyiso8583 dialects; before any switch module loads.

    The switch binds ``dialect`` when its modules are imported (``from
    native.iso8583 import dialect``), so this must run first; it refuses to
    run after ``switch`` was imported, where it would only half apply.
    """
    loaded = [m for m in ("switch.core.codecs", "switch.core.engine", "switch.io.service", "switch.config")
              if m in sys.modules]
    if loaded:
        raise RuntimeError(f"pyiso_switch.install() after {', '.join(loaded)} was imported: it would not apply")
    import native.iso8583

    from benchmarks import pyiso_codec

    native.iso8583.dialect = pyiso_codec.dialect
    # HexFieldsCodec (dialects with hex-text binary fields) tells a message from a
    # mapping by its class: in this process every message is a PyisoMessage.
    from switch.core import codecs

    codecs.Message = pyiso_codec.PyisoMessage


def main(argv=None) -> int:
    install()
    import iso8583

    from switch import cli

    print(f"payswitch: ISO 8583 codec: pyiso8583 {iso8583.__version__} (benchmark reference)", flush=True)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
