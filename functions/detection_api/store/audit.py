"""Audit trail: an append-only Redis stream of what happened to each detection.

The global stream ``detection:audit`` (bounded by ``AUDIT_MAX_LEN``, approximate trimming so XADD
stays O(1)) is for operators and exports. Each record also keeps its own short trail, a Redis list
of compact JSON entries with the record's lifetime, which is what
``GET /api/v1/detections/{id}/events`` reads without scanning. (A list, not a stream: a stream
per record costs ~4.7 KB of Redis memory, a list of a few entries ~0.3 KB, and a busy deployment
keeps hundreds of thousands of them.) Entries join the caller's pipeline, so a state change and
its audit entry are written together.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.client import Pipeline

AUDIT_STREAM = "detection:audit"
RECORD_TRAIL_PREFIX = "detection:audit:"
_PER_RECORD_MAX = 50


class AuditEvent(StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    FILTERED = "filtered"
    QUEUED = "queued"
    CONFIRMED = "confirmed"
    RETRIED = "retried"
    REQUEUED = "requeued"  # outage or operator: back to the queue, no attempt counted
    DEAD_LETTERED = "dead_lettered"


def trail_key(record_id: str) -> str:
    return RECORD_TRAIL_PREFIX + record_id


class AuditLog:
    def __init__(self, redis: Redis, *, max_len: int, retention_seconds: int) -> None:
        self.redis = redis
        self.max_len = max_len
        self.retention_seconds = retention_seconds

    @staticmethod
    def _entry(event: AuditEvent, now: float | None, **fields: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"event": event.value, "at": repr(now or time.time())}
        entry.update({k: v[:500] for k, v in fields.items() if v})
        return entry

    def _trail(
        self, pipe: Pipeline | Redis, record_id: str, entry: dict[str, Any], ttl: int
    ) -> None:
        key = trail_key(record_id)
        pipe.rpush(key, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(key, -_PER_RECORD_MAX, -1)
        pipe.expire(key, ttl)  # never a trail that outlives its record

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
        entry = self._entry(
            event,
            now,
            record_id=record_id,
            detection_id=detection_id,
            event_id=event_id,
            reason=reason,
        )
        pipe.xadd(AUDIT_STREAM, entry, maxlen=self.max_len, approximate=True)
        if record_id:
            self._trail(pipe, record_id, entry, self.retention_seconds)

    def append_batch(
        self,
        pipe: Pipeline | Redis,
        event: AuditEvent,
        record_ids: list[str],
        *,
        reason: str | None = None,
        now: float | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        """One entry per record in its trail, and one entry for the whole batch in the global
        stream: the forwarder confirms thousands of detections a second, and a global entry for
        each would add a third of its Redis work. ``ttl_seconds`` shortens the trails' lifetime
        (a confirmed record is kept for ``CONFIRMED_RETENTION_SECONDS``)."""
        if not record_ids:
            return
        entry = self._entry(event, now, reason=reason)
        for record_id in record_ids:
            self._trail(pipe, record_id, entry, ttl_seconds or self.retention_seconds)
        batch_entry = {**entry, "count": len(record_ids), "record_ids": ",".join(record_ids)}
        pipe.xadd(AUDIT_STREAM, batch_entry, maxlen=self.max_len, approximate=True)

    def events_for(self, record_id: str) -> list[dict[str, Any]]:
        out = []
        for raw in self.redis.lrange(trail_key(record_id), 0, -1):
            item = json.loads(raw)
            item["at"] = float(item["at"])
            out.append(item)
        return out
