"""The project carries its own documentation: nothing in it cites or reads a file outside the
repository (a design card or notes a user's clone does not have)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not name them itself.
OUTSIDE = tuple(
    "".join(parts) for parts in (("design", ".md"), ("field-notes", ".md"), ("../", "shared"))
)


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [REPO / name.decode() for name in listed if name]


def test_nothing_cites_or_reads_documents_outside_the_repository() -> None:
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}: {word}" for word in OUTSIDE if word in text]
    assert not offenders, offenders
