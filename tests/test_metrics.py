"""app/metrics.py: a labelled metric's children, looked up once, are the metric's own; a
histogram observed all at once holds what it holds observed value by value."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from detection_api.app.metrics import FunctionMetrics, LabelledChildren, observe_all


def test_children_are_the_metrics_own_and_looked_up_once() -> None:
    registry = CollectorRegistry()
    metric = Counter("things", "things", ["kind", "colour"], registry=registry)
    children = LabelledChildren(metric)
    first = children("car", "red")
    assert first is metric.labels("car", "red")
    assert children("car", "red") is first
    children("car", "red").inc(2)
    children("car", "blue").inc()
    assert registry.get_sample_value("things_total", {"kind": "car", "colour": "red"}) == 2
    assert registry.get_sample_value("things_total", {"kind": "car", "colour": "blue"}) == 1


def test_detections_by_counts_in_the_contract_metric() -> None:
    registry = CollectorRegistry()
    metrics = FunctionMetrics(registry, ["vehicle"])
    metrics.detections_by("accepted", metrics.class_label("Vehicle")).inc(3)
    metrics.detections_by("accepted", metrics.class_label("unicorn")).inc()
    labels = {"outcome": "accepted", "object_class": "vehicle"}
    assert registry.get_sample_value("detection_api_detections_total", labels) == 3
    labels["object_class"] = "other"
    assert registry.get_sample_value("detection_api_detections_total", labels) == 1


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from([0.0, 1.0, 2.0, 5.0, 1000.0, 5000.0, 5000.5, -1.0]),
        max_size=30,
    )
)
def test_observe_all_gives_what_observe_gives_for_each_value(values: list[float]) -> None:
    registries = CollectorRegistry(), CollectorRegistry()
    one_by_one, together = (FunctionMetrics(r, ["vehicle"]).ce90 for r in registries)
    for value in values:
        one_by_one.observe(value)
    observe_all(together, values)
    expected, found = (
        {s.name + str(s.labels): s.value for s in r.collect() for s in s.samples}
        for r in registries
    )
    # the same samples; the sum too (added in the same order: the request's sum starts at 0)
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert found[name] == value or (math.isnan(found[name]) and math.isnan(value)), name
