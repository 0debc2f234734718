"""atheris entry point: ``python tests/fuzz/fuzz.py TARGET [libFuzzer flags] [corpus dirs]``.

TARGET is one of ``targets.TARGETS`` (framing, iso8583-terminal-87, ...).
``tests/fuzz/run.sh`` runs every target this way against the
AddressSanitizer build; run by hand it fuzzes whatever ``native`` is first on
sys.path.
"""

import os
import sys

import atheris

# Run as a script, sys.path[0] is tests/fuzz: make the repository importable
# after whatever PYTHONPATH put first (run.sh puts the ASan build there).
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

with atheris.instrument_imports(include=["tests.fuzz.targets"]):
    from tests.fuzz import targets

# Generated branch tables are compiled from strings, outside the import hook.
targets._field_branch = atheris.instrument_func(targets._field_branch)
targets._size_branch = atheris.instrument_func(targets._size_branch)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(targets.TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    name = sys.argv.pop(1)
    target = targets.TARGETS[name]()
    import native

    print(f"fuzz target {name}: native from {os.path.dirname(native.__file__)}", flush=True)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
