"""Capped exponential backoff with jitter, for every retry loop of the project (the TAK
forwarder's reconnects, the Discord notifier's webhook and Redis retries). Pure: no I/O."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with "equal jitter": half fixed, half random, so a fleet of
    forwarders does not reconnect in lockstep.

    The n-th delay in a row (n from 0) lies in [c/2, c] with c = min(cap, base * 2**n).
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)  # nosec B311 # backoff jitter, not cryptography

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))  # no float overflow
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
