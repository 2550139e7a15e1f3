"""Loopback benchmarks: ``python -m bench`` (``make bench``).

Each benchmark is a module ``bench/<name>.py`` with ``run() -> list[Row]`` and is listed in
``bench/__main__.py``. Timings on a shared machine drift from run to run (and within a run), so
every row carries a baseline measured in the same run, interleaved with it, and the ratio to it;
compare ratios between runs, not values.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str  # what was measured
    value: float
    unit: str  # e.g. "us/detection", "events/s"
    baseline: float | None = None  # the reference's value, same unit, measured in the same run
    baseline_name: str = ""  # what the reference is
    ratio: float | None = None  # value / baseline; given when measured pairwise (more robust)
    # The figure this row must meet, as printed (e.g. "<= 10", ">= 0.5x"); "" when none is set.
    target: str = ""
    # Whether the row meets it (None: no target). Set by the benchmark, which knows the direction.
    meets_target: bool | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            object.__setattr__(self, "ratio", self.value / self.baseline)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loops_for(func: Callable[[], object], min_seconds: float) -> int:
    timer = timeit.Timer(func)
    number = 1
    while timer.timeit(number) < min_seconds:
        number *= 2
    return number


def compare_microseconds(
    baseline: Callable[[], object],
    candidates: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 9,
    min_seconds: float = 0.05,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Time ``baseline`` and each candidate in interleaved rounds (microseconds per call).

    Returns the baseline's median and, per candidate, ``(median us, median of per-round ratios)``.
    Interleaving makes a neighbour's load hit both sides of a ratio alike; the median of the
    rounds drops the odd disturbed one.
    """
    funcs = {"": baseline, **candidates}
    loops = {name: _loops_for(func, min_seconds) for name, func in funcs.items()}
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            seconds = timeit.Timer(func).timeit(loops[name])
            samples[name].append(seconds / loops[name] * 1e6)
    base = samples.pop("")
    results = {
        name: (
            statistics.median(values),
            statistics.median(v / b for v, b in zip(values, base, strict=True)),
        )
        for name, values in samples.items()
    }
    return statistics.median(base), results
