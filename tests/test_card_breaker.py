"""The per-endpoint circuit breaker, sans-I/O (time passed in)."""
import pytest

from adapters.card.breaker import Breaker, BreakerState

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_defaults():
    b = Breaker()
    assert (b.threshold, b.cooldown) == (5, 10.0)


def test_consecutive_timeouts_open_it_and_an_answer_resets_the_count():
    b = Breaker(threshold=3, cooldown=10.0)
    assert not b.failure(0.0) and not b.failure(0.1)
    b.success()  # a decline is an answer too: the host works
    assert not b.failure(0.2) and not b.failure(0.3)
    assert b.state(0.3) is CLOSED and b.allow(0.3)
    assert b.failure(0.4)  # the third in a row
    assert b.state(0.4) is OPEN and b.is_open(0.4) and not b.allow(0.4) and b.trips == 1


def test_cool_down_then_one_probe_success_closes():
    b = Breaker(threshold=1, cooldown=10.0)
    b.failure(5.0)
    assert not b.allow(14.9) and b.state(14.9) is OPEN
    assert b.state(15.0) is HALF and not b.is_open(15.0)
    assert b.allow(15.0)  # the probe
    assert not b.allow(15.1) and b.is_open(15.1)  # only one at a time
    b.success()
    assert b.state(15.2) is CLOSED and b.allow(15.2) and b.failures == 0


def test_probe_failure_reopens_for_a_new_cool_down():
    b = Breaker(threshold=2, cooldown=10.0)
    b.failure(0.0)
    b.failure(0.0)
    assert b.allow(10.0)
    assert b.failure(11.0)
    assert b.state(20.9) is OPEN and b.state(21.0) is HALF and b.trips == 2


def test_inconclusive_probe_hands_out_another():
    b = Breaker(threshold=1, cooldown=1.0)
    b.failure(0.0)
    assert b.allow(1.0) and not b.allow(1.0)
    b.inconclusive(1.1)  # the connection dropped under the probe
    assert b.allow(1.2)
    b.inconclusive(1.3)
    assert b.state(1.3) is HALF


def test_outcomes_while_open_change_nothing():
    b = Breaker(threshold=1, cooldown=10.0)
    b.failure(0.0)
    b.success()  # an answer to a request sent before the trip
    assert not b.failure(5.0)  # nor a late timeout: the cool-down is not extended
    assert b.state(9.9) is OPEN and b.state(10.0) is HALF and b.trips == 1


@pytest.mark.parametrize("kw", [{"threshold": 0}, {"cooldown": -1.0}])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        Breaker(**kw)
