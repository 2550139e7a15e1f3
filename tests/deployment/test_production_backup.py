"""The Redis backup CronJob, the restore Job applied by hand and the off-site component: what they
mount, run and may reach, with the same security posture as every other workload."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from support import k8s_render as k8s
from support.manifest_checks import security_problems

BACKUP = k8s.KNATIVE / "components" / "backup"
RESTORE_JOB = BACKUP / "restore" / "job.yaml"
RESTORE_PVC = BACKUP / "restore" / "data-pvc.yaml"
OFFSITE_TEMPLATE = BACKUP / "offsite" / "secret-template.yaml"
OFFSITE_SECRET = "redis-backup-credentials"
KUBERNETES_VERSION = "1.33.0"
WITH_BACKUP = ("prod", "prod-flagger", "base+backup")
SCRIPTS = ("redis-backup.sh", "redis-restore.sh")


def with_offsite() -> list[dict[str, Any]]:
    return k8s.render_stack(("overlays/prod",), ("components/backup/offsite",))


def cronjob(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return k8s.find(objs, "CronJob", "redis-backup")


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return cronjob(objs)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [c for c in k8s.containers(pod_spec(objs)) if c["name"] == name]
    return found


def redis_claim_name(objs: list[dict[str, Any]]) -> str:
    redis = k8s.find(objs, "StatefulSet", "redis")
    (template,) = redis["spec"]["volumeClaimTemplates"]
    return f"{template['metadata']['name']}-redis-0"


def backup_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    job = cronjob(objs)
    if job["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append("two backups could run at once")
    pod = pod_spec(objs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    redis_claim = claims.get(redis_claim_name(objs))
    if redis_claim is None or redis_claim.get("readOnly") is not True:
        problems.append("Redis's volume is not mounted read-only")
    affinity = pod.get("affinity", {}).get("podAffinity", {})
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if not any(
        term["labelSelector"].get("matchLabels") == {"app.kubernetes.io/name": "redis"}
        and term["topologyKey"] == "kubernetes.io/hostname"
        for term in required
    ):
        problems.append("the pod is not tied to Redis's node (its volume is ReadWriteOnce)")
    snapshot = container(objs, "snapshot")
    env = k8s.env_vars(snapshot)
    mounts = {m["mountPath"]: m for m in snapshot["volumeMounts"]}
    if mounts.get(env["REDIS_DATA_DIR"]["value"], {}).get("name") not in volumes:
        problems.append("REDIS_DATA_DIR is not a mounted volume")
    if "REDISCLI_AUTH" not in env or "valueFrom" not in env["REDISCLI_AUTH"]:
        problems.append("the Redis password does not come from a Secret")
    if snapshot["command"][:2] != ["/bin/sh", "/scripts/redis-backup.sh"]:
        problems.append(f"the snapshot runs {snapshot['command']}")
    return problems


@pytest.mark.parametrize("name", WITH_BACKUP)
def test_backup_cronjob_snapshots_redis_from_its_node(name: str) -> None:
    objs = k8s.bundle(name)
    assert backup_problems(objs) == []
    job = cronjob(objs)
    assert job["spec"]["schedule"] == "17 * * * *"
    backups = k8s.find(objs, "PersistentVolumeClaim", "redis-backups")
    assert backups["metadata"]["labels"]["detection-api.io/retain"] == "true"


@pytest.mark.parametrize("name", WITH_BACKUP)
def test_the_scripts_ship_as_they_are_in_the_repository(name: str) -> None:
    config_map = k8s.find(k8s.bundle(name), "ConfigMap", "redis-backup-scripts")
    for script in SCRIPTS:
        assert config_map["data"][script] == (BACKUP / script).read_text()
    volume = next(v for v in pod_spec(k8s.bundle(name))["volumes"] if v["name"] == "scripts")
    assert volume["configMap"]["name"] == "redis-backup-scripts"


def test_backup_and_restore_use_the_servers_redis_image() -> None:
    objs = k8s.bundle("prod")
    server_image = k8s.find(objs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][
        0
    ]["image"]
    assert container(objs, "snapshot")["image"] == server_image
    restore = yaml.safe_load(RESTORE_JOB.read_text())
    assert restore["spec"]["template"]["spec"]["containers"][0]["image"] == server_image


@pytest.mark.parametrize("name", WITH_BACKUP)
def test_network_policies_let_the_backup_reach_redis_and_nothing_else(name: str) -> None:
    objs = k8s.bundle(name)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]

    def allows(policy: dict[str, Any], direction: str, peer: dict[str, Any]) -> bool:
        return any(
            peer in rule.get("from" if direction == "ingress" else "to", [])
            and {"protocol": "TCP", "port": 6379} in rule.get("ports", [])
            for rule in policy["spec"].get(direction, [])
        )

    backup_pod = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis-backup"}}}
    redis_pod = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}
    assert any(
        p["spec"]["podSelector"] == redis_pod["podSelector"] and allows(p, "ingress", backup_pod)
        for p in policies
    )
    assert any(
        p["spec"]["podSelector"] == backup_pod["podSelector"] and allows(p, "egress", redis_pod)
        for p in policies
    )
    # No ingress rule names the backup pods: the default deny keeps them unreachable.
    assert not [
        p
        for p in policies
        if p["spec"]["podSelector"] == backup_pod["podSelector"] and p["spec"].get("ingress")
    ]


def test_managed_redis_has_no_backup_objects() -> None:
    objs = k8s.bundle("prod-managed-redis")
    assert not [o for o in objs if "backup" in o["metadata"]["name"]]


# --- the restore Job and claim, applied by hand -------------------------------------------------


def test_restore_job_is_valid_and_as_locked_down_as_the_bundle() -> None:
    job = yaml.safe_load(RESTORE_JOB.read_text())
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    objs = k8s.bundle("prod")
    accounts = [o for o in objs if o["kind"] == "ServiceAccount"]
    namespace = [o for o in objs if o["kind"] == "Namespace"]
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert security_problems([job, *accounts, *namespace, *policies]) == []
    spec = job["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims[redis_claim_name(objs)].get("readOnly") is not True  # it writes there
    assert claims["redis-backups"]["readOnly"] is True
    assert job["metadata"]["namespace"] == "detection-api"
    assert spec["serviceAccountName"] in {a["metadata"]["name"] for a in accounts}
    script = next(v for v in spec["volumes"] if v["name"] == "scripts")["configMap"]["name"]
    k8s.find(objs, "ConfigMap", script)


def test_restore_claim_matches_the_statefulsets_template() -> None:
    claim = yaml.safe_load(RESTORE_PVC.read_text())
    kubernetes_validate.validate(claim, KUBERNETES_VERSION, strict=True)
    redis = k8s.find(k8s.bundle("prod"), "StatefulSet", "redis")
    (template,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == redis_claim_name(k8s.bundle("prod"))
    assert claim["spec"] == template["spec"]
    assert claim["metadata"]["labels"]["app.kubernetes.io/name"] == "redis"


# --- off-site copies -----------------------------------------------------------------------------


def test_offsite_copy_runs_after_the_snapshot_with_its_own_secret() -> None:
    objs = with_offsite()
    pod = pod_spec(objs)
    assert [c["name"] for c in pod["initContainers"]] == ["snapshot"]
    assert [c["name"] for c in pod["containers"]] == ["offsite"]
    assert security_problems(objs) == []
    assert backup_problems(objs) == []
    for obj in objs:
        if obj["kind"] not in {"Namespace", "StorageClass"}:
            assert obj["metadata"]["namespace"] == "detection-api", obj["metadata"]["name"]
    offsite = container(objs, "offsite")
    assert offsite["command"] == ["/bin/sh", "/scripts/redis-backup.sh", "offsite"]
    assert {m["mountPath"]: m.get("readOnly") for m in offsite["volumeMounts"]}["/backups"]
    egress_ports = [
        port
        for p in objs
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "redis-backup"}}
        for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
    ]
    assert {"protocol": "TCP", "port": 443} in egress_ports


def test_offsite_secret_keys_are_in_its_template_without_values() -> None:
    (template,) = [d for d in yaml.safe_load_all(OFFSITE_TEMPLATE.read_text()) if d]
    assert template["kind"] == "Secret"
    assert set(template["stringData"].values()) == {""}
    pod = pod_spec(with_offsite())
    used = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for c in k8s.containers(pod)
        for env in c.get("env", [])
        if env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        == "redis-backup-credentials"
    }
    used |= {
        item["key"]
        for v in pod["volumes"]
        if v.get("secret", {}).get("secretName") == OFFSITE_SECRET
        for item in v["secret"]["items"]
    }
    assert used == set(template["stringData"])


@pytest.mark.parametrize("kind", ["CronJob", "NetworkPolicy", "ConfigMap", "PersistentVolumeClaim"])
def test_offsite_objects_validate_strictly(kind: str) -> None:
    objs = [o for o in with_offsite() if o["kind"] == kind]
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_wrappers_in_scripts_run_the_shipped_scripts() -> None:
    for script in SCRIPTS:
        wrapper = (k8s.REPO / "scripts" / script).read_text()
        assert f"knative/components/backup/{script}" in wrapper
        assert Path(k8s.REPO / "scripts" / script).stat().st_mode & 0o111


# --- the checks themselves can fail ------------------------------------------------------------


def test_backup_checks_catch_a_writable_mount_and_a_missing_affinity() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    pod = pod_spec(objs)
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            volume["persistentVolumeClaim"].pop("readOnly", None)
    pod.pop("affinity")
    cronjob(objs)["spec"]["concurrencyPolicy"] = "Allow"
    problems = backup_problems(objs)
    assert any("read-only" in p for p in problems)
    assert any("node" in p for p in problems)
    assert any("at once" in p for p in problems)
