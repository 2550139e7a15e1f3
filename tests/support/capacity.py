"""The most the namespace can run at once, computed from rendered manifests, for sizing quotas.

Every workload counts at its worst normal moment: a Knative Service runs two revisions at
max-scale each (a canary split, or the old revision draining after a promotion), every Knative
pod with its queue-proxy sidecar; a Deployment at its replica count (or KEDA's maximum) plus its
rolling-update surge; a StatefulSet at its replicas (it replaces pods one at a time); a CronJob
one Job (concurrencyPolicy Forbid). Extra pods that no rendered object declares (a restore Job
applied by hand, cert-manager's ACME solver) are added by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from support.k8s_render import KNATIVE_SERVICE, Obj, Workload, workloads

# Two revisions of a Knative Service can be scaled out at once (split, or promotion).
REVISIONS_AT_ONCE = 2
QUEUE_PROXY_PREFIX = "queue.sidecar.serving.knative.dev/"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def cpu_millis(quantity: str | int) -> int:
    """'250m' -> 250, '1' -> 1000, '0.5' -> 500."""
    text = str(quantity)
    if text.endswith("m"):
        return int(Decimal(text[:-1]))
    return int(Decimal(text) * 1000)


def memory_bytes(quantity: str | int) -> int:
    """'512Mi' -> 536870912, '1G' -> 10**9, '1024' -> 1024."""
    text = str(quantity)
    for suffixes in (_BINARY, _DECIMAL):
        for suffix, factor in suffixes.items():
            if text.endswith(suffix):
                return int(Decimal(text[: -len(suffix)]) * factor)
    return int(Decimal(text))


@dataclass(frozen=True)
class Resources:
    """CPU in millicores, memory in bytes."""

    requests_cpu: int = 0
    requests_memory: int = 0
    limits_cpu: int = 0
    limits_memory: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.requests_cpu + other.requests_cpu,
            self.requests_memory + other.requests_memory,
            self.limits_cpu + other.limits_cpu,
            self.limits_memory + other.limits_memory,
        )

    def __mul__(self, count: int) -> Resources:
        return Resources(
            self.requests_cpu * count,
            self.requests_memory * count,
            self.limits_cpu * count,
            self.limits_memory * count,
        )

    def max(self, other: Resources) -> Resources:
        return Resources(
            max(self.requests_cpu, other.requests_cpu),
            max(self.requests_memory, other.requests_memory),
            max(self.limits_cpu, other.limits_cpu),
            max(self.limits_memory, other.limits_memory),
        )


def container_resources(container: Obj) -> Resources:
    """A container's declared resources; a missing value is an error (the quota needs them)."""
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    try:
        return Resources(
            cpu_millis(requests["cpu"]),
            memory_bytes(requests["memory"]),
            cpu_millis(limits["cpu"]),
            memory_bytes(limits["memory"]),
        )
    except KeyError as missing:
        raise ValueError(f"container {container.get('name')} declares no {missing}") from None


def queue_proxy_resources(service: Obj) -> Resources:
    """Knative's sidecar, from the revision's queue.sidecar.serving.knative.dev annotations."""
    annotations = service["spec"]["template"].get("metadata", {}).get("annotations", {})
    try:
        return Resources(
            cpu_millis(annotations[QUEUE_PROXY_PREFIX + "cpu-resource-request"]),
            memory_bytes(annotations[QUEUE_PROXY_PREFIX + "memory-resource-request"]),
            cpu_millis(annotations[QUEUE_PROXY_PREFIX + "cpu-resource-limit"]),
            memory_bytes(annotations[QUEUE_PROXY_PREFIX + "memory-resource-limit"]),
        )
    except KeyError as missing:
        raise ValueError(
            f"Service/{service['metadata']['name']} leaves queue-proxy's {missing} to the cluster"
        ) from None


def pod_resources(pod_spec: Obj) -> Resources:
    """What the quota charges a pod: the larger of its containers' sum and any init container."""
    total = Resources()
    for container in pod_spec.get("containers", []):
        total = total + container_resources(container)
    for init in pod_spec.get("initContainers", []):
        total = total.max(container_resources(init))
    return total


def _surge(deployment: Obj, replicas: int) -> int:
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


@dataclass(frozen=True)
class Share:
    """One workload's part of the worst case."""

    workload: str
    pods: int
    per_pod: Resources

    @property
    def total(self) -> Resources:
        return self.per_pod * self.pods


def _scaled_maximum(objs: list[Obj], deployment: Obj) -> int | None:
    for obj in objs:
        if obj["kind"] == "ScaledObject":
            target = obj["spec"]["scaleTargetRef"]
            if target.get("kind", "Deployment") == "Deployment" and (
                target["name"] == deployment["metadata"]["name"]
            ):
                return int(obj["spec"]["maxReplicaCount"])
    return None


def workload_share(objs: list[Obj], workload: Workload) -> Share:
    obj = workload.obj
    key = (obj["apiVersion"], obj["kind"])
    if key == KNATIVE_SERVICE:
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
        max_scale = int(annotations["autoscaling.knative.dev/max-scale"])
        if max_scale == 0:
            raise ValueError(f"{workload.name} has no max-scale: its pods are unbounded")
        per_pod = pod_resources(workload.pod_spec) + queue_proxy_resources(obj)
        return Share(workload.name, REVISIONS_AT_ONCE * max_scale, per_pod)
    per_pod = pod_resources(workload.pod_spec)
    if obj["kind"] == "Deployment":
        replicas = _scaled_maximum(objs, obj) or int(obj["spec"].get("replicas", 1))
        return Share(workload.name, replicas + _surge(obj, replicas), per_pod)
    if obj["kind"] == "StatefulSet":
        return Share(workload.name, int(obj["spec"].get("replicas", 1)), per_pod)
    if obj["kind"] == "CronJob":
        if obj["spec"].get("concurrencyPolicy") != "Forbid":
            raise ValueError(f"{workload.name} may run several Jobs at once")
        parallelism = int(obj["spec"]["jobTemplate"]["spec"].get("parallelism", 1))
        return Share(workload.name, parallelism, per_pod)
    if obj["kind"] == "Job":
        return Share(workload.name, int(obj["spec"].get("parallelism", 1)), per_pod)
    raise ValueError(f"no worst case for {workload.name}")


def worst_case(objs: list[Obj], extra: Iterable[Share] = ()) -> list[Share]:
    return [workload_share(objs, w) for w in workloads(objs)] + list(extra)


def totals(shares: Iterable[Share]) -> tuple[int, Resources]:
    pods, resources = 0, Resources()
    for share in shares:
        pods += share.pods
        resources = resources + share.total
    return pods, resources


def as_quota(pods: int, resources: Resources) -> dict[str, Any]:
    """The worst case in a ResourceQuota's units, for comparison with its `hard` values."""
    return {
        "pods": pods,
        "requests.cpu": resources.requests_cpu,
        "requests.memory": resources.requests_memory,
        "limits.cpu": resources.limits_cpu,
        "limits.memory": resources.limits_memory,
    }
