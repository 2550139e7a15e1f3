"""Audit trail: an append-only Redis stream of what happened to each detection.

Two streams per event: the global ``detection:audit`` (bounded by ``AUDIT_MAX_LEN``, approximate
trimming so XADD stays O(1)) for operators and exports, and a short per-record stream with the
record's retention, which is what ``GET /api/v1/detections/{id}/events`` reads without scanning.
Entries join the caller's pipeline, so a state change and its audit entry are written together.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.client import Pipeline

AUDIT_STREAM = "detection:audit"
RECORD_STREAM_PREFIX = "detection:audit:"
_PER_RECORD_MAX = 200


class AuditEvent(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    FILTERED = "filtered"
    QUEUED = "queued"
    CONFIRMED = "confirmed"
    RETRIED = "retried"
    REQUEUED = "requeued"  # outage: back to the queue, no attempt counted
    DEAD_LETTERED = "dead_lettered"


class AuditLog:
    def __init__(self, redis: Redis, *, max_len: int, retention_seconds: int) -> None:
        self.redis = redis
        self.max_len = max_len
        self.retention_seconds = retention_seconds

    def append(
        self,
        pipe: Pipeline | Redis,
        event: AuditEvent,
        *,
        record_id: str | None = None,
        detection_id: str | None = None,
        event_id: str | None = None,
        reason: str | None = None,
        now: float | None = None,
    ) -> None:
        entry: dict[str, Any] = {"event": event.value, "at": repr(now or time.time())}
        for name, value in (
            ("record_id", record_id),
            ("detection_id", detection_id),
            ("event_id", event_id),
            ("reason", reason),
        ):
            if value:
                entry[name] = value[:500]
        pipe.xadd(AUDIT_STREAM, entry, maxlen=self.max_len, approximate=True)
        if record_id:
            key = RECORD_STREAM_PREFIX + record_id
            pipe.xadd(key, entry, maxlen=_PER_RECORD_MAX, approximate=True)
            pipe.expire(key, self.retention_seconds)

    def append_batch(
        self,
        pipe: Pipeline | Redis,
        event: AuditEvent,
        record_ids: list[str],
        *,
        reason: str | None = None,
        now: float | None = None,
    ) -> None:
        """One entry per record in its own stream, and one entry for the whole batch in the global
        stream: the forwarder confirms thousands of detections a second, and a global entry for
        each would add a third of its Redis work."""
        if not record_ids:
            return
        entry: dict[str, Any] = {"event": event.value, "at": repr(now or time.time())}
        if reason:
            entry["reason"] = reason[:500]
        for record_id in record_ids:
            key = RECORD_STREAM_PREFIX + record_id
            pipe.xadd(key, entry, maxlen=_PER_RECORD_MAX, approximate=True)
            pipe.expire(key, self.retention_seconds)  # never a stream that outlives its record
        batch_entry = {**entry, "count": len(record_ids), "record_ids": ",".join(record_ids)}
        pipe.xadd(AUDIT_STREAM, batch_entry, maxlen=self.max_len, approximate=True)

    def events_for(self, record_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for entry_id, fields in self.redis.xrange(RECORD_STREAM_PREFIX + record_id):
            item = {_text(k): _text(v) for k, v in fields.items()}
            item["id"] = _text(entry_id)
            item["at"] = float(item["at"])
            out.append(item)
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
