"""The metric names the code exports and the alert rules may use (README "Operations").

One list for the whole test suite: tests/deployment/test_knative_alerts.py checks every PromQL
selector in knative/ against it, and a scrape test checks it against what the running function
and forwarder actually export. Names are as Prometheus stores them: counters end in ``_total``;
a histogram ``h`` is queried as ``h_bucket``, ``h_sum`` and ``h_count``.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Exported by the function (functions-framework app, GET /metrics on the serving port).
FUNCTION_METRICS: dict[str, Kind] = {
    "detection_api_requests_total": Kind.COUNTER,  # {method, endpoint, status}
    "detection_api_request_duration_seconds": Kind.HISTOGRAM,  # {method, endpoint}
    "detection_api_detections_total": Kind.COUNTER,  # {outcome, object_class}
    "detection_api_rejections_total": Kind.COUNTER,  # {reason}
    "detection_api_ce90_meters": Kind.HISTOGRAM,
    "detection_api_broker_dead_letters_total": Kind.COUNTER,  # {error_code}
    "detection_queue_depth": Kind.GAUGE,  # {queue}, read from Redis at scrape time
}

# Exported by the forwarder (GET /metrics on FORWARDER_METRICS_PORT, default 9102).
FORWARDER_METRICS: dict[str, Kind] = {
    "detection_api_deliveries_total": Kind.COUNTER,  # {outcome}
    "detection_api_accept_to_confirm_seconds": Kind.HISTOGRAM,
    "detection_api_tak_connected": Kind.GAUGE,
    "detection_api_tak_reconnects_total": Kind.COUNTER,
    "detection_api_dead_letters_total": Kind.COUNTER,
    "detection_api_dead_letters_waiting": Kind.GAUGE,  # size of rq's failed registry for queue tak
    "detection_queue_depth": Kind.GAUGE,  # {queue}
    "detection_api_forwarder_last_heartbeat_timestamp_seconds": Kind.GAUGE,
    "detection_api_forwarder_batch_size": Kind.HISTOGRAM,
}

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names(metrics: dict[str, Kind]) -> frozenset[str]:
    """Every series name a PromQL selector may use for these metrics."""
    names: set[str] = set()
    for name, kind in metrics.items():
        if kind is Kind.HISTOGRAM:
            names.update(name + suffix for suffix in _HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return frozenset(names)


ALL_SERIES: frozenset[str] = series_names(FUNCTION_METRICS) | series_names(FORWARDER_METRICS)
