"""Input helpers shared by the CLI verbs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def read_json_input(path: str) -> Any:
    """Read JSON from a file, or from stdin when path is '-'. ValueError with a clear text."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
