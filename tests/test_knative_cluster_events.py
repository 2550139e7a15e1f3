"""The rule that tells a Broker delivery from a public request (app/cluster_events.py)."""

from __future__ import annotations

import pytest

from detection_api.app.cluster_events import is_cluster_delivery, is_cluster_local_host

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
