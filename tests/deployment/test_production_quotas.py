"""The namespace's ResourceQuota covers the worst moment of a normal deployment, recomputed from
the rendered manifests (and not much more), and its LimitRange admits every container."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from support import capacity as cap
from support import k8s_render as k8s

DOC_TEXT = k8s.readme_section("Production readiness")
RESTORE_JOB = k8s.KNATIVE / "components" / "backup" / "restore" / "job.yaml"
# cert-manager's defaults for its ACME HTTP-01 solver pod (--acme-http01-solver-resource-*).
ACME_SOLVER = cap.Resources(10, 64 * 2**20, 100, 64 * 2**20)
# Rounding up to whole figures is fine; a quota far above the worst case guards nothing.
MAX_HEADROOM = 1.25
WITH_QUOTAS = ("prod", "prod-managed-redis", "prod-flagger", "base+quotas")


def quota(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == "ResourceQuota"]
    return found["spec"]["hard"]


def hard_in_units(hard: dict[str, Any]) -> dict[str, int]:
    return {
        "pods": int(hard["pods"]),
        "requests.cpu": cap.cpu_millis(hard["requests.cpu"]),
        "requests.memory": cap.memory_bytes(hard["requests.memory"]),
        "limits.cpu": cap.cpu_millis(hard["limits.cpu"]),
        "limits.memory": cap.memory_bytes(hard["limits.memory"]),
    }


def extras(objs: list[dict[str, Any]]) -> list[cap.Share]:
    """Pods no rendered object declares: the hand-applied restore Job, the ACME solver."""
    shares = []
    if any(o["kind"] == "CronJob" and o["metadata"]["name"] == "redis-backup" for o in objs):
        restore = yaml.safe_load(RESTORE_JOB.read_text())
        pod = cap.pod_resources(restore["spec"]["template"]["spec"])
        shares.append(cap.Share("Job/redis-restore", 1, pod))
    if any(o["kind"] == "DomainMapping" for o in objs):
        shares.append(cap.Share("acme-http01-solver", 1, ACME_SOLVER))
    return shares


def worst(objs: list[dict[str, Any]]) -> dict[str, int]:
    return cap.as_quota(*cap.totals(cap.worst_case(objs, extras(objs))))


def prod_with_keda() -> list[dict[str, Any]]:
    return k8s.render_stack(("overlays/prod",), ("components/keda-forwarder",))


def storage_requested(objs: list[dict[str, Any]]) -> int:
    total = 0
    for obj in objs:
        if obj["kind"] == "PersistentVolumeClaim":
            total += cap.memory_bytes(obj["spec"]["resources"]["requests"]["storage"])
        if obj["kind"] == "StatefulSet":
            for template in obj["spec"].get("volumeClaimTemplates", []):
                replicas = int(obj["spec"].get("replicas", 1))
                size = template["spec"]["resources"]["requests"]["storage"]
                total += replicas * cap.memory_bytes(size)
    return total


@pytest.mark.parametrize("name", WITH_QUOTAS)
def test_quota_covers_the_worst_case_of_the_bundle(name: str) -> None:
    objs = k8s.bundle(name)
    hard = hard_in_units(quota(objs))
    need = worst(objs)
    short = {k: (hard[k], v) for k, v in need.items() if hard[k] < v}
    assert short == {}


def test_quota_is_sized_for_keda_at_its_maximum_and_not_far_beyond() -> None:
    objs = prod_with_keda()
    hard = hard_in_units(quota(objs))
    need = worst(objs)
    for key, value in need.items():
        assert value <= hard[key] <= value * MAX_HEADROOM, (key, value, hard[key])


def test_the_worst_case_counts_two_revisions_at_max_scale_and_the_keda_maximum() -> None:
    shares = {s.workload: s for s in cap.worst_case(prod_with_keda())}
    function = k8s.function_service(prod_with_keda())
    max_scale = int(
        function["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"]
    )
    assert shares["Service/detection-api"].pods == 2 * max_scale == 20
    assert shares["Deployment/tak-forwarder"].pods == 6 + 1  # KEDA's maximum plus one surge
    assert shares["StatefulSet/redis"].pods == 1
    assert shares["CronJob/redis-backup"].pods == 1


@pytest.mark.parametrize("name", WITH_QUOTAS)
def test_storage_and_claims_fit(name: str) -> None:
    objs = k8s.bundle(name)
    hard = quota(objs)
    claims = sum(1 for o in objs if o["kind"] == "PersistentVolumeClaim") + sum(
        int(o["spec"].get("replicas", 1)) * len(o["spec"].get("volumeClaimTemplates", []))
        for o in objs
        if o["kind"] == "StatefulSet"
    )
    # One more claim than the bundle has: Redis's volume re-created by hand for a restore.
    assert claims + 1 <= int(hard["persistentvolumeclaims"])
    assert storage_requested(objs) <= cap.memory_bytes(hard["requests.storage"])


@pytest.mark.parametrize("name", WITH_QUOTAS)
def test_every_knative_service_sets_queue_proxy_resources(name: str) -> None:
    for service in k8s.of_kind(k8s.bundle(name), *k8s.KNATIVE_SERVICE):
        resources = cap.queue_proxy_resources(service)
        assert resources.requests_cpu <= resources.limits_cpu
        assert resources.requests_memory <= resources.limits_memory


@pytest.mark.parametrize("name", WITH_QUOTAS)
def test_limit_range_admits_every_container(name: str) -> None:
    objs = k8s.bundle(name)
    (limit_range,) = [o for o in objs if o["kind"] == "LimitRange"]
    (container_limits,) = [
        item for item in limit_range["spec"]["limits"] if item["type"] == "Container"
    ]
    ceiling = container_limits["max"]
    for workload in k8s.workloads(objs):
        for container in k8s.containers(workload.pod_spec):
            declared = cap.container_resources(container)
            assert declared.limits_cpu <= cap.cpu_millis(ceiling["cpu"]), workload.name
            assert declared.limits_memory <= cap.memory_bytes(ceiling["memory"]), workload.name
    defaults = cap.Resources(
        cap.cpu_millis(container_limits["defaultRequest"]["cpu"]),
        cap.memory_bytes(container_limits["defaultRequest"]["memory"]),
        cap.cpu_millis(container_limits["default"]["cpu"]),
        cap.memory_bytes(container_limits["default"]["memory"]),
    )
    assert defaults.requests_cpu <= defaults.limits_cpu <= cap.cpu_millis(ceiling["cpu"])
    (claim_limits,) = [
        item for item in limit_range["spec"]["limits"] if item["type"] == "PersistentVolumeClaim"
    ]
    for obj in objs:
        if obj["kind"] == "PersistentVolumeClaim":
            size = cap.memory_bytes(obj["spec"]["resources"]["requests"]["storage"])
            assert size <= cap.memory_bytes(claim_limits["max"]["storage"])


def test_quota_forbids_node_ports_so_the_acme_solver_must_use_cluster_ip() -> None:
    assert quota(k8s.bundle("prod"))["services.nodeports"] == "0"
    issuers = k8s.render_stack(("components/https/cluster-setup",))
    for issuer in issuers:
        (solver, *_) = issuer["spec"]["acme"]["solvers"]
        assert solver["http01"]["ingress"]["serviceType"] == "ClusterIP"


def test_the_doc_shows_the_arithmetic_and_the_quota() -> None:
    text = DOC_TEXT
    section = text[text.index("### Quotas") :]
    section = section[: section.index("\n### ", 4)]
    need = worst(prod_with_keda())
    # The totals of the worst case, as the doc writes them (millicores, MiB).
    assert f"{need['requests.cpu']}m" in section
    assert f"{need['requests.memory'] // 2**20}Mi" in section
    assert f"{need['limits.cpu']}m" in section
    assert f"{need['limits.memory'] // 2**20}Mi" in section
    assert re.search(rf"\b{need['pods']} pods\b", section)
    for key, value in quota(k8s.bundle("prod")).items():
        assert f"`{key}: {value}`" in section, key


# --- the checks themselves can fail ------------------------------------------------------------


def test_a_bigger_max_scale_breaks_the_quota() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    function = k8s.function_service(objs)
    function["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] = (
        "20"
    )
    hard = hard_in_units(quota(objs))
    need = worst(objs)
    assert need["pods"] > hard["pods"]
    assert need["limits.cpu"] > hard["limits.cpu"]


def test_a_container_without_limits_or_queue_proxy_resources_is_refused() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    del forwarder["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    with pytest.raises(ValueError, match="declares no"):
        worst(objs)
    function = k8s.function_service(copy.deepcopy(k8s.bundle("prod")))
    function["spec"]["template"]["metadata"]["annotations"].pop(
        cap.QUEUE_PROXY_PREFIX + "memory-resource-limit"
    )
    with pytest.raises(ValueError, match="queue-proxy"):
        cap.queue_proxy_resources(function)


def test_quantities_parse() -> None:
    assert cap.cpu_millis("250m") == 250
    assert cap.cpu_millis("1") == 1000
    assert cap.cpu_millis("0.5") == 500
    assert cap.memory_bytes("512Mi") == 512 * 2**20
    assert cap.memory_bytes("1G") == 10**9
    assert cap.memory_bytes("10Gi") == 10 * 2**30
