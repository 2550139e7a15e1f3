"""Secrets: every key the manifests read exists in the templates, the docs create exactly those,
and no secret value is in the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import k8s_render as k8s

TEMPLATES = k8s.KNATIVE / "secret-templates"
README = k8s.REPO / "README.md"
# The names of the original deployment guide, plus Redis's.
GUIDE_SECRETS = {"tak-server-credentials", "jwt-keys", "discord-webhook", "redis-credentials"}
PRIVATE_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----")


def templates() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(TEMPLATES.glob("*.yaml")):
        (secret,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert secret["kind"] == "Secret", path
        found[secret["metadata"]["name"]] = secret
    return found


def template_keys() -> dict[str, set[str]]:
    return {name: set(s.get("stringData", {})) for name, s in templates().items()}


def secret_references(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(secret, key) pairs the bundle reads: env, volumes, KEDA authentication."""
    refs: set[tuple[str, str]] = set()
    for workload in k8s.workloads(objs):
        for container in k8s.containers(workload.pod_spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for volume in workload.pod_spec.get("volumes", []):
            secret = volume.get("secret")
            if secret:
                items = secret.get("items")
                assert items, f"{workload.name} mounts all of {secret['secretName']}: list the keys"
                refs.update((secret["secretName"], item["key"]) for item in items)
    for obj in objs:
        if obj["kind"] == "TriggerAuthentication":
            refs.update((r["name"], r["key"]) for r in obj["spec"].get("secretTargetRef", []))
    return refs


def test_templates_are_the_guides_secrets_without_values() -> None:
    found = templates()
    assert set(found) == GUIDE_SECRETS
    for name, secret in found.items():
        assert "data" not in secret, name
        assert secret["stringData"], name
        assert set(secret["stringData"].values()) == {""}, f"{name} carries a value"


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_every_referenced_secret_key_is_in_the_templates(name: str) -> None:
    keys = template_keys()
    missing = {(s, k) for s, k in secret_references(k8s.bundle(name)) if k not in keys.get(s, ())}
    assert missing == set()


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_bundles_contain_no_secrets(name: str) -> None:
    assert [o["metadata"]["name"] for o in k8s.bundle(name) if o["kind"] == "Secret"] == []


def test_every_template_key_is_used_somewhere() -> None:
    used: set[tuple[str, str]] = set()
    for name in k8s.BUNDLE_NAMES:
        used |= secret_references(k8s.bundle(name))
    unused = {(s, k) for s, keys in template_keys().items() for k in keys} - used
    assert unused == set()


def documented_create_commands() -> dict[str, set[str]]:
    """`kubectl create secret generic NAME --from-literal=K=.. --from-file=K=..` in the docs."""
    text = k8s.readme_section("Deployment on Knative").replace("\\\n", " ")
    commands: dict[str, set[str]] = {}
    for line in text.splitlines():
        if "kubectl create secret generic" not in line:
            continue
        words = shlex.split(line.strip().lstrip("$ "))
        name = words[words.index("generic") + 1]
        keys = set()
        for word in words:
            for flag in ("--from-literal=", "--from-file="):
                if word.startswith(flag):
                    keys.add(word.removeprefix(flag).split("=", 1)[0])
        commands[name] = keys
    return commands


def test_docs_create_exactly_the_template_keys() -> None:
    assert documented_create_commands() == template_keys()


def committed_files() -> list[Path]:
    files = [p for p in k8s.KNATIVE.rglob("*") if p.is_file()]
    return [
        *files,
        k8s.REPO / "func.yaml",
        k8s.REPO / "Procfile",
        README,
        k8s.REPO / "deploy.mk",
    ]


def test_no_key_or_certificate_is_committed() -> None:
    offenders = [str(p) for p in committed_files() if PRIVATE_MATERIAL.search(p.read_text())]
    assert offenders == []


def test_secret_checks_can_fail() -> None:
    objs = k8s.bundle("prod")
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    forwarder["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"].append(
        {"key": "client.p12", "path": "client.p12"}
    )
    keys = template_keys()
    refs = secret_references(objs)
    assert ("tak-server-credentials", "client.p12") in refs
    assert "client.p12" not in keys["tak-server-credentials"]
    assert PRIVATE_MATERIAL.search("-----BEGIN RSA PRIVATE KEY-----\nMIIB...")
