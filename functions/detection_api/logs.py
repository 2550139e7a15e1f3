"""Structured JSON logs: one object per line, with the detection and CloudEvent ids when known.

Pass ids through ``extra={"record_id": ..., "detection_id": ..., "event_id": ...}``; they become
top-level keys, so a log pipeline can follow one detection from ingest to TAK confirmation.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

CONTEXT_KEYS = ("record_id", "detection_id", "event_id", "batch", "count", "tak_url")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Configure the root logger once per process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_detection_api", False):
            root.removeHandler(existing)
    handler._detection_api = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
