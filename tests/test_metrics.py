"""app/metrics.py: a labelled metric's children, looked up once, are the metric's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from detection_api.app.metrics import FunctionMetrics, LabelledChildren


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
