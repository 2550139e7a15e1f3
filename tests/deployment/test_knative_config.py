"""The manifests configure the app only through settings it reads, set the ones it needs, and
set them to values the app accepts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from detection_api.core import CoreConfig
from detection_api.settings import Settings, environment_names
from support import k8s_render as k8s

# Read by functions-framework/gunicorn (the server), not by Settings.
SERVER_ENV = frozenset({"WORKERS", "THREADS", "CLOUD_RUN_TIMEOUT_SECONDS", "PYTHONUNBUFFERED"})
REQUIRED = frozenset({"REDIS_URL", "TAK_URL"})
# Settings that carry credentials: from a Secret, never a literal or a ConfigMap.
SECRET_SETTINGS = frozenset(
    {"JWT_SECRET_KEY", "DISCORD_WEBHOOK_URL", "TAK_TLS_P12_PASSWORD", "REDIS_URL"}
)
APP_WORKLOADS = ("Service/detection-api", "Deployment/tak-forwarder")


def app_containers(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The function's and the forwarder's container (the two that run our image)."""
    found = {}
    for workload in k8s.workloads(objs):
        if workload.name in APP_WORKLOADS:
            (container,) = workload.pod_spec["containers"]
            found[workload.name] = container
    assert set(found) == set(APP_WORKLOADS)
    return found


def config_maps(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}


def env_sources(container: dict[str, Any], maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """Environment name -> where its value comes from: 'value', 'configmap' or 'secret'."""
    sources: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            prefix = source.get("prefix", "")
            sources.update(
                {prefix + key: "configmap" for key in maps[source["configMapRef"]["name"]]}
            )
        if "secretRef" in source:
            raise AssertionError(
                "envFrom a Secret hides which keys become settings: use secretKeyRef"
            )
    for env in container.get("env", []):
        value_from = env.get("valueFrom", {})
        sources[env["name"]] = (
            "secret" if "secretKeyRef" in value_from else "configmap" if value_from else "value"
        )
    return sources


def unknown_env_problems(objs: list[dict[str, Any]]) -> list[str]:
    allowed = environment_names() | SERVER_ENV
    maps = config_maps(objs)
    problems = []
    for name, container in app_containers(objs).items():
        for env in sorted(set(env_sources(container, maps)) - allowed):
            problems.append(f"{name} sets {env}, which the app does not read")
    return problems


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_every_env_var_is_a_setting_the_app_reads(name: str) -> None:
    assert unknown_env_problems(k8s.bundle(name)) == []


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_required_settings_are_set_and_credentials_come_from_secrets(name: str) -> None:
    objs = k8s.bundle(name)
    maps = config_maps(objs)
    for workload, container in app_containers(objs).items():
        sources = env_sources(container, maps)
        assert set(sources) >= REQUIRED, workload
        for setting in SECRET_SETTINGS & set(sources):
            assert sources[setting] == "secret", f"{workload}: {setting} from {sources[setting]}"
        assert "AUTH_DISABLED" not in sources, f"{workload} turns authentication off"


def test_the_function_reads_no_tak_credentials() -> None:
    function = app_containers(k8s.bundle("prod"))["Service/detection-api"]
    names = {e["name"] for e in function.get("env", [])}
    assert not names & {
        "TAK_TLS_CA",
        "TAK_TLS_CERT",
        "TAK_TLS_KEY",
        "TAK_TLS_P12",
        "DISCORD_WEBHOOK_URL",
    }


@pytest.mark.parametrize("name", ["base", "prod", "prod-managed-redis"])
def test_the_app_accepts_the_configured_values(name: str) -> None:
    """Build the app's Settings and core configuration from exactly what a pod would get."""
    objs = k8s.bundle(name)
    maps = config_maps(objs)
    for container in app_containers(objs).values():
        values: dict[str, str] = {}
        for source in container.get("envFrom", []):
            values.update(maps[source["configMapRef"]["name"]])
        values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        secrets = {e["name"] for e in container.get("env", []) if "valueFrom" in e}
        # Secrets are not in the repository: stand in syntactically valid values.
        stand_ins = {"REDIS_URL": "redis://:password@redis:6379/0", "JWT_SECRET_KEY": "x" * 32}
        values.update({k: v for k, v in stand_ins.items() if k in secrets})
        settings = Settings(**{k.lower(): v for k, v in values.items() if k in environment_names()})
        CoreConfig.from_settings(settings)
        assert settings.tak_url.startswith("tls://")  # production talks TLS to TAK


def test_overlay_values_reach_the_config_map() -> None:
    data = config_maps(k8s.bundle("prod"))["detection-api-config"]
    base = config_maps(k8s.bundle("base"))["detection-api-config"]
    assert data["TAK_URL"] != base["TAK_URL"]  # the overlay's site value wins
    assert data["COT_STALE_SECONDS"] == base["COT_STALE_SECONDS"]  # the rest is merged in


def test_unknown_env_check_can_fail() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    forwarder["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "TAK_HOST", "value": "x"}
    )
    k8s.find(objs, "ConfigMap", "detection-api-config")["data"]["STALE_TIME"] = "300"
    problems = unknown_env_problems(objs)
    assert any("TAK_HOST" in p for p in problems)
    assert any("STALE_TIME" in p for p in problems)
