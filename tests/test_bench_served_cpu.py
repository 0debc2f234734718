"""benchmarks.served_cpu reads callgrind's dumps only once every thread's file is written."""
from __future__ import annotations

import pytest

from benchmarks.served_cpu import wait_dumps


def test_a_half_written_dump_is_waited_for(tmp_path):
    stem = str(tmp_path / "callgrind.1.1-")
    (tmp_path / "callgrind.1.1-01").write_text("events: Ir\nfn=(1) main\n0 538797464\n\ntotals: 538797464\n")
    half = tmp_path / "callgrind.1.1-02"
    half.write_text("events: Ir\nfn=(1) writer\n0 3329")  # callgrind still writing it
    with pytest.raises(SystemExit, match="no complete callgrind dump"):
        wait_dumps(stem, timeout=1.5)
    half.write_text("events: Ir\nfn=(1) writer\n0 332937423\n\ntotals: 335040238\n")
    assert wait_dumps(stem, timeout=5) == [f"{stem}01", f"{stem}02"]
