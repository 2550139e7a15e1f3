"""Where the repository checkout is (the local stack runs from it; ``make run`` calls ``up``)."""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout this package is installed from (editable install: functions/detection_api)."""
    return Path(__file__).resolve().parents[3]
