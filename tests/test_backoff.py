"""The one backoff of the project: capped exponential with equal jitter."""

from __future__ import annotations

import random

import pytest

from detection_api.backoff import Backoff


class _Fixed(random.Random):
    """An rng whose uniform(a, b) always returns a + fraction * (b - a)."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + self.fraction * (b - a)


def test_delays_double_from_base_up_to_the_cap():
    low = Backoff(1.0, 10.0, rng=_Fixed(0.0))
    high = Backoff(1.0, 10.0, rng=_Fixed(1.0))
    assert [low.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 5, 5, 5]
    assert [high.next_delay() for _ in range(7)] == [1, 2, 4, 8, 10, 10, 10]


def test_reset_starts_again_from_base():
    backoff = Backoff(0.2, 5.0, rng=_Fixed(1.0))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.2)


def test_jitter_stays_within_half_and_full_ceiling_and_spreads():
    backoff = Backoff(2.0, 60.0, rng=random.Random(7))
    delays = []
    for _ in range(200):
        backoff.reset()
        delays.append(backoff.next_delay())
    assert all(1.0 <= d <= 2.0 for d in delays)
    assert max(delays) - min(delays) > 0.5  # not in lockstep


def test_many_failures_never_overflow():
    backoff = Backoff(1.0, 300.0, rng=_Fixed(1.0))
    backoff.failures = 10_000
    assert backoff.next_delay() == 300.0
