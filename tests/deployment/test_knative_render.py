"""Every kustomization under knative/ renders offline, and every object it renders is valid:
core kinds strictly against a pinned Kubernetes version, custom kinds against their shapes."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from support import k8s_render as k8s
from support.crd_shapes import SHAPES, shape_errors

# The Kubernetes version the manifests are checked against (the kubectl from PyPI is 1.33 too).
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "detection-api"
CLUSTER_SCOPED_KINDS = {"Namespace", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
# Fields of a Knative revision spec that a plain Pod spec does not have.
KNATIVE_ONLY_SPEC_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)


def core_errors(obj: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return [f"{obj['kind']}/{obj['metadata'].get('name')}: {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"unknown kind: {error.message}"]
    return []


def knative_pod(service: dict[str, Any]) -> dict[str, Any]:
    """The pod a Knative revision would run, as a v1 Pod, so kubernetes-validate checks every
    container, probe, env and volume field strictly."""
    spec = copy.deepcopy(service["spec"]["template"]["spec"])
    for field in KNATIVE_ONLY_SPEC_FIELDS:
        spec.pop(field, None)
    for container in spec["containers"]:
        # Knative fills a probe's missing port with the serving port, as the kubelet needs one.
        serving_port = (container.get("ports") or [{"containerPort": 8080}])[0]["containerPort"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            for handler in ("httpGet", "tcpSocket"):
                action = (container.get(probe) or {}).get(handler)
                if action is not None:
                    action.setdefault("port", serving_port)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": service["metadata"]["name"]},
        "spec": spec,
    }


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_bundle_renders_without_duplicates(name: str) -> None:
    objs = k8s.bundle(name)
    assert objs
    keys = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_core_objects_validate_strictly(name: str) -> None:
    problems = []
    for obj in k8s.bundle(name):
        if (obj["apiVersion"], obj["kind"]) not in SHAPES:
            problems += core_errors(obj)
    assert problems == []


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_custom_objects_fit_their_shapes(name: str) -> None:
    problems = []
    for obj in k8s.bundle(name):
        if (obj["apiVersion"], obj["kind"]) in SHAPES:
            problems += [f"{obj['kind']}/{obj['metadata']['name']}: {e}" for e in shape_errors(obj)]
    assert problems == []


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_knative_revisions_are_valid_pods(name: str) -> None:
    services = k8s.of_kind(k8s.bundle(name), *k8s.KNATIVE_SERVICE)
    assert services
    problems = []
    for service in services:
        problems += core_errors(knative_pod(service))
    assert problems == []


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_everything_lives_in_one_namespace(name: str) -> None:
    for obj in k8s.bundle(name):
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_referenced_config_maps_are_in_the_bundle(name: str) -> None:
    objs = k8s.bundle(name)
    config_maps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    for workload in k8s.workloads(objs):
        for container in k8s.containers(workload.pod_spec):
            refs = [
                s["configMapRef"]["name"]
                for s in container.get("envFrom", [])
                if "configMapRef" in s
            ]
            refs += [
                e["valueFrom"]["configMapKeyRef"]["name"]
                for e in container.get("env", [])
                if "configMapKeyRef" in e.get("valueFrom", {})
            ]
            assert set(refs) <= config_maps, workload.name


def test_keda_component_hands_the_replica_count_to_keda() -> None:
    forwarder = k8s.find(k8s.bundle("base+keda-forwarder"), "Deployment", "tak-forwarder")
    assert "replicas" not in forwarder["spec"]
    scaled = k8s.find(k8s.bundle("base+keda-forwarder"), "ScaledObject", "tak-forwarder")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == "rq:queue:tak"
    # KEDA runs in its own namespace: the address must name this namespace's Redis Service.
    assert trigger["metadata"]["address"] == f"redis.{NAMESPACE}.svc.cluster.local:6379"
    assert scaled["spec"]["minReplicaCount"] >= 1  # the forwarder is never scaled to zero


def test_managed_redis_overlay_has_no_in_cluster_redis() -> None:
    objs = k8s.bundle("prod-managed-redis")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("StatefulSet", "redis") not in kinds
    assert ("Service", "redis") not in kinds
    assert not [o for o in objs if o["kind"] in {"StorageClass", "PersistentVolumeClaim"}]


# --- the checks themselves can fail ------------------------------------------------------------


def _function(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(k8s.function_service(objs))


def test_shapes_reject_fields_knative_does_not_allow() -> None:
    service = _function(k8s.bundle("prod"))
    service["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}  # feature-flagged
    service["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {}
    service["spec"]["traffic"][0]["weight"] = 100
    errors = shape_errors(service)
    assert any("nodeSelector" in e for e in errors)
    assert any("lifecycle" in e for e in errors)
    assert any("weight" in e for e in errors)


def test_shapes_reject_a_misspelt_trigger_field() -> None:
    trigger = copy.deepcopy(k8s.find(k8s.bundle("prod"), "Trigger", "detection-created"))
    trigger["spec"]["delivery"]["retries"] = 3
    trigger["spec"]["delivery"]["backoffDelay"] = "500ms"  # must be an ISO 8601 duration
    errors = shape_errors(trigger)
    assert any("retries" in e for e in errors)
    assert any("backoffDelay" in e for e in errors)


def test_strict_validation_rejects_a_misspelt_core_field() -> None:
    forwarder = copy.deepcopy(k8s.find(k8s.bundle("prod"), "Deployment", "tak-forwarder"))
    container = forwarder["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")
    assert core_errors(forwarder)


def test_knative_pods_are_checked_field_by_field() -> None:
    service = _function(k8s.bundle("prod"))
    service["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrm"] = {}
    assert core_errors(knative_pod(service))
