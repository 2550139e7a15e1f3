"""What the manifests and alert rules rely on, checked against the running processes: every metric
in tests/support/metric_names.py is exported (parsed as OpenMetrics, the format Prometheus asks
for) with sane values after real traffic, and every probe path in the rendered bundle answers 200.
"""

from __future__ import annotations

import http.client
import time

from http_client import post_json, request
from product import start_forwarder, start_function
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from test_end_to_end import _wait_confirmed
from test_function_http import detection

from support.k8s_render import probe_paths
from support.metric_names import FORWARDER_METRICS, FUNCTION_METRICS, Kind

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """name -> [(sample name, labels, value)], from an OpenMetrics scrape (as Prometheus does)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": OPENMETRICS})
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        conn.close()
    families = {}
    for family in text_string_to_metric_families(text):  # raises on clashing names
        families[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return families


def family_name(name: str, kind: Kind) -> str:
    return name.removesuffix("_total") if kind is Kind.COUNTER else name


def test_exported_metrics_and_probe_paths(redis_server, taky_tls, start_process):
    env = {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true"}
    url = start_function(start_process, env)
    port = int(url.rsplit(":", 1)[1])
    _, metrics_port = start_forwarder(start_process, {**env, **taky_tls.client_env()})
    ids = [
        post_json(url, "/api/v1/detections", detection(), Accept="application/json").json["id"]
        for _ in range(3)
    ]
    post_json(url, "/api/v1/detections", detection(pixel_x=-1.0))  # one rejection
    _wait_confirmed(url, ids)

    function = scrape(port)
    # The forwarder counts a confirmation after it has written it to Redis: scrape until the
    # counters have caught up with the records (bounded), never once.
    deadline = time.monotonic() + 15
    while True:
        forwarder = scrape(metrics_port)
        confirmed = [
            v
            for s, lab, v in forwarder.get("detection_api_deliveries", [])
            if s == "detection_api_deliveries_total" and lab.get("outcome") == "confirmed"
        ]
        if sum(confirmed) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for exported, expected in ((function, FUNCTION_METRICS), (forwarder, FORWARDER_METRICS)):
        missing = [n for n, k in expected.items() if family_name(n, k) not in exported]
        assert not missing, f"not exported: {missing}"

    def value(families, name, sample, **labels):
        return sum(
            v
            for s, lab, v in families[name]
            if s == sample and all(lab.get(k) == want for k, want in labels.items())
        )

    assert (
        value(
            function,
            "detection_api_detections",
            "detection_api_detections_total",
            outcome="accepted",
            object_class="vehicle",
        )
        == 3
    )
    assert (
        value(
            function,
            "detection_api_rejections",
            "detection_api_rejections_total",
            reason="validation",
        )
        == 1
    )
    assert value(function, "detection_api_ce90_meters", "detection_api_ce90_meters_count") == 3
    assert (
        value(
            function,
            "detection_api_requests",
            "detection_api_requests_total",
            endpoint="/api/v1/detections",
            status="201",
        )
        == 3
    )
    assert value(function, "detection_queue_depth", "detection_queue_depth", queue="tak") == 0
    # No ids in labels: cardinality stays bounded whatever the traffic.
    for families in (function, forwarder):
        for samples in families.values():
            for _, labels, _ in samples:
                assert not any(v in ids for v in labels.values())

    assert (
        value(
            forwarder,
            "detection_api_deliveries",
            "detection_api_deliveries_total",
            outcome="confirmed",
        )
        == 3
    )
    assert value(forwarder, "detection_api_tak_connected", "detection_api_tak_connected") == 1
    latency_count = value(
        forwarder,
        "detection_api_accept_to_confirm_seconds",
        "detection_api_accept_to_confirm_seconds_count",
    )
    assert latency_count == 3
    assert (
        value(forwarder, "detection_api_dead_letters_waiting", "detection_api_dead_letters_waiting")
        == 0
    )

    # Probe paths of the production bundle answer 200 on the real processes.
    for workload, paths in probe_paths().items():
        target = metrics_port if "forwarder" in workload else port
        for path in paths:
            assert request(f"http://127.0.0.1:{target}", "GET", path).status == 200, (
                workload,
                path,
            )
