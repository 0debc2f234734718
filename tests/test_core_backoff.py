"""Reconnect back-off of the acquirer links (switch.core.backoff)."""
import random

from switch.core.backoff import Backoff


def test_backoff_doubles_to_cap_with_jitter():
    b = Backoff(initial=0.1, maximum=10.0, jitter=0.2, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    bases = [min(10.0, 0.1 * 2 ** i) for i in range(12)]
    for d, base in zip(delays, bases):
        assert base * 0.8 <= d <= base * 1.2
    b.reset()
    assert 0.08 <= b.next_delay() <= 0.12


def test_backoff_without_jitter_is_the_plain_doubling():
    b = Backoff(initial=0.05, maximum=0.3, jitter=0.0)
    assert [b.next_delay() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    b.reset()
    assert b.next_delay() == 0.05


def test_the_same_seed_gives_the_same_delays():
    first = Backoff(jitter=0.25, rng=random.Random(7))
    second = Backoff(jitter=0.25, rng=random.Random(7))
    assert [first.next_delay() for _ in range(6)] == [second.next_delay() for _ in range(6)]
