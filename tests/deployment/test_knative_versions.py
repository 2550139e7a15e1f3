"""The minimum Knative versions the README states cover every feature the manifests use.

Each feature is detected in what `make test` renders (every bundle, and the cluster-setup
patches), with the Serving or Eventing release that introduced it, as read in knative/serving and
knative/eventing: emptyDir volumes and container seccompProfile allowed by default in Serving 1.8
(#13405, #13401), per-Service queue-proxy resource annotations in 1.11 (#14038), `auto-tls`
renamed `external-domain-tls` in 1.12 (#14482); DomainMapping v1beta1, ClusterDomainClaim,
Broker/Trigger v1 with delivery and SinkBinding v1 in the 1.0 APIs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from support import k8s_render as k8s

Obj = dict[str, Any]
Version = tuple[int, int]
CLUSTER_SETUP = k8s.KNATIVE / "components" / "https" / "cluster-setup"
QUEUE_PROXY = re.compile(r"^queue\.sidecar\.serving\.knative\.dev/(cpu|memory)-resource-")


def knative_templates(objs: list[Obj]) -> list[Obj]:
    return [s["spec"]["template"] for s in k8s.of_kind(objs, *k8s.KNATIVE_SERVICE)]


def uses_empty_dir(objs: list[Obj], _: Obj) -> bool:
    return any(
        "emptyDir" in v for t in knative_templates(objs) for v in t["spec"].get("volumes", [])
    )


def uses_seccomp(objs: list[Obj], _: Obj) -> bool:
    return any(
        "seccompProfile" in c.get("securityContext", {})
        for t in knative_templates(objs)
        for c in t["spec"]["containers"]
    )


def uses_queue_proxy_resources(objs: list[Obj], _: Obj) -> bool:
    return any(
        QUEUE_PROXY.match(key)
        for t in knative_templates(objs)
        for key in t.get("metadata", {}).get("annotations", {})
    )


def uses_external_domain_tls(_: list[Obj], network: Obj) -> bool:
    return "external-domain-tls" in network.get("data", {})


def uses_kind(api_version: str, kind: str) -> Callable[[list[Obj], Obj], bool]:
    return lambda objs, _: any((o["apiVersion"], o["kind"]) == (api_version, kind) for o in objs)


# feature -> (component, minimum version, detector)
FEATURES: dict[str, tuple[str, Version, Callable[[list[Obj], Obj], bool]]] = {
    "emptyDir": ("Serving", (1, 8), uses_empty_dir),
    "seccompProfile": ("Serving", (1, 8), uses_seccomp),
    "queue.sidecar.serving.knative.dev": ("Serving", (1, 11), uses_queue_proxy_resources),
    "external-domain-tls": ("Serving", (1, 12), uses_external_domain_tls),
    "DomainMapping": ("Serving", (1, 0), uses_kind("serving.knative.dev/v1beta1", "DomainMapping")),
    "ClusterDomainClaim": (
        "Serving",
        (1, 0),
        uses_kind("networking.internal.knative.dev/v1alpha1", "ClusterDomainClaim"),
    ),
    "Trigger": ("Eventing", (1, 0), uses_kind("eventing.knative.dev/v1", "Trigger")),
    "SinkBinding": ("Eventing", (1, 0), uses_kind("sources.knative.dev/v1", "SinkBinding")),
}


def stated_minimum(text: str) -> dict[str, Version]:
    found = dict(re.findall(r"\*\*Knative (Serving|Eventing) (\d+\.\d+)\+\*\*", text))
    return {name: tuple(int(p) for p in v.split(".")) for name, v in found.items()}  # type: ignore[misc]


def network_patch() -> Obj:
    return yaml.safe_load((CLUSTER_SETUP / "config-network.patch.yaml").read_text())


def required(bundles: dict[str, list[Obj]], network: Obj) -> dict[str, list[tuple[Version, str]]]:
    needs: dict[str, list[tuple[Version, str]]] = {"Serving": [], "Eventing": []}
    for feature, (component, version, detect) in FEATURES.items():
        if any(detect(objs, network) for objs in bundles.values()):
            needs[component].append((version, feature))
    return needs


def version_problems(
    stated: dict[str, Version], needs: dict[str, list[tuple[Version, str]]]
) -> list[str]:
    problems = []
    for component, features in needs.items():
        if component not in stated:
            problems.append(f"the README states no minimum Knative {component}")
            continue
        for version, feature in features:
            if stated[component] < version:
                problems.append(
                    f"{feature} needs {component} {version}, README says {stated[component]}"
                )
    return problems


@pytest.fixture(scope="module")
def bundles() -> dict[str, list[Obj]]:
    return {name: k8s.bundle(name) for name in k8s.BUNDLE_NAMES}


def test_the_stated_versions_cover_every_feature_used(bundles: dict[str, list[Obj]]) -> None:
    text = k8s.readme_section("Deployment on Knative")
    stated = stated_minimum(text)
    needs = required(bundles, network_patch())
    assert version_problems(stated, needs) == []
    # Every feature in use is in the README's table, with the version it needs.
    for component, features in needs.items():
        for version, feature in features:
            rows = [
                line for line in text.splitlines() if re.search(r"\| (Serving|Eventing) \d", line)
            ]
            row = next((line for line in rows if feature in line), "")
            assert f"{component} {version[0]}.{version[1]}" in row, feature


def test_every_feature_detector_finds_its_feature(bundles: dict[str, list[Obj]]) -> None:
    """No dead rows: each listed feature is in use somewhere (else drop it from the table)."""
    needs = required(bundles, network_patch())
    used = {feature for features in needs.values() for _, feature in features}
    assert used == set(FEATURES)


def test_the_check_catches_an_understated_version(bundles: dict[str, list[Obj]]) -> None:
    needs = required(bundles, network_patch())
    assert version_problems({"Serving": (1, 7), "Eventing": (1, 0)}, needs)
    assert version_problems({"Serving": (1, 12)}, needs) == [
        "the README states no minimum Knative Eventing"
    ]
    network = copy.deepcopy(network_patch())
    network["data"].pop("external-domain-tls")
    older = required(bundles, network)
    assert version_problems({"Serving": (1, 11), "Eventing": (1, 0)}, older) == []
