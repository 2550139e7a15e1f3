"""The Flagger canary: the analysis the issue asks for (30 s steps of 10% up to 50%, abort under
99% success or over the p99 SLO), metric queries that parse and use only what the function
exports and the labels the scrape adds, and a Service whose traffic is left to Flagger."""

from __future__ import annotations

import copy
import re
from typing import Any

import promql_parser
import pytest
import redis

from detection_api.app.http_app import create_app
from detection_api.settings import Settings
from support import k8s_render as k8s
from support.manifest_checks import flagger_owns_traffic, versioned_service_problems
from support.metric_names import FUNCTION_METRICS, series_names

WITH_FLAGGER = ("prod-flagger", "base+flagger-canary")
# What Flagger substitutes into a MetricTemplate's query (its template functions).
TEMPLATE_VALUES = {
    "namespace": "detection-api",
    "target": "detection-api",
    "name": "detection-api",
    "service": "detection-api",
    "ingress": "detection-api",
    "route": "detection-api",
    "interval": "2m",
}
REVISION_LABEL = "serving_knative_dev_revision"
SERVICE_LABEL = "serving_knative_dev_service"


def canary(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == "Canary"]
    return found


def templates(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "MetricTemplate"}


def render_query(template: str) -> str:
    def value(match: re.Match[str]) -> str:
        return TEMPLATE_VALUES[match.group(1)]

    rendered = re.sub(r"\{\{\s*(\w+)\s*\}\}", value, template)
    assert "{{" not in rendered, rendered
    return rendered


def selectors(query: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(query), visit)
    return found


def grouping_labels(query: str) -> set[str]:
    return set(re.findall(r"by \(([^)]*)\)", query)[0].replace(" ", "").split(",")) - {"le"}


def canary_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    found = canary(objs)
    spec = found["spec"]
    if spec.get("provider") != "knative":
        problems.append(f"provider {spec.get('provider')}, not knative")
    ref = spec["targetRef"]
    if (ref["apiVersion"], ref["kind"]) != k8s.KNATIVE_SERVICE:
        problems.append(f"targetRef {ref} is not a Knative Service")
    service = k8s.find(objs, "Service", ref["name"], k8s.KNATIVE_SERVICE[0])
    if not flagger_owns_traffic(service) or "traffic" in service["spec"]:
        problems.append("the Service still pins its traffic: deploys would undo Flagger's split")
    analysis = spec["analysis"]
    wanted = {"interval": "30s", "stepWeight": 10, "maxWeight": 50}
    for key, value in wanted.items():
        if analysis.get(key) != value:
            problems.append(f"analysis.{key} is {analysis.get(key)!r}, not {value!r}")
    shipped = templates(objs)
    for metric in analysis["metrics"]:
        name = metric["templateRef"]["name"]
        if name not in shipped:
            problems.append(f"metric {metric['name']} uses MetricTemplate {name}, not shipped")
    return problems


def metric(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [m for m in canary(objs)["spec"]["analysis"]["metrics"] if m["name"] == name]
    return found


def alert_p99_threshold(objs: list[dict[str, Any]]) -> float:
    for obj in objs:
        if obj["kind"] == "PrometheusRule":
            for group in obj["spec"]["groups"]:
                for rule in group["rules"]:
                    if rule.get("alert") == "DetectionApiLatencyP99High":
                        return float(re.search(r">\s*([\d.]+)\s*$", rule["expr"]).group(1))
    raise AssertionError("no DetectionApiLatencyP99High alert")


@pytest.mark.parametrize("name", WITH_FLAGGER)
def test_canary_runs_the_issues_analysis(name: str) -> None:
    objs = k8s.bundle(name)
    assert canary_problems(objs) == []
    assert metric(objs, "request-success-rate")["thresholdRange"] == {"min": 99}
    assert canary(objs)["spec"]["analysis"]["threshold"] >= 1


def test_latency_check_is_the_alerts_slo() -> None:
    objs = k8s.bundle("prod-flagger")
    assert metric(objs, "request-duration-p99")["thresholdRange"] == {
        "max": alert_p99_threshold(objs)
    }


@pytest.mark.parametrize("name", WITH_FLAGGER)
def test_metric_queries_parse_and_use_only_exported_series(name: str) -> None:
    exported = series_names(FUNCTION_METRICS)
    for template in templates(k8s.bundle(name)).values():
        assert template["spec"]["provider"]["type"] == "prometheus"
        query = render_query(template["spec"]["query"])
        found = selectors(query)
        assert found
        for selector in found:
            assert selector.name in exported, selector.name
            labels = {m.name for m in selector.matchers.matchers}
            # Only this Service's pods in this namespace.
            assert {"namespace", SERVICE_LABEL} <= labels
        assert grouping_labels(query) == {REVISION_LABEL}


def test_the_scrape_adds_the_labels_the_queries_use() -> None:
    objs = k8s.bundle("prod-flagger")
    monitor = k8s.find(objs, "PodMonitor", "detection-api")
    copied = {
        label.replace(".", "_").replace("/", "_").replace("-", "_")
        for label in monitor["spec"]["podTargetLabels"]
    }
    assert {REVISION_LABEL, SERVICE_LABEL} <= copied


def test_endpoint_filters_match_the_ingest_routes() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", jwt_secret_key="k" * 32)
    app = create_app(settings, redis.Redis.from_url(settings.redis_url.get_secret_value()))
    # POST /dead-letters is the Broker's dead-letter sink, not ingest: no canary signal.
    ingest = {r.rule for r in app.url_map.iter_rules() if "POST" in r.methods} - {"/dead-letters"}
    operations = {"/health", "/ready", "/metrics", "/openapi.json"}
    for template in templates(k8s.bundle("prod-flagger")).values():
        for selector in selectors(render_query(template["spec"]["query"])):
            (endpoint,) = [m for m in selector.matchers.matchers if m.name == "endpoint"]
            pattern = re.compile(f"^(?:{endpoint.value})$")  # PromQL regexes are anchored
            assert {r for r in ingest if pattern.match(r)} == ingest
            assert not [r for r in operations if pattern.match(r)]


def test_manual_canary_keeps_its_tags_without_flagger() -> None:
    service = k8s.function_service(k8s.bundle("prod"))
    assert not flagger_owns_traffic(service)
    assert not [o for o in k8s.bundle("prod") if o["kind"] == "Canary"]
    assert versioned_service_problems(service) == []


# --- the checks themselves can fail ------------------------------------------------------------


def test_canary_checks_catch_a_wrong_analysis_and_pinned_traffic() -> None:
    objs = copy.deepcopy(k8s.bundle("prod-flagger"))
    analysis = canary(objs)["spec"]["analysis"]
    analysis["stepWeight"] = 20
    analysis["metrics"][0]["templateRef"]["name"] = "missing"
    service = k8s.function_service(objs)
    service["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]
    problems = canary_problems(objs)
    assert any("stepWeight" in p for p in problems)
    assert any("not shipped" in p for p in problems)
    assert any("pins its traffic" in p for p in problems)
    assert "Flagger owns the traffic" in " ".join(versioned_service_problems(service))


def test_an_unknown_series_or_broken_query_is_caught() -> None:
    with pytest.raises(ValueError):
        selectors("sum(rate(detection_api_requests_total[2m]")
    (selector,) = selectors(render_query("rate(detection_api_requests_totl{}[{{ interval }}])"))
    assert selector.name not in series_names(FUNCTION_METRICS)
