"""What the issue asks of each workload: the Knative Service's scaling, revisions and traffic,
the eventing wiring, the forwarder's lifecycle and Redis's durability settings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from detection_api.settings import DETECTION_CREATED_TYPE, DETECTION_GEOLOCATED_TYPE
from support import k8s_render as k8s
from support.manifest_checks import (
    knative_service_problems,
    knative_services,
    probe_problems,
    revision_name_problems,
    traffic_problems,
    versioned_service_problems,
)

GUIDE_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}
FORWARDER_DRAIN_SECONDS = 20  # SIGTERM: the forwarder confirms in-flight work within ~20 s
AUTOSCALING = "autoscaling.knative.dev/"


def prod() -> list[dict[str, Any]]:
    return k8s.bundle("prod")


def template_annotations(service: dict[str, Any]) -> dict[str, str]:
    return service["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_every_knative_service_follows_knative_rules(name: str) -> None:
    problems = []
    for service in knative_services(k8s.bundle(name)):
        problems += knative_service_problems(service)
    assert problems == []


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_function_has_named_revisions_tags_and_probes(name: str) -> None:
    assert versioned_service_problems(k8s.function_service(k8s.bundle(name))) == []


def test_base_names_no_revision() -> None:
    """`kubectl apply -k knative/` can be repeated with a changed template: Knative names each
    revision itself (only `make deploy|canary` name them, after the template's hash)."""
    service = k8s.function_service(k8s.bundle("base"))
    assert "name" not in service["spec"]["template"]["metadata"]
    assert service["spec"]["traffic"] == [
        {"latestRevision": True, "tag": "current", "percent": 100},
        {"latestRevision": True, "tag": "candidate", "percent": 0},
    ]


def test_function_scales_to_zero_on_concurrency() -> None:
    service = k8s.function_service(prod())
    annotations = template_annotations(service)
    spec = service["spec"]["template"]["spec"]
    assert annotations[AUTOSCALING + "min-scale"] == "0"
    assert annotations[AUTOSCALING + "max-scale"] == "10"
    assert annotations[AUTOSCALING + "metric"] == "concurrency"
    assert annotations[AUTOSCALING + "class"] == "kpa.autoscaling.knative.dev"
    concurrency = spec["containerConcurrency"]
    assert concurrency > 0
    # The soft target sits below the hard limit: the autoscaler adds pods before requests queue.
    effective_target = (
        int(annotations[AUTOSCALING + "target"])
        * int(annotations[AUTOSCALING + "target-utilization-percentage"])
        / 100
    )
    assert 0.5 * concurrency <= effective_target < concurrency
    assert 0 < spec["timeoutSeconds"] <= 600
    # gunicorn's own timeout must not cut requests Knative still allows.
    env = k8s.env_vars(spec["containers"][0])
    assert int(env["CLOUD_RUN_TIMEOUT_SECONDS"]["value"]) > spec["timeoutSeconds"]
    assert env["WORKERS"]["value"] == "1"  # one process per pod; Knative scales pods
    # One gunicorn thread per request queue-proxy admits: none waits unseen inside gunicorn.
    assert int(env["THREADS"]["value"]) == concurrency


@pytest.mark.parametrize(
    ("kind", "name"), [("Service", "detection-api"), ("Deployment", "tak-forwarder")]
)
def test_requests_and_limits_follow_the_guide(kind: str, name: str) -> None:
    obj = k8s.find(prod(), kind, name)
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == GUIDE_RESOURCES


def test_function_reads_config_map_and_secrets() -> None:
    container = k8s.function_service(prod())["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "detection-api-config"}} in container["envFrom"]
    secrets = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets == {
        "REDIS_URL": ("redis-credentials", "redis-url"),
        "JWT_SECRET_KEY": ("jwt-keys", "secret-key"),
    }


# --- eventing ----------------------------------------------------------------------------------


def test_trigger_sends_detections_to_the_function_with_retries_and_dead_letters() -> None:
    objs = prod()
    trigger = k8s.find(objs, "Trigger", "detection-created")
    spec = trigger["spec"]
    assert spec["filter"]["attributes"] == {"type": DETECTION_CREATED_TYPE}
    # Replies carry another type, so the Broker cannot hand them back to the function.
    assert DETECTION_GEOLOCATED_TYPE != DETECTION_CREATED_TYPE
    k8s.find(objs, "Broker", spec["broker"])
    subscriber = spec["subscriber"]["ref"]
    assert (subscriber["apiVersion"], subscriber["kind"], subscriber["name"]) == (
        "serving.knative.dev/v1",
        "Service",
        "detection-api",
    )
    delivery = spec["delivery"]
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["retry"] >= 3
    sink = delivery["deadLetterSink"]["ref"]
    k8s.find(objs, sink["kind"], sink["name"], sink["apiVersion"])


def test_sink_binding_points_producers_at_the_broker() -> None:
    objs = prod()
    binding = k8s.find(objs, "SinkBinding", "detection-producers")
    sink = binding["spec"]["sink"]["ref"]
    k8s.find(objs, sink["kind"], sink["name"], sink["apiVersion"])
    namespace = k8s.find(objs, "Namespace", "detection-api")
    # The SinkBinding webhook only acts in namespaces that opt in.
    assert namespace["metadata"]["labels"]["bindings.knative.dev/include"] == "true"


# --- forwarder ---------------------------------------------------------------------------------


def test_forwarder_runs_the_worker_process_and_never_scales_to_zero() -> None:
    objs = prod()
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    function = k8s.function_service(objs)
    pod = forwarder["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["/cnb/process/worker"]
    assert container["image"] == function["spec"]["template"]["spec"]["containers"][0]["image"]
    assert forwarder["spec"]["replicas"] >= 1
    assert pod["terminationGracePeriodSeconds"] > FORWARDER_DRAIN_SECONDS


def test_forwarder_liveness_fails_when_the_worker_is_stuck() -> None:
    (container,) = k8s.find(prod(), "Deployment", "tak-forwarder")["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = k8s.env_vars(container)
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert str(ports["metrics"]) == env["FORWARDER_METRICS_PORT"]["value"]


def test_forwarder_mounts_the_tak_certificate_read_only() -> None:
    pod = k8s.find(prod(), "Deployment", "tak-forwarder")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/tak"]
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "tak-server-credentials"
    assert secret["defaultMode"] & 0o007 == 0  # not world-readable
    env = k8s.env_vars(container)
    files = {item["path"] for item in secret["items"]}
    for name in ("TAK_TLS_CA", "TAK_TLS_CERT", "TAK_TLS_KEY"):
        directory, _, file = env[name]["value"].rpartition("/")
        assert directory == "/etc/tak" and file in files


def test_disruption_budget_keeps_a_forwarder_running() -> None:
    objs = prod()
    pdb = k8s.find(objs, "PodDisruptionBudget", "tak-forwarder")
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    labels = forwarder["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # minAvailable below the replica count: drains can proceed, one worker at a time.
    assert 1 <= pdb["spec"]["minAvailable"] < forwarder["spec"]["replicas"]


# --- Redis -------------------------------------------------------------------------------------


def redis_flags(container: dict[str, Any]) -> dict[str, str]:
    args = container["args"]
    return {args[i].removeprefix("--"): args[i + 1] for i in range(0, len(args), 2)}


def test_redis_is_durable_and_never_evicts() -> None:
    redis = k8s.find(prod(), "StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    flags = redis_flags(container)
    assert flags["appendonly"] == "yes"
    assert flags["appendfsync"] == "always"
    assert flags["maxmemory-policy"] == "noeviction"
    assert flags["requirepass"] == "$(REDIS_PASSWORD)"
    password = k8s.env_vars(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "redis-credentials", "key": "password"}
    # Redis refuses writes before the kernel kills it: maxmemory well under the memory limit.
    assert int(flags["maxmemory"].removesuffix("mb")) * 2**20 < 0.75 * 2**30
    assert container["resources"]["limits"]["memory"] == "1Gi"
    # A job of one delivery (uncompressed, store/tak_jobs.py) stays a listpack, as locally.
    assert flags["hash-max-listpack-value"] == "2048"


def test_redis_data_is_on_its_own_encrypted_ssd_volume() -> None:
    objs = prod()
    redis = k8s.find(objs, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 1
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    storage_class = k8s.find(objs, "StorageClass", "fast-ssd")
    assert storage_class["parameters"]["encrypted"] == "true"
    assert storage_class["reclaimPolicy"] == "Retain"


def test_gke_storage_class_is_an_ssd_class_of_the_same_name() -> None:
    storage_class = k8s.find(k8s.bundle("base+storage-fast-ssd-gke"), "StorageClass", "fast-ssd")
    assert storage_class["parameters"]["type"] == "pd-ssd"  # GKE disks are always encrypted at rest


# --- the checks themselves can fail ------------------------------------------------------------


def broken_function() -> dict[str, Any]:
    return copy.deepcopy(k8s.function_service(prod()))


def test_traffic_check_catches_bad_splits() -> None:
    service = broken_function()
    service["spec"]["traffic"][0]["percent"] = 90
    service["spec"]["traffic"][1]["tag"] = "current"
    problems = traffic_problems(service)
    assert any("sum to 90" in p for p in problems)
    assert any("'current' is used 2 times" in p for p in problems)


def test_revision_name_check_catches_unversioned_names() -> None:
    service = broken_function()
    service["spec"]["template"]["metadata"]["name"] = "detection-api"
    service["spec"]["traffic"][0]["revisionName"] = "other-0-1-0"
    assert len(revision_name_problems(service)) == 2


def test_autoscaling_check_catches_annotations_on_the_service() -> None:
    service = broken_function()
    service["metadata"]["annotations"] = {AUTOSCALING + "min-scale": "0"}
    template_annotations(service)[AUTOSCALING + "max-scael"] = "3"
    template_annotations(service)[AUTOSCALING + "target"] = "999"
    problems = knative_service_problems(service)
    assert any("on the Service's metadata" in p for p in problems)
    assert any("max-scael" in p for p in problems)
    assert any("above containerConcurrency" in p for p in problems)


def test_probe_check_catches_a_foreign_port_and_reserved_env() -> None:
    service = broken_function()
    container = service["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["port"] = 9999
    container["env"].append({"name": "PORT", "value": "8080"})
    assert probe_problems(service)
    assert any("PORT" in p for p in knative_service_problems(service))
