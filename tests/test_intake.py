"""app/intake.py: what an ingest decided, counted by outcome and class, and its ce90s."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from detection_api.app.intake import _count_outcomes
from detection_api.app.metrics import FunctionMetrics
from detection_api.app.submissions import Outcome


def outcome(
    object_class: str, state: str = "queued", *, duplicate: bool = False, ce90: float = 3.0
) -> Outcome:
    geolocation = {"ce90_m": ce90}
    return Outcome("r", "d", state, duplicate, "u", "a-u-G", "<event/>", object_class, geolocation)


def test_outcomes_are_counted_by_kind_and_class_label_and_ce90s_observed() -> None:
    registry = CollectorRegistry()
    metrics = FunctionMetrics(registry, ["vehicle", "person"])
    _count_outcomes(
        metrics,
        [
            outcome("vehicle", ce90=3.0),
            outcome("Vehicle", ce90=40.0),  # the label is the class-map key, lower-cased
            outcome("unicorn", ce90=600.0),
            outcome("dragon", "filtered", ce90=6000.0),  # another class, the same label
            outcome("person", "filtered", ce90=1.5),
            outcome("vehicle", duplicate=True, ce90=1.0),  # a redelivery: no ce90 again
        ],
    )

    def count(kind: str, label: str) -> float | None:
        labels = {"outcome": kind, "object_class": label}
        return registry.get_sample_value("detection_api_detections_total", labels)

    assert count("accepted", "vehicle") == 2
    assert count("accepted", "other") == 1
    assert count("filtered", "other") == 1
    assert count("filtered", "person") == 1
    assert count("duplicate", "vehicle") == 1
    assert count("duplicate", "other") is None

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("detection_api_ce90_meters_bucket", {"le": le})

    assert registry.get_sample_value("detection_api_ce90_meters_count") == 5
    assert (
        registry.get_sample_value("detection_api_ce90_meters_sum")
        == 3.0 + 40.0 + 600.0 + 6000.0 + 1.5
    )
    assert (bucket("2.0"), bucket("5.0"), bucket("50.0"), bucket("1000.0")) == (1, 2, 3, 4)
    assert bucket("+Inf") == 5
