"""Release sequences of `make deploy|canary|promote|rollback` (DRY_RUN=1), replayed against
Knative Serving's rules for one Service (support/knative_api.py): every step must be accepted by
the webhook and leave a Service that can become Ready, with the traffic split the step promises.

Each target runs for real with DRY_RUN=1: it renders the release locally and prints the commands
it would run; its reads of the Service's status are answered by a kubectl stand-in from the
replayed state, and the printed `kubectl apply` / `kubectl patch` are applied to that state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support import k8s_render as k8s
from support.knative_api import KnativeService, NotReady, Rejected

SERVICE = "detection-api"


def image(n: int) -> str:
    return f"ghcr.io/acme/detection-api@sha256:{n:064x}"


class Cluster:
    """Runs make targets with DRY_RUN=1 and replays what they print on a KnativeService."""

    def __init__(self, tmp_path: Path, deploy_dir: str) -> None:
        self.service = KnativeService(SERVICE)
        self.state = tmp_path / "ksvc.json"
        self.service.save(self.state)
        self.deploy_dir = deploy_dir
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        stand_in = bin_dir / "kubectl"
        reads = k8s.REPO / "tests" / "support" / "kubectl_reads.py"
        stand_in.write_text(
            "#!/usr/bin/env bash\n"
            f'if [ "$1" = kustomize ]; then exec {shlex.quote(k8s.kubectl())} "$@"; fi\n'
            f'exec {shlex.quote(sys.executable)} {shlex.quote(str(reads))} {self.state} "$@"\n'
        )
        stand_in.chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    def make(self, target: str, **variables: str) -> list[str]:
        args = [f"{k}={v}" for k, v in variables.items()]
        result = subprocess.run(
            ["make", "--no-print-directory", "-f", "deploy.mk", target, "DRY_RUN=1", *args],
            cwd=k8s.REPO,
            env={**os.environ, "PATH": self.path, "DEPLOY_DIR": self.deploy_dir},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        printed = [
            shlex.split(line.removeprefix("+ "))
            for line in result.stdout.splitlines()
            if line.startswith("+ kubectl ")
        ]
        for command in printed:
            self.replay(command)
        self.service.save(self.state)
        return [shlex.join(c) for c in printed]

    def replay(self, command: list[str]) -> None:
        verb = command[1]
        if verb == "apply":
            path = k8s.REPO / command[command.index("-f") + 1]
            objs = k8s.parse(path.read_text())
            self.service.apply(k8s.function_service(objs))
        elif verb == "patch":
            patch = json.loads(command[command.index("-p") + 1])
            self.service.patch_traffic(patch["spec"]["traffic"])

    def deploy(self, n: int, version: str = "v1.0.0", **extra: str) -> str:
        self.make("deploy", IMAGE_REF=image(n), VERSION=version, **extra)
        return self.current

    def canary(self, n: int, version: str, percent: int = 10) -> str:
        self.make("canary", IMAGE_REF=image(n), VERSION=version, PERCENT=str(percent))
        return self.candidate

    @property
    def current(self) -> str:
        name = self.service.tagged("current")
        assert name is not None
        return name

    @property
    def candidate(self) -> str:
        name = self.service.tagged("candidate")
        assert name is not None
        return name


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    relative = f".deploy/pytest-{uuid.uuid4().hex[:8]}"
    yield Cluster(tmp_path, relative)
    shutil.rmtree(k8s.REPO / relative, ignore_errors=True)
    with contextlib.suppress(OSError):
        (k8s.REPO / ".deploy").rmdir()


def test_a_full_release_cycle_passes_the_webhook(cluster: Cluster) -> None:
    v1 = cluster.deploy(1, "v1.0.0")
    assert cluster.service.split() == {v1: 100}
    assert v1.startswith("detection-api-v1-0-0-")

    # Redeploy of the same image: same template, same name, no new revision.
    assert cluster.deploy(1, "v1.0.0") == v1
    assert len(cluster.service.revisions) == 1

    # Canary, and a retry of the same canary (e.g. after a timeout): one new revision.
    v2 = cluster.canary(2, "v1.1.0", percent=10)
    assert v2 != v1
    assert cluster.service.split() == {v1: 90, v2: 10}
    assert cluster.canary(2, "v1.1.0", percent=10) == v2
    assert len(cluster.service.revisions) == 2

    # Rollback during the canary: all back to v1, the candidate keeps its tag at 0%.
    cluster.make("rollback")
    assert cluster.service.split() == {v1: 100}
    assert cluster.candidate == v2

    # Canary again after the rollback: the fixed image, then the same image once more.
    v3 = cluster.canary(3, "v1.1.0", percent=20)
    assert v3 not in (v1, v2)  # same VERSION, another image: another revision
    assert cluster.service.split() == {v1: 80, v3: 20}
    assert cluster.canary(2, "v1.1.0", percent=5) == v2  # the old candidate comes back as is
    assert cluster.canary(3, "v1.1.0", percent=20) == v3

    cluster.make("promote")
    assert cluster.service.split() == {v3: 100}
    assert cluster.current == v3

    # Rollback after the promote, then the declarative rollback: deploy the old release again.
    cluster.make("rollback", REVISION=v1)
    assert cluster.service.split() == {v1: 100}
    assert cluster.deploy(1, "v1.0.0") == v1
    assert cluster.service.split() == {v1: 100}

    # A rebuild under the same VERSION (a -dirty tree): another digest, another revision.
    v1b = cluster.deploy(4, "v1.0.0")
    assert v1b != v1
    assert cluster.service.split() == {v1b: 100}
    assert len(cluster.service.revisions) == 4


def test_promote_of_a_canary_then_a_new_canary(cluster: Cluster) -> None:
    v1 = cluster.deploy(1, "v1")
    v2 = cluster.canary(2, "v2", percent=50)
    cluster.make("promote")
    v3 = cluster.canary(3, "v3", percent=1)
    assert cluster.service.split() == {v2: 99, v3: 1}
    cluster.make("promote", REVISION=v3)
    assert cluster.service.split() == {v3: 100}
    assert v1 in cluster.service.revisions


def test_a_config_change_is_a_new_revision(cluster: Cluster) -> None:
    """The ConfigMap is read at pod start: a changed one must roll out as a new revision."""
    v1 = cluster.deploy(1, "v1")
    site = k8s.REPO / cluster.deploy_dir / "overlays" / "site"
    site.mkdir(parents=True)
    (site / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(k8s.KNATIVE / "overlays" / "prod", site)],
                "configMapGenerator": [
                    {
                        "name": "detection-api-config",
                        "behavior": "merge",
                        "literals": ["LOG_LEVEL=DEBUG"],
                        "options": {"disableNameSuffixHash": True},
                    }
                ],
            }
        )
    )
    v1_debug = cluster.deploy(1, "v1", OVERLAY=f"{cluster.deploy_dir}/overlays/site")
    assert v1_debug != v1
    assert cluster.service.split() == {v1_debug: 100}


def test_plain_kubectl_apply_k_can_be_repeated_with_changes(cluster: Cluster) -> None:
    """`kubectl apply -k knative/` names no revision: Knative names each new template."""
    base = k8s.function_service(k8s.bundle("knative"))
    assert "name" not in base["spec"]["template"]["metadata"]
    cluster.service.apply(base)
    changed = json.loads(json.dumps(base))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = image(9)
    cluster.service.apply(changed)
    cluster.service.apply(changed)
    assert cluster.service.split() == {"detection-api-00002": 100}
    # ...and `make deploy` takes over from there.
    v1 = cluster.deploy(1, "v1")
    assert cluster.service.split() == {v1: 100}


# --- the replayed rules can fail ---------------------------------------------------------------


def test_the_replay_refuses_what_knative_refuses(cluster: Cluster) -> None:
    v1 = cluster.deploy(1, "v1")
    service = k8s.function_service(
        k8s.parse((k8s.REPO / cluster.deploy_dir / "prod" / "bundle.yaml").read_text())
    )
    # The old naming (the VERSION alone): a new image under an unchanged name.
    changed = json.loads(json.dumps(service))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = image(2)
    with pytest.raises(Rejected, match="without a name change"):
        cluster.service.apply(changed)
    # A name another template already used.
    cluster.deploy(3, "v3")
    changed["spec"]["template"]["metadata"]["name"] = v1
    changed["spec"]["traffic"] = [{"revisionName": v1, "percent": 100}]
    with pytest.raises(NotReady, match="already exists"):
        cluster.service.apply(changed)
    # Names outside the Service's prefix, traffic to nowhere.
    wrong = json.loads(json.dumps(service))
    wrong["spec"]["template"]["metadata"]["name"] = "api-v1"
    with pytest.raises(Rejected, match="must have prefix"):
        cluster.service.apply(wrong)
    with pytest.raises(NotReady, match="RevisionMissing"):
        cluster.service.patch_traffic([{"revisionName": "detection-api-nope", "percent": 100}])
    with pytest.raises(Rejected, match="sum to 90"):
        cluster.service.patch_traffic([{"revisionName": v1, "percent": 90}])


def test_dry_run_changes_nothing_in_the_cluster(cluster: Cluster) -> None:
    """With DRY_RUN=1 only kustomize and reads run: the stand-in refuses anything else."""
    printed = cluster.make("deploy", IMAGE_REF=image(1), VERSION="v1")
    assert any(c.startswith("kubectl apply -f ") for c in printed)
    reads = k8s.REPO / "tests" / "support" / "kubectl_reads.py"
    refused = subprocess.run(
        [sys.executable, str(reads), str(cluster.state), "apply", "-f", "x.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 3


@pytest.mark.parametrize("target", ["canary", "promote", "rollback"])
def test_traffic_targets_refuse_a_flagger_overlay(cluster: Cluster, target: str) -> None:
    """With Flagger the traffic is Flagger's: pinning it by hand would fight its analysis."""
    result = subprocess.run(
        [
            *("make", "--no-print-directory", "-f", "deploy.mk", target, "DRY_RUN=1"),
            *("OVERLAY=knative/overlays/prod-flagger", f"IMAGE_REF={image(1)}"),
        ],
        cwd=k8s.REPO,
        env={**os.environ, "PATH": cluster.path, "DEPLOY_DIR": cluster.deploy_dir},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "gives the traffic to Flagger" in result.stderr
