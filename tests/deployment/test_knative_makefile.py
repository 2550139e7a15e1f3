"""deploy.mk / scripts/knative.sh: what each target prints (and with DRY_RUN=1 only prints), the
release it renders, and that what it prints is what it runs. No cluster, kn or pack needed."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import k8s_render as k8s
from support.manifest_checks import knative_service_problems, versioned_service_problems

DIGEST = "sha256:" + "ab" * 32
IMAGE_REF = f"ghcr.io/acme/detection-api@{DIGEST}"
NS = "-n detection-api"
TARGETS = ("build", "render", "deploy", "canary", "promote", "rollback", "status", "undeploy")


@pytest.fixture
def deploy_dir() -> Iterator[str]:
    """A release directory inside the repository (kustomize wants relative paths), removed after."""
    relative = f".deploy/pytest-{uuid.uuid4().hex[:8]}"
    yield relative
    shutil.rmtree(k8s.REPO / relative, ignore_errors=True)
    with contextlib.suppress(OSError):  # .deploy itself, unless a real release lives there
        (k8s.REPO / ".deploy").rmdir()


@functools.cache
def tool_dir() -> Path:
    """PATH with the usual tools but without kn and pack: CI has neither, nothing may need them."""
    bin_dir = Path(tempfile.mkdtemp(prefix="knative-tools-"))
    atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
    for entry in os.environ["PATH"].split(os.pathsep):
        directory = Path(entry)
        if not directory.is_dir():
            continue
        for tool in directory.iterdir():
            target = bin_dir / tool.name
            if tool.name not in {"kn", "pack"} and not target.exists() and os.access(tool, os.X_OK):
                target.symlink_to(tool)
    return bin_dir


def make(
    target: str,
    tmp_path: Path,
    *variables: str,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    run_env = {**os.environ, "PATH": str(tool_dir()), **(env or {})}
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", "deploy.mk", target, *variables],
        cwd=k8s.REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def commands(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = (result.stdout + result.stderr).splitlines()
    return [
        line.removeprefix("+ ")
        for line in lines
        if line.startswith("+ ") and "write" not in line[:8]
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_prints_its_commands_and_runs_nothing(
    target: str, tmp_path: Path, deploy_dir: str
) -> None:
    result = make(target, tmp_path, "DRY_RUN=1", "VERSION=v1.2.0", env={"DEPLOY_DIR": deploy_dir})
    printed = commands(result)
    assert printed
    assert all(c.split()[0] in {"pack", "kubectl", "kn"} for c in printed), printed


def test_deploy_dry_run_prints_the_exact_commands(tmp_path: Path, deploy_dir: str) -> None:
    result = make(
        "deploy",
        tmp_path,
        "DRY_RUN=1",
        "VERSION=v1.2.0",
        f"IMAGE_REF={IMAGE_REF}",
        env={"DEPLOY_DIR": deploy_dir},
    )
    release = f"{deploy_dir}/prod"
    assert commands(result) == [
        f"kubectl kustomize {release} -o {release}/bundle.yaml",
        f"kubectl apply -f {release}/bundle.yaml",
        f"kubectl wait --for=condition=Ready services.serving.knative.dev/detection-api {NS} "
        "--timeout=300s",
        f"kubectl rollout status deployment/tak-forwarder {NS} --timeout=300s",
        f"kubectl get services.serving.knative.dev/detection-api {NS}",
    ]
    assert f"+ write {release}/kustomization.yaml:" in result.stdout
    # DRY_RUN renders locally (the plan is exact) and changes nothing in a cluster.
    service = k8s.function_service(k8s.parse((k8s.REPO / release / "bundle.yaml").read_text()))
    assert re.fullmatch(r"detection-api-v1-2-0-[0-9a-f]{10}", revision_of(service))


def revision_of(service: dict[str, Any]) -> str:
    return str(service["spec"]["template"]["metadata"]["name"])


def test_deploy_builds_with_the_named_builder_and_publishes(
    tmp_path: Path, deploy_dir: str
) -> None:
    result = make(
        "deploy",
        tmp_path,
        "DRY_RUN=1",
        "VERSION=v1.2.0",
        "IMAGE=ghcr.io/acme/da",
        env={"DEPLOY_DIR": deploy_dir},
    )
    (build,) = [c for c in commands(result) if c.startswith("pack ")]
    assert build == (
        "pack build ghcr.io/acme/da:v1.2.0"
        " --builder docker.io/paketobuildpacks/builder-jammy-base:latest"
        " --run-image docker.io/paketobuildpacks/run-jammy-base:latest"
        " --env BP_CPYTHON_VERSION=3.11 --publish"
    )


def test_canary_tags_a_new_revision_and_splits_traffic(tmp_path: Path, deploy_dir: str) -> None:
    result = make(
        "canary",
        tmp_path,
        "DRY_RUN=1",
        "VERSION=v1.3.0",
        "PERCENT=25",
        f"IMAGE_REF={IMAGE_REF}",
        env={"DEPLOY_DIR": deploy_dir},
    )
    release = f"{deploy_dir}/prod-canary"
    assert commands(result) == [
        f"kubectl get services.serving.knative.dev/detection-api {NS} "
        """-o 'jsonpath={.status.traffic[?(@.tag=="current")].revisionName}'""",
        f"kubectl kustomize {release} -o {release}/bundle.yaml",
        f"kubectl apply -f {release}/service.yaml",
        f"kubectl wait --for=condition=Ready services.serving.knative.dev/detection-api {NS} "
        "--timeout=300s",
        f"kubectl get services.serving.knative.dev/detection-api {NS}",
    ]
    (service,) = k8s.parse((k8s.REPO / release / "service.yaml").read_text())
    revision = revision_of(service)
    assert re.fullmatch(r"detection-api-v1-3-0-[0-9a-f]{10}", revision)
    assert service["spec"]["traffic"] == [
        {"revisionName": "detection-api-tagged-current", "tag": "current", "percent": 75},
        {"revisionName": revision, "tag": "candidate", "percent": 25},
    ]


@pytest.mark.parametrize("percent", ["0", "100", "ten", "-5"])
def test_canary_refuses_a_meaningless_split(percent: str, tmp_path: Path) -> None:
    result = make(
        "canary", tmp_path, "DRY_RUN=1", f"PERCENT={percent}", f"IMAGE_REF={IMAGE_REF}", check=False
    )
    assert result.returncode != 0
    assert "PERCENT must be 1..99" in result.stderr


def patch_of(command: str) -> list[dict[str, Any]]:
    assert command.startswith(f"kubectl patch services.serving.knative.dev/detection-api {NS} ")
    words = shlex.split(command)
    return list(json.loads(words[words.index("-p") + 1])["spec"]["traffic"])


def test_promote_and_rollback_move_the_tags(tmp_path: Path) -> None:
    promote = commands(
        make("promote", tmp_path / "p", "DRY_RUN=1", "REVISION=detection-api-v1-3-0-abc")
    )
    assert patch_of(promote[0]) == [
        {"revisionName": "detection-api-v1-3-0-abc", "tag": "current", "percent": 100},
        {"latestRevision": True, "tag": "candidate", "percent": 0},
    ]
    rollback = commands(make("rollback", tmp_path / "r", "DRY_RUN=1"))
    assert patch_of(rollback[2]) == [
        {"revisionName": "detection-api-tagged-current", "tag": "current", "percent": 100},
        {"revisionName": "detection-api-tagged-candidate", "tag": "candidate", "percent": 0},
    ]
    back = commands(
        make("rollback", tmp_path / "b", "DRY_RUN=1", "REVISION=detection-api-v1-2-0-abc")
    )
    assert patch_of(back[0]) == [
        {"revisionName": "detection-api-v1-2-0-abc", "tag": "current", "percent": 100},
        {"latestRevision": True, "tag": "candidate", "percent": 0},
    ]


def test_promote_looks_up_the_candidate_when_not_given(tmp_path: Path) -> None:
    printed = commands(make("promote", tmp_path, "DRY_RUN=1"))
    assert printed[0].startswith("kubectl get services.serving.knative.dev/detection-api")
    assert 'tag=="candidate"' in printed[0]


def test_undeploy_keeps_the_namespace_unless_purged(tmp_path: Path) -> None:
    keep = commands(make("undeploy", tmp_path / "k", "DRY_RUN=1"))
    assert keep == [
        "kubectl delete -k knative/overlays/prod --ignore-not-found -l '!detection-api.io/retain'"
    ]
    purge = commands(make("undeploy", tmp_path / "p", "DRY_RUN=1", "PURGE=1"))
    assert purge == ["kubectl delete -k knative/overlays/prod --ignore-not-found"]
    retained = {
        (o["kind"], o["metadata"]["name"])
        for o in k8s.bundle("prod")
        if o["metadata"].get("labels", {}).get("detection-api.io/retain") == "true"
    }
    assert retained == {
        ("Namespace", "detection-api"),
        ("StorageClass", "fast-ssd"),
        ("PersistentVolumeClaim", "redis-backups"),
    }


def test_bad_image_ref_is_refused(tmp_path: Path) -> None:
    result = make(
        "deploy", tmp_path, "DRY_RUN=1", "IMAGE_REF=ghcr.io/acme/detection-api:latest", check=False
    )
    assert result.returncode != 0
    assert "IMAGE_REF must be" in result.stderr


def test_render_prints_the_overlay(tmp_path: Path) -> None:
    result = make("render", tmp_path)
    assert k8s.parse(result.stdout) == k8s.bundle("prod")


@pytest.mark.parametrize(
    ("version", "revision"),
    [
        ("v1.2.0", "detection-api-v1-2-0-"),
        ("V2.0.0+build/7_rc", "detection-api-v2-0-0-build-7-rc-"),
        ("1" * 80, "detection-api-" + "1" * 38 + "-"),
    ],
)
def test_render_of_a_release_pins_the_image_and_names_the_revision(
    version: str, revision: str, tmp_path: Path, deploy_dir: str
) -> None:
    result = make(
        "render",
        tmp_path,
        f"VERSION={version}",
        f"IMAGE_REF={IMAGE_REF}",
        env={"DEPLOY_DIR": deploy_dir},
    )
    objs = k8s.parse(result.stdout)
    service = k8s.function_service(objs)
    forwarder = k8s.find(objs, "Deployment", "tak-forwarder")
    assert service["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_REF
    assert forwarder["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_REF
    name = revision_of(service)
    assert re.fullmatch(re.escape(revision) + "[0-9a-f]{10}", name)
    assert len(name) <= 63
    assert service["spec"]["traffic"] == [
        {"revisionName": name, "tag": "current", "percent": 100},
        {"latestRevision": True, "tag": "candidate", "percent": 0},
    ]
    assert knative_service_problems(service) == []
    assert versioned_service_problems(service, released=True) == []
    # The version label goes on objects, not pod templates: a release must not restart Redis.
    redis = k8s.find(objs, "StatefulSet", "redis")
    assert "app.kubernetes.io/version" in redis["metadata"]["labels"]
    assert "app.kubernetes.io/version" not in redis["spec"]["template"]["metadata"]["labels"]


def write_stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.unlink(missing_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_what_is_printed_is_what_runs(tmp_path: Path, deploy_dir: str) -> None:
    """Stand-ins for pack, kn and kubectl record their arguments (kubectl kustomize is real)."""
    bin_dir = tmp_path / "bin"
    shutil.copytree(tool_dir(), bin_dir, symlinks=True)
    log = tmp_path / "calls.log"
    record = f'printf "%s\\n" "$(basename "$0") $*" >> {log}\n'
    write_stub(bin_dir, "pack", record + f'echo "*** Images ({DIGEST}):"\necho "      x"\n')
    write_stub(bin_dir, "kn", record)
    write_stub(
        bin_dir,
        "kubectl",
        f'if [ "$1" = kustomize ]; then exec {k8s.kubectl()} "$@"; fi\n'
        + record
        + 'if [ "$1" = get ]; then echo detection-api-v9-9-9-0123456789; fi\n',
    )
    env = {**os.environ, "PATH": str(bin_dir), "DEPLOY_DIR": deploy_dir}
    printed: list[str] = []
    for target, variables in (
        ("deploy", ["VERSION=v9.9.9", "IMAGE=ghcr.io/acme/detection-api"]),
        ("canary", ["VERSION=v9.9.10", "PERCENT=5", f"IMAGE_REF={IMAGE_REF}"]),
        ("promote", ["REVISION=detection-api-v9-9-10-0123456789"]),
    ):
        result = subprocess.run(
            ["make", "--no-print-directory", "-f", "deploy.mk", target, *variables],
            cwd=k8s.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        printed += commands(result)
    calls = log.read_text().splitlines()
    ran = [" ".join(shlex.split(c)) for c in printed if not c.startswith("kubectl kustomize")]
    assert ran == calls
    bundle = (k8s.REPO / deploy_dir / "prod" / "bundle.yaml").read_text()
    assert f"image: ghcr.io/acme/detection-api@{DIGEST}" in bundle  # the digest pack reported
    assert (k8s.REPO / deploy_dir / ".gitignore").read_text() == "*\n"


def test_makefile_includes_the_deploy_targets() -> None:
    makefile = (k8s.REPO / "Makefile").read_text().splitlines()
    assert "include deploy.mk" in makefile
