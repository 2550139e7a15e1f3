"""Alert rules use only metrics the code exports, parse as PromQL, and cover what the issue
asks; the scrape configuration reaches the ports that serve /metrics."""

from __future__ import annotations

from typing import Any

import promql_parser
import pytest

from support import k8s_render as k8s
from support.metric_names import ALL_SERIES

REQUIRED_ALERTS = {
    "DetectionQueueBacklog",
    "DetectionTakDisconnected",
    "DetectionDeadLetters",
    "DetectionApiErrorRatio",
    "DetectionApiLatencyP99High",
}


def rules(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for obj in objs:
        if obj["kind"] == "PrometheusRule":
            for group in obj["spec"]["groups"]:
                found += group["rules"]
    return found


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (raises ValueError for invalid PromQL)."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    assert matcher.op == promql_parser.MatchOp.Equal, f"regex on __name__: {expr}"
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unknown_metric_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for rule in rules(objs):
        for name in sorted(metric_names(rule["expr"]) - ALL_SERIES):
            problems.append(f"{rule.get('alert') or rule.get('record')}: {name} is not exported")
    return problems


def prod_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules(k8s.bundle("prod")) if "alert" in r}


@pytest.mark.parametrize("name", ["prod", "prod-managed-redis", "base+monitoring"])
def test_alerts_use_only_exported_metrics(name: str) -> None:
    objs = k8s.bundle(name)
    assert rules(objs)
    assert unknown_metric_problems(objs) == []


def test_required_alerts_exist_with_severity_and_summary() -> None:
    alerts = prod_rules()
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name


def test_alert_thresholds_match_the_issue() -> None:
    alerts = prod_rules()
    backlog = alerts["DetectionQueueBacklog"]["expr"]
    assert "detection_queue_depth" in metric_names(backlog)
    # The function may be scaled to zero: the forwarder's series must be enough (max by queue).
    assert backlog.replace(" ", "").startswith("maxby(queue)") and backlog.endswith("> 1000")
    assert metric_names(alerts["DetectionTakDisconnected"]["expr"]) == {
        "detection_api_tak_connected"
    }
    assert "detection_api_dead_letters_total" in metric_names(
        alerts["DetectionDeadLetters"]["expr"]
    )
    ratio = alerts["DetectionApiErrorRatio"]["expr"]
    assert 'status=~"5.."' in ratio and "detection_api_requests_total" in metric_names(ratio)
    latency = alerts["DetectionApiLatencyP99High"]["expr"]
    assert "histogram_quantile(0.99" in latency
    assert metric_names(latency) == {"detection_api_request_duration_seconds_bucket"}


def test_pod_monitors_scrape_the_metrics_ports() -> None:
    objs = k8s.bundle("prod")
    function = k8s.function_service(objs)
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    monitors = {m["metadata"]["name"]: m for m in objs if m["kind"] == "PodMonitor"}
    # Knative labels revision pods with their service and names the user port `user-port`.
    (endpoint,) = monitors["detection-api"]["spec"]["podMetricsEndpoints"]
    assert monitors["detection-api"]["spec"]["selector"]["matchLabels"] == {
        "serving.knative.dev/service": function["metadata"]["name"]
    }
    assert (endpoint["port"], endpoint["path"]) == ("user-port", "/metrics")
    (endpoint,) = monitors["tak-forwarder"]["spec"]["podMetricsEndpoints"]
    pod = forwarder["spec"]["template"]
    assert (
        monitors["tak-forwarder"]["spec"]["selector"]["matchLabels"].items()
        <= pod["metadata"]["labels"].items()
    )
    (container,) = pod["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    # ...and the network policy lets Prometheus reach both ports.
    policy = k8s.find(objs, "NetworkPolicy", "allow-prometheus-scrape")
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    serving_port = function["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"
    ]
    assert {serving_port, container["ports"][0]["containerPort"]} <= allowed


def test_alert_checks_can_fail() -> None:
    objs = k8s.bundle("prod")
    for obj in objs:
        if obj["kind"] == "PrometheusRule":
            obj["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(http_requests_total[5m])) > 1"
    assert any("http_requests_total" in p for p in unknown_metric_problems(objs))
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names("sum(rate(detection_queue_depth[5m])")
    assert metric_names('{__name__="detection_api_tak_connected"} == 0') == {
        "detection_api_tak_connected"
    }
