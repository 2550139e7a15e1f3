"""The environment a rendered container starts with, as the kubelet and Knative build it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from support import k8s_render as k8s

Obj = dict[str, Any]


def container_environment(
    objs: list[Obj], container: Obj, secrets: Mapping[tuple[str, str], str]
) -> dict[str, str]:
    """``envFrom`` ConfigMaps first, then ``env`` (later entries win, as in Kubernetes).

    Secret values come from ``secrets`` keyed by (Secret name, key): the repository holds none.
    A reference to a ConfigMap or Secret key that does not exist fails, as the pod would.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]
        env.update(k8s.find(objs, "ConfigMap", ref["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        value_from = entry["valueFrom"]
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            ref = value_from["configMapKeyRef"]
            env[entry["name"]] = k8s.find(objs, "ConfigMap", ref["name"])["data"][ref["key"]]
    return env


def knative_environment(service: Obj, revision: str) -> dict[str, str]:
    """What Knative Serving adds to the user container (runtime contract)."""
    name = service["metadata"]["name"]
    return {"PORT": "8080", "K_SERVICE": name, "K_CONFIGURATION": name, "K_REVISION": revision}
