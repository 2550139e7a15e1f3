"""Rules the rendered manifests must follow, as functions that list the problems they find.

Each check returns [] for a good bundle and readable problems otherwise; the tests run them on
the real bundles and on deliberately broken copies (so every check is shown to be able to fail).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from support.k8s_render import KNATIVE_SERVICE, Obj, Workload, containers, workloads

AUTOSCALING_PREFIX = "autoscaling.knative.dev/"
# Revision-level autoscaling annotations Knative Serving knows.
AUTOSCALING_KEYS = frozenset(
    AUTOSCALING_PREFIX + key
    for key in (
        "class",
        "metric",
        "target",
        "target-utilization-percentage",
        "target-burst-capacity",
        "min-scale",
        "max-scale",
        "initial-scale",
        "activation-scale",
        "scale-down-delay",
        "scale-to-zero-pod-retention-period",
        "window",
        "panic-window-percentage",
        "panic-threshold-percentage",
        "max-scale-up-rate",
        "max-scale-down-rate",
    )
)
KPA_CLASS = "kpa.autoscaling.knative.dev"
# Ports queue-proxy owns inside a Knative pod; the user container must not take them.
KNATIVE_RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091})
# Environment Knative sets itself in every revision's container.
KNATIVE_RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
REVISION_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# --- Knative Service ---------------------------------------------------------------------------


def traffic_problems(service: Obj) -> list[str]:
    if "traffic" not in service["spec"]:
        return []  # Knative's default: 100% to the latest ready revision
    traffic = service["spec"]["traffic"]
    problems = []
    total = sum(int(t.get("percent", 0)) for t in traffic)
    if total != 100:
        problems.append(f"traffic percentages sum to {total}, not 100")
    tags = [t["tag"] for t in traffic if t.get("tag")]
    for tag, count in Counter(tags).items():
        if count > 1:
            problems.append(f"traffic tag {tag!r} is used {count} times")
    for target in traffic:
        refs = [k for k in ("revisionName", "configurationName") if target.get(k)]
        if target.get("latestRevision"):
            refs.append("latestRevision")
        if len(refs) != 1:
            problems.append(
                f"traffic target {target} must name exactly one of "
                "revisionName, configurationName or latestRevision: true"
            )
    return problems


def revision_name_problems(service: Obj, released: bool = False) -> list[str]:
    """Knative's rules for names a template brings (a DNS-1035 label under `<service>-`). The
    kustomizations name none (Knative names each template); a release (`make render|deploy`)
    names it `<service>-<version>-<hash of the template>`."""
    service_name = service["metadata"]["name"]
    prefix = f"{service_name}-"
    problems = []
    template_name = service["spec"]["template"].get("metadata", {}).get("name")
    names = [template_name] if template_name or released else []
    names += [t["revisionName"] for t in service["spec"].get("traffic", []) if "revisionName" in t]
    for name in names:
        if name is None:
            problems.append("the revision template has no name (want <service>-<version>-<hash>)")
        elif not (name.startswith(prefix) and len(name) > len(prefix)):
            problems.append(f"revision name {name!r} is not {prefix}<version>")
        elif not REVISION_NAME.match(name) or len(name) > 63:
            problems.append(f"revision name {name!r} is not a DNS label")
    return problems


def _int_annotation(annotations: dict[str, str], key: str) -> int | None:
    value = annotations.get(AUTOSCALING_PREFIX + key)
    return None if value is None else int(value)


def autoscaling_problems(service: Obj) -> list[str]:
    problems = []
    own = service["metadata"].get("annotations", {})
    for key in own:
        if key.startswith(AUTOSCALING_PREFIX):
            problems.append(
                f"{key} on the Service's metadata (Knative rejects it there; "
                "it belongs on spec.template.metadata.annotations)"
            )
    template = service["spec"]["template"]
    annotations = template.get("metadata", {}).get("annotations", {})
    for key in annotations:
        if key.startswith(AUTOSCALING_PREFIX) and key not in AUTOSCALING_KEYS:
            problems.append(f"unknown autoscaling annotation {key}")
    metric = annotations.get(AUTOSCALING_PREFIX + "metric", "concurrency")
    klass = annotations.get(AUTOSCALING_PREFIX + "class", KPA_CLASS)
    if metric in {"concurrency", "rps"} and klass != KPA_CLASS:
        problems.append(f"metric {metric} needs the KPA class, not {klass}")
    min_scale = _int_annotation(annotations, "min-scale") or 0
    max_scale = _int_annotation(annotations, "max-scale")
    if max_scale is not None and max_scale != 0 and min_scale > max_scale:
        problems.append(f"min-scale {min_scale} > max-scale {max_scale}")
    utilization = _int_annotation(annotations, "target-utilization-percentage")
    if utilization is not None and not 1 <= utilization <= 100:
        problems.append(f"target-utilization-percentage {utilization} is not 1..100")
    concurrency = int(template["spec"].get("containerConcurrency", 0))
    target = _int_annotation(annotations, "target")
    if metric == "concurrency" and concurrency and target is not None and target > concurrency:
        problems.append(f"concurrency target {target} above containerConcurrency {concurrency}")
    return problems


def serving_container(service: Obj) -> Obj:
    with_ports = [c for c in service["spec"]["template"]["spec"]["containers"] if c.get("ports")]
    all_containers = service["spec"]["template"]["spec"]["containers"]
    return with_ports[0] if with_ports else all_containers[0]


def container_problems(service: Obj) -> list[str]:
    problems = []
    spec = service["spec"]["template"]["spec"]
    serving = [c for c in spec["containers"] if c.get("ports")]
    if len(spec["containers"]) > 1 and len(serving) != 1:
        problems.append("with several containers exactly one may declare a port")
    for container in spec["containers"]:
        ports = container.get("ports", [])
        if len(ports) > 1:
            problems.append(
                f"container {container['name']} declares {len(ports)} ports; Knative serves one"
            )
        for port in ports:
            if int(port["containerPort"]) in KNATIVE_RESERVED_PORTS:
                problems.append(f"port {port['containerPort']} is reserved by queue-proxy")
        for env in container.get("env", []):
            if env["name"] in KNATIVE_RESERVED_ENV:
                problems.append(f"env {env['name']} is set by Knative and must not be set")
    return problems


def probe_problems(service: Obj) -> list[str]:
    """Knative probes the serving container on its serving port: a probe there may omit the
    port or name that port, nothing else."""
    problems = []
    container = serving_container(service)
    ports = container.get("ports", [])
    serving_port = int(ports[0]["containerPort"]) if ports else 8080
    allowed = {None, serving_port, *(p.get("name") for p in ports)}
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if not probe:
            continue
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe and probe[handler].get("port") not in allowed:
                problems.append(
                    f"{probe_name}.{handler}.port {probe[handler]['port']} is not "
                    f"the serving port {serving_port}"
                )
    return problems


def knative_service_problems(service: Obj) -> list[str]:
    """Rules for any Knative Service."""
    return (
        traffic_problems(service)
        + autoscaling_problems(service)
        + container_problems(service)
        + probe_problems(service)
    )


# A Service whose traffic Flagger owns (components/flagger-canary) carries this label.
TRAFFIC_OWNER_LABEL = "detection-api.io/traffic"
FLAGGER = "flagger"


def flagger_owns_traffic(service: Obj) -> bool:
    return service["metadata"].get("labels", {}).get(TRAFFIC_OWNER_LABEL) == FLAGGER


def versioned_service_problems(service: Obj, released: bool = False) -> list[str]:
    """The function's extra rules: valid revision names (a release names its template), both
    probes, and an explicit traffic block with the `current` and `candidate` tags; or, when
    Flagger owns the traffic, no traffic block at all (an applied one would overwrite Flagger's
    split on every deploy)."""
    problems = revision_name_problems(service, released)
    if flagger_owns_traffic(service):
        if "traffic" in service["spec"]:
            problems.append("Flagger owns the traffic, yet the Service declares a traffic block")
    else:
        tags = {t.get("tag") for t in service["spec"].get("traffic", [])}
        if not {"current", "candidate"} <= tags:
            problems.append(f"traffic tags {sorted(t for t in tags if t)} lack current/candidate")
    container = serving_container(service)
    for probe in ("readinessProbe", "livenessProbe"):
        if not (container.get(probe) or {}).get("httpGet"):
            problems.append(f"the serving container has no HTTP {probe}")
    return problems


# --- Security ----------------------------------------------------------------------------------


def _effective(container: Obj, pod_spec: Obj, key: str) -> Any:
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = (pod_spec.get("securityContext") or {}).get(key)
    return value


def container_security_problems(workload: Workload, uid: int = 1000) -> list[str]:
    problems = []
    pod = workload.pod_spec
    for container in containers(pod):
        where = f"{workload.name} container {container['name']}"
        sc = container.get("securityContext") or {}
        if _effective(container, pod, "runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if _effective(container, pod, "runAsUser") != uid:
            problems.append(f"{where}: runAsUser is not {uid}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities are not all dropped")
        if capabilities.get("add"):
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        seccomp = _effective(container, pod, "seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def pod_problems(workload: Workload, service_accounts: dict[str, Obj]) -> list[str]:
    problems = []
    pod = workload.pod_spec
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{workload.name}: {flag}")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"{workload.name}: hostPath volume {volume['name']}")
    sa_name = pod.get("serviceAccountName", "default")
    if sa_name == "default":
        problems.append(f"{workload.name}: runs as the namespace's default service account")
    automount = pod.get("automountServiceAccountToken")
    if automount is None:
        automount = service_accounts.get(sa_name, {}).get("automountServiceAccountToken", True)
    if automount is not False:
        problems.append(f"{workload.name}: mounts a service account token")
    if sa_name != "default" and sa_name not in service_accounts:
        problems.append(f"{workload.name}: service account {sa_name} is not in the bundle")
    return problems


def service_account_problems(objs: list[Obj]) -> list[str]:
    return [
        f"ServiceAccount/{o['metadata']['name']} automounts its token"
        for o in objs
        if o["kind"] == "ServiceAccount" and o.get("automountServiceAccountToken") is not False
    ]


def rbac_problems(objs: list[Obj]) -> list[str]:
    """No wildcard rules, nothing bound to cluster-admin, no rights for our workloads: none of
    them talks to the Kubernetes API."""
    problems = []
    our_accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in {"Role", "ClusterRole"}:
            for rule in obj.get("rules", []):
                for field in ("verbs", "resources", "apiGroups"):
                    if "*" in rule.get(field, []):
                        problems.append(f"{name}: wildcard in {field}")
        if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            if obj.get("roleRef", {}).get("name") == "cluster-admin":
                problems.append(f"{name}: binds cluster-admin")
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount" and subject.get("name") in our_accounts:
                    problems.append(
                        f"{name}: grants API rights to {subject['name']}, which needs none"
                    )
    return problems


def default_deny_problems(objs: list[Obj]) -> list[str]:
    for obj in objs:
        if obj["kind"] != "NetworkPolicy":
            continue
        spec = obj["spec"]
        if (
            spec.get("podSelector") == {}
            and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            return []
    return ["no NetworkPolicy denies all ingress and egress by default"]


def volume_sharing_problems(objs: list[Obj]) -> list[str]:
    """A PersistentVolumeClaim is mounted by one single-replica workload at most (two "slots"
    sharing one ReadWriteOnce volume cannot both run)."""
    problems = []
    users: dict[str, list[str]] = {}
    for workload in workloads(objs):
        replicas = workload.obj.get("spec", {}).get("replicas", 1)
        for volume in workload.pod_spec.get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                users.setdefault(claim, []).append(workload.name)
                if replicas is None or replicas > 1:
                    problems.append(f"{workload.name}: {replicas} replicas share claim {claim}")
    for claim, names in users.items():
        if len(names) > 1:
            problems.append(f"claim {claim} is mounted by {', '.join(names)}")
    return problems


def security_problems(objs: list[Obj]) -> list[str]:
    accounts = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}
    problems = service_account_problems(objs) + rbac_problems(objs) + default_deny_problems(objs)
    problems += volume_sharing_problems(objs)
    for workload in workloads(objs):
        problems += container_security_problems(workload) + pod_problems(workload, accounts)
    return problems


def knative_services(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if (o["apiVersion"], o["kind"]) == KNATIVE_SERVICE]
