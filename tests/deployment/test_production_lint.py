"""`make lint` (lint.mk): ruff with its security rules, bandit, and waivers that say why. These
tests show each check finds what it is for; `make lint` runs them over the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support import k8s_render as k8s

LINT_MK = k8s.REPO / "lint.mk"


def make(target: str, *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-f",
            str(LINT_MK),
            target,
            f"BIN={Path(sys.executable).parent}",
            *variables,
        ],
        cwd=k8s.REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_lint_runs_ruff_with_security_rules_bandit_and_the_waiver_check() -> None:
    text = LINT_MK.read_text()
    assert "\nlint: lint-ruff lint-bandit lint-waivers" in text
    assert "$(BIN)/ruff check $(LINT_PATHS)" in text
    assert "$(BIN)/ruff format --check $(LINT_PATHS)" in text
    assert "$(BIN)/bandit" in text
    ruff = tomllib.loads((k8s.REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in ruff["select"]
    # The only bandit skip mirrors the only S rule pyproject ignores everywhere.
    assert [r for r in ruff["ignore"] if r.startswith("S")] == ["S101"]
    assert "BANDIT_SKIP ?= B101\n" in text


def test_waiver_check_refuses_bare_codes_and_accepts_reasons(tmp_path: Path) -> None:
    bare = tmp_path / "bare.py"
    bare.write_text(
        "a = 1  # noqa: S310\nb = 2  # noqa: E501, S603\nc = 3  # nosec\nd = 4  # nosec B310\n"
    )
    explained = tmp_path / "ok"
    explained.mkdir()
    (explained / "fine.py").write_text(
        "a = 1  # noqa: S310 (the URL was checked to be https)\n"
        "b = 2  # noqa: S603 - argv is ours, no shell\n"
        "c = 3  # nosec B310 (same as above)\n"
        "d = 4  # noqa: PLW0603\n"
    )
    refused = make("lint-waivers", f"WAIVER_PATHS={tmp_path / 'bare.py'}")
    assert refused.returncode != 0
    assert [line.split(":")[1] for line in refused.stdout.splitlines()[1:]] == ["1", "2", "3", "4"]
    accepted = make("lint-waivers", f"WAIVER_PATHS={explained}")
    assert accepted.returncode == 0, accepted.stdout


def test_bandit_finds_an_insecure_call(tmp_path: Path) -> None:
    pytest.importorskip("bandit", reason="bandit is a test extra (pip install bandit)")
    (tmp_path / "insecure.py").write_text(
        "import subprocess\n\n\ndef run(cmd: str) -> None:\n    subprocess.call(cmd, shell=True)\n"
    )
    (tmp_path / "asserts.py").write_text("def f(x: int) -> int:\n    assert x > 0\n    return x\n")
    found = make("lint-bandit", f"BANDIT_PATHS={tmp_path}")
    assert found.returncode != 0
    assert "Issue: [B602" in found.stdout  # subprocess with shell=True
    assert "Issue: [B101" not in found.stdout  # asserts: the project's policy
    clean = make("lint-bandit", f"BANDIT_PATHS={tmp_path / 'asserts.py'}")
    assert clean.returncode == 0, clean.stdout
