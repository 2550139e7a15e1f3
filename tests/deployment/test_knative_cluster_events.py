"""The rule that tells a Broker delivery from a public request (app/cluster_events.py)."""

from __future__ import annotations

from typing import Any

import pytest

from detection_api.app.cluster_events import is_cluster_delivery, is_cluster_local_host
from support import k8s_render as k8s

SVC = "detection-api.detection-api.svc.cluster.local"


@pytest.mark.parametrize(
    "host",
    [
        SVC,
        SVC + ":80",
        SVC.upper(),
        SVC + ".",
        "detection-api.detection-api.svc",
        "candidate-detection-api.detection-api.svc.cluster.local",  # the tag's own address
    ],
)
def test_cluster_local_addresses(host: str) -> None:
    assert is_cluster_local_host(host)
    assert is_cluster_delivery("POST", "/", host)
    assert is_cluster_delivery("POST", "/dead-letters", host)


@pytest.mark.parametrize(
    "host",
    [
        "detections.example.com",  # the DomainMapping host, as queue-proxy restores it
        "detection-api.detection-api.example.com",  # a public route of the Service
        "detection-api.detection-api.svc.example.com",  # "svc" inside a public name
        "detection-api.svc.cluster.local",  # no namespace
        "a.b.detection-api.detection-api.svc.cluster.local",
        "127.0.0.1:8080",
        "localhost",
        "",
        SVC + ".evil.com",
        "-x.detection-api.svc.cluster.local",
    ],
)
def test_other_hosts_are_not_cluster_deliveries(host: str) -> None:
    assert not is_cluster_local_host(host)
    assert not is_cluster_delivery("POST", "/", host)


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("POST", "/api/v1/detections")])
def test_only_posts_to_the_event_paths(method: str, path: str) -> None:
    assert not is_cluster_delivery(method, path, SVC)


def test_the_cluster_domain_is_a_setting() -> None:
    custom = "detection-api.detection-api.svc.corp.internal"
    assert is_cluster_local_host(custom, "corp.internal")
    assert not is_cluster_local_host(custom)
    assert not is_cluster_local_host(SVC, "corp.internal")


# --- the manifests around the rule -------------------------------------------------------------


def test_the_trigger_dead_letters_into_the_function() -> None:
    """Dead letters go to the function's /dead-letters (stored in Redis), on the same cluster-local
    address the rule trusts, not to a display pod's log."""
    objs = k8s.bundle("prod")
    trigger = k8s.find(objs, "Trigger", "detection-created")["spec"]
    sink = trigger["delivery"]["deadLetterSink"]
    assert sink["ref"] == trigger["subscriber"]["ref"]
    assert sink["ref"]["name"] == k8s.FUNCTION_SERVICE_NAME
    assert sink["uri"] == "/dead-letters"
    host = f"{sink['ref']['name']}.{trigger_namespace(objs)}.svc.cluster.local"
    assert is_cluster_delivery("POST", sink["uri"], host)
    assert not [o for o in objs if "event_display" in str(o)]


def trigger_namespace(objs: list[dict[str, Any]]) -> str:
    return str(k8s.find(objs, "Trigger", "detection-created")["metadata"]["namespace"])


def test_bound_producers_may_reach_the_broker_ingress() -> None:
    """Under the default deny, pods the SinkBinding binds need egress to the Broker's ingress."""
    objs = k8s.bundle("prod")
    binding = k8s.find(objs, "SinkBinding", "detection-producers")["spec"]
    producer_labels = binding["subject"]["selector"]["matchLabels"]
    allowed = []
    for policy in k8s.of_kind(objs, "networking.k8s.io/v1", "NetworkPolicy"):
        spec = policy["spec"]
        selected = spec["podSelector"].get("matchLabels", {}).items() <= producer_labels.items()
        if selected and "Egress" in spec["policyTypes"]:
            for rule in spec.get("egress", []):
                for peer in rule.get("to", []):
                    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    if namespace.get("kubernetes.io/metadata.name") == "knative-eventing":
                        allowed += [p["port"] for p in rule.get("ports", [])]
    assert 8080 in allowed  # broker-ingress listens on 8080 (its Service maps 80 to it)
