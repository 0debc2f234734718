"""Prints the codec's ratios (medians, same run) against pyiso8583 and the floor.

The bars are the project's targets; missing one is reported, never failed on,
because timings on a shared machine are not a test verdict.
"""
from __future__ import annotations

# (label, numerator (group, impl), denominator (group, impl), bar or None, higher is better)
# The project's two bars (issue: foundation) are the per-transaction speedup and
# decode-vs-floor; the others are shown for context.  Decode alone can't reach
# 30x: the floor itself (slicing with no checks) is only ~24x pyiso8583.
DECODE = "decode terminal 0200 + read all fields"
ENCODE = "encode terminal 0200"
TRANSACTION = "switch transaction: 0200 in, host 0200 out, host 0210 in, 0210 out"
RATIOS = [
    ("per-transaction speedup vs pyiso8583", (TRANSACTION, "pyiso8583"), (TRANSACTION, "ours"), 30.0, True),
    ("decode + read all vs floor", (DECODE, "ours"), (DECODE, "floor"), 2.0, False),
    ("decode speedup vs pyiso8583", (DECODE, "pyiso8583"), (DECODE, "ours"), None, True),
    ("floor speedup vs pyiso8583", (DECODE, "pyiso8583"), (DECODE, "floor"), None, True),
    ("encode speedup vs pyiso8583", (ENCODE, "pyiso8583"), (ENCODE, "ours"), None, True),
]


def medians(config) -> dict[tuple[str, str], float]:
    session = getattr(config, "_benchmarksession", None)
    found = {}
    for bench in getattr(session, "benchmarks", None) or ():
        impl = bench.extra_info.get("impl")
        if impl and bench.stats and bench.stats.rounds:
            found[(bench.group, impl)] = bench.stats.median
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    found = medians(config)
    if not found:
        return
    write = terminalreporter.write_line
    terminalreporter.section("codec ratios (medians)")
    for (group, impl), median in sorted(found.items()):
        write(f"  {median * 1e6:9.2f} us  {impl:<10} {group}")
    for label, top, bottom, bar, higher in RATIOS:
        if top not in found or bottom not in found:
            write(f"{label}: not measured in this run")
            continue
        ratio = found[top] / found[bottom]
        if bar is None:
            write(f"{label}: {ratio:.2f}x")
            continue
        ok = ratio >= bar if higher else ratio <= bar
        want = f"{'>=' if higher else '<='} {bar:g}x"
        write(f"{label}: {ratio:.2f}x (bar {want}) {'PASS' if ok else 'BELOW BAR'}")
