"""The security posture of every bundle, including the production components (backups, HTTPS,
quotas, canary, off-site copies): non-root, read-only root filesystems, no capabilities, no
service account tokens, no API rights, default-deny network policies, no Secret objects."""

from __future__ import annotations

import copy

import pytest

from support import k8s_render as k8s
from support.manifest_checks import security_problems

STACKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prod+offsite": (("overlays/prod",), ("components/backup/offsite",)),
    "prod+keda": (("overlays/prod",), ("components/keda-forwarder",)),
}


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_every_bundle_keeps_the_security_posture(name: str) -> None:
    assert security_problems(k8s.bundle(name)) == []


@pytest.mark.parametrize("name", sorted(STACKS))
def test_optional_production_stacks_keep_the_security_posture(name: str) -> None:
    objs = k8s.render_stack(*STACKS[name])
    assert security_problems(objs) == []
    assert [o for o in objs if o["kind"] == "Secret"] == []


def test_the_posture_check_catches_a_root_backup_pod() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    backup = k8s.find(objs, "CronJob", "redis-backup")
    pod = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["runAsUser"] = 0
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["automountServiceAccountToken"] = True
    problems = security_problems(objs)
    assert any("runAsUser" in p for p in problems)
    assert any("writable" in p for p in problems)
    k8s.find(objs, "ServiceAccount", "redis-backup")["automountServiceAccountToken"] = True
    assert any("automounts" in p for p in security_problems(objs))
