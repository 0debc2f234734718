"""The end-to-end benchmark's "inside the switch" figures (benchmarks.e2e_throughput)."""
from __future__ import annotations

import pytest

from benchmarks.e2e_throughput import inside, parse_inside

TEXT = """# HELP payswitch_request_seconds Time from request to answer
# TYPE payswitch_request_seconds histogram
payswitch_request_seconds_bucket{kind="card",le="0.005"} 3.0
payswitch_request_seconds_count{kind="card"} 8.0
payswitch_request_seconds_sum{kind="card"} 0.08
payswitch_request_seconds_count{kind="wallet"} 2.0
payswitch_request_seconds_sum{kind="wallet"} 0.12
payswitch_acquirer_seconds_count{acquirer="bank-a",outcome="00"} 10.0
payswitch_acquirer_seconds_sum{acquirer="bank-a",outcome="00"} 0.05
payswitch_journal_commit_seconds_count 4.0
payswitch_journal_commit_seconds_sum 0.012
payswitch_journal_batch_size_count 4.0
payswitch_journal_batch_size_sum 20.0
payswitch_requests_total{kind="card"} 99.0
payswitch_request_seconds_created{kind="card"} 1.7e9
"""


def test_sums_and_counts_are_added_up_over_label_sets():
    got = parse_inside(TEXT)
    assert got["payswitch_request_seconds_count"] == 10.0
    assert got["payswitch_request_seconds_sum"] == pytest.approx(0.2)
    assert got["payswitch_journal_batch_size_sum"] == 20.0
    assert not any(k.startswith("payswitch_requests_total") or k.endswith("_created") for k in got)


def test_means_are_over_the_measurement_only():
    before = parse_inside(TEXT)
    after = dict(before)
    after["payswitch_request_seconds_count"] += 10
    after["payswitch_request_seconds_sum"] += 0.25
    after["payswitch_acquirer_seconds_count"] += 10
    after["payswitch_acquirer_seconds_sum"] += 0.04
    after["payswitch_journal_commit_seconds_count"] += 2
    after["payswitch_journal_commit_seconds_sum"] += 0.006
    after["payswitch_journal_batch_size_count"] += 2
    after["payswitch_journal_batch_size_sum"] += 10
    m = inside(before, after, seconds=0.5)
    assert m["request_ms"] == pytest.approx(25.0)
    assert m["acquirer_ms"] == pytest.approx(4.0)
    assert m["commit_ms"] == pytest.approx(3.0)
    assert m["batch_ops"] == pytest.approx(5.0)
    assert m["writer_busy"] == pytest.approx(0.012)


def test_nothing_measured_gives_zeros_not_a_division_error():
    assert inside(parse_inside(TEXT), parse_inside(TEXT), seconds=1.0) == {
        "request_ms": 0.0, "acquirer_ms": 0.0, "commit_ms": 0.0, "batch_ops": 0.0, "writer_busy": 0.0}
