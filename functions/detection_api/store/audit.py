"""Audit trail: an append-only Redis stream of what happened to each detection.

This module is the only one that writes and reads audit entries.

The global stream ``detection:audit`` (bounded by ``AUDIT_MAX_LEN``, approximate trimming so XADD
stays O(1)) is for operators and exports: one entry per accepted request, per forwarded batch and
per rejection, each naming its record ids. Each record's own trail, what
``GET /api/v1/detections/{id}/events`` returns, is derived from the record's fields for the
ordinary life (received, queued or filtered, confirmed: the record's own timestamps say when), so
the hot path writes nothing for it; the exceptional events (retried, requeued, dead-lettered) are
kept in a short Redis list per record (``detection:audit:<record id>``) with the record's lifetime.
Records written by earlier versions keep every event in that list. Entries join the caller's
pipeline, so a state change and its audit entry are written together.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from itertools import chain
from typing import Any

from redis import Redis
from redis.client import Pipeline

from detection_api.store.record_fields import DeliveryState, decode, is_legacy
from detection_api.store.records import record_key

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
        # As text: a command of text alone reaches the ingest script as it is (atomic.json_command)
        self._max_len_text = str(max_len)

    @staticmethod
    def _entry(event: AuditEvent, now: float | None, **fields: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"event": event.value, "at": repr(now or time.time())}
        entry.update({k: v[:500] for k, v in fields.items() if v})
        return entry

    def _add(self, pipe: Pipeline | Redis, entry: dict[str, Any]) -> None:
        """The entry on the global stream, capped near ``max_len``. As a plain command: redis-py's
        ``xadd`` checks its eight options on every call (a detection's ingest writes one)."""
        fields = chain.from_iterable(entry.items())
        pipe.execute_command("XADD", AUDIT_STREAM, "MAXLEN", "~", self._max_len_text, "*", *fields)

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
        self._add(pipe, entry)
        if record_id:
            self._trail(pipe, record_id, entry, self.retention_seconds)

    def append_accepted(
        self,
        pipe: Pipeline | Redis,
        record_ids: list[str],
        *,
        filtered_ids: list[str] | None = None,
        now: float | None = None,
    ) -> None:
        """One global entry for the detections one request stored (each record's own trail is
        derived from the record)."""
        if not record_ids:
            return
        entry = self._entry(AuditEvent.RECEIVED, now)
        entry.update(count=str(len(record_ids)), record_ids=",".join(record_ids))
        if filtered_ids:
            entry["filtered_ids"] = ",".join(filtered_ids)
        self._add(pipe, entry)

    def append_batch(
        self,
        pipe: Pipeline | Redis,
        event: AuditEvent,
        record_ids: list[str],
        *,
        reason: str | None = None,
        now: float | None = None,
        ttl_seconds: int | None = None,
        trail_ids: list[str] | None = None,
    ) -> None:
        """One entry for the whole batch in the global stream, and one per record in the trail
        lists of ``trail_ids`` (default: all of them; the forwarder passes only the records of
        earlier versions for ``confirmed``, which compact records derive). ``ttl_seconds``
        shortens the trails' lifetime (a confirmed record is kept for
        ``CONFIRMED_RETENTION_SECONDS``)."""
        if not record_ids:
            return
        entry = self._entry(event, now, reason=reason)
        for record_id in record_ids if trail_ids is None else trail_ids:
            self._trail(pipe, record_id, entry, ttl_seconds or self.retention_seconds)
        batch_entry = {**entry, "count": str(len(record_ids)), "record_ids": ",".join(record_ids)}
        self._add(pipe, batch_entry)

    def events_for(self, record_id: str) -> list[dict[str, Any]]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(record_key(record_id))
            pipe.lrange(trail_key(record_id), 0, -1)
            raw, trail = pipe.execute()
        out = []
        for item_raw in trail:
            item = json.loads(item_raw)
            item["at"] = float(item["at"])
            out.append(item)
        if raw and not is_legacy(raw):
            out.extend(derived_events(record_id, raw))
            out.sort(key=lambda e: e["at"])
        return out


def derived_events(record_id: str, raw: dict[Any, Any]) -> list[dict[str, Any]]:
    """The ordinary life of a compact record, from its own fields."""
    record = decode(record_id, raw)
    ids = {"record_id": record_id, "detection_id": record["detection_id"]}
    if record.get("event_id"):
        ids["event_id"] = record["event_id"]
    created = record["created_at"]
    out: list[dict[str, Any]] = [{"event": AuditEvent.RECEIVED.value, "at": created, **ids}]
    if record.get("state") == DeliveryState.FILTERED:
        filtered = {"event": AuditEvent.FILTERED.value, "at": created, **ids}
        if record.get("filter_reason"):
            filtered["reason"] = record["filter_reason"]
        out.append(filtered)
    else:
        out.append({"event": AuditEvent.QUEUED.value, "at": created, **ids})
    if "confirmed_at" in record:
        out.append({"event": AuditEvent.CONFIRMED.value, "at": record["confirmed_at"]})
    return out
