"""Prometheus metrics of the function. Names are a contract with the alert rules in knative/.

Labels are bounded: endpoints are route templates, classes are the class-map keys or "other",
never ids. The queue depth is read from Redis when Prometheus scrapes, not kept in the process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

# The *_created series double the exposition size and no alert or dashboard of ours reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CE90_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000, 5000)


Metric = TypeVar("Metric", Counter, Histogram)


class LabelledChildren(Generic[Metric]):
    """``children(*values)`` is ``metric.labels(*values)``, looked up once per label values:
    ``labels`` converts, checks and takes the metric's lock on every call (a few a request)."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Metric] = {}

    def __call__(self, *values: str) -> Metric:
        child = self._children.get(values)
        if child is None:  # (two threads may both look it up: labels() gives both the same child)
            child = self._children[values] = self._metric.labels(*values)
        return child


class FunctionMetrics:
    """What ingest decided, by outcome and class. Request counts and durations are
    ``request_metrics.py``'s."""

    def __init__(self, registry: CollectorRegistry, known_classes: Iterable[str]) -> None:
        self.registry = registry
        self.known_classes = frozenset(c.lower() for c in known_classes)
        self.detections = Counter(
            "detection_api_detections",
            "Detections by outcome (accepted, filtered, rejected, duplicate) and class",
            ["outcome", "object_class"],
            registry=registry,
        )
        self.detections_by = LabelledChildren(self.detections)
        self.rejections = Counter(
            "detection_api_rejections",
            "Rejected requests by reason (problem type)",
            ["reason"],
            registry=registry,
        )
        self.ce90 = Histogram(
            "detection_api_ce90_meters",
            "Horizontal 90% error radius of accepted detections",
            buckets=CE90_BUCKETS,
            registry=registry,
        )

    def class_label(self, object_class: str) -> str:
        label = object_class.lower()
        return label if label in self.known_classes else "other"


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(value)`` for each value (an unlabelled histogram), each bucket and the
    sum incremented once for all: ``observe`` takes two locks and walks the buckets in Python for
    every value, 1.1 us a detection in a list. It reads the bucket list prometheus_client keeps
    (``_upper_bounds``, ``_buckets``, ``_sum``); tests/test_metrics.py compares the samples with
    ``observe``'s, so a change of those internals fails there, not in production."""
    if not values:
        return
    bounds: list[float] = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        i = bisect_left(bounds, value)  # observe's bucket: the first bound >= value
        if i < len(bounds) and value <= bounds[i]:  # (NaN: in no bucket, as observe does)
            counts[i] += 1
    histogram._sum.inc(sum(values))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
