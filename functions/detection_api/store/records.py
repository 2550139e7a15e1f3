"""Detection records in Redis: one hash per detection, readable through the REST API.

The record is written in the same atomic step as its delivery job (``atomic.py``, ``tak_jobs.py``;
docs/architecture.md "How a detection flows"), so a detection is fully accepted or not at all.
The forwarder moves it through the delivery states. Keys expire after the retention window.

Identity (issue 10, many producers on one deployment):

- A record id is random (``new_record_id``: 128 bits from the OS), so it says nothing about the
  producer's ids and nobody can compute another producer's record id.
- Idempotency is a separate small marker, ``detection:idem:<sha256 of the scoped identity>``,
  whose value is the record id. The scoped identity always starts with the authenticated
  producer (``producer_identity``), then the producer's own ids (CloudEvent source + id, or v1
  camera + detection id): two producers or two cameras never share a marker, one producer
  resending finds its own. The marker outlives a confirmed record: it is kept for
  ``RETENTION_SECONDS`` after confirmation, the record itself only ``CONFIRMED_RETENTION_SECONDS``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.client import Pipeline

RECORD_PREFIX = "detection:record:"
# Records per mark script call: about 1 ms of Redis time on loopback (tests/test_records.py).
MARK_CHUNK = 500
IDEMPOTENCY_PREFIX = "detection:idem:"


class DeliveryState(StrEnum):
    QUEUED = "queued"  # stored, waiting for the forwarder
    SENT = "sent"  # written to the TAK connection, confirmation pending
    CONFIRMED = "confirmed"  # TAK server answered the ping that followed it
    RETRYING = "retrying"  # a confirmation failed on a live connection; will be sent again
    DEAD = "dead"  # permanent failure, in rq's failed registry (requeue-able)
    FILTERED = "filtered"  # recorded, below the thresholds, never forwarded


def record_key(record_id: str) -> str:
    return f"{RECORD_PREFIX}{record_id}"


def idempotency_key(*identity: str) -> str:
    """The marker key of a scoped identity, e.g. (producer, "ce", source, id). The parts are
    length-prefixed before hashing, so no choice of ids can make two identities collide."""
    digest = hashlib.sha256()
    for part in identity:
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return IDEMPOTENCY_PREFIX + digest.hexdigest()


def new_record_id() -> str:
    """A random, unguessable record id: 32 hex characters (valid as an rq job id)."""
    return uuid.uuid4().hex


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


class RecordStore:
    """Reads and writes detection records. Writes can join a caller's pipeline (transaction)."""

    JSON_FIELDS = frozenset({"geolocation", "detection", "reply"})

    def __init__(self, redis: Redis, retention_seconds: int) -> None:
        self.redis = redis
        self.retention_seconds = retention_seconds
        self._mark_script = redis.register_script(_MARK_SCRIPT)

    def write_new(
        self,
        pipe: Pipeline,
        record_id: str,
        fields: dict[str, Any],
        *,
        idempotency: str | None = None,
    ) -> None:
        """Record commands that create the record (and its idempotency marker, a key from
        ``idempotency_key``) in the caller's pipeline."""
        now = time.time()
        mapping = {k: _encode(v) for k, v in fields.items() if v is not None}
        mapping.setdefault("id", record_id)
        mapping.setdefault("attempts", "0")
        mapping["created_at"] = repr(now)
        mapping["updated_at"] = repr(now)
        if idempotency is not None:
            mapping["idem"] = idempotency
            pipe.set(idempotency, record_id, ex=self.retention_seconds)
        key = record_key(record_id)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.retention_seconds)

    def get(self, record_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(record_key(record_id))
        if not raw:
            return None
        return self.decode(raw)

    def decode(self, raw: dict[bytes | str, bytes | str]) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            value = v.decode() if isinstance(v, bytes) else v
            if key in self.JSON_FIELDS:
                record[key] = json.loads(value)
            elif key == "attempts":
                record[key] = int(value)
            elif key.endswith("_at"):
                record[key] = float(value)
            else:
                record[key] = value
        return record

    def mark(
        self,
        pipe: Pipeline | Redis,
        record_ids: list[str],
        state: DeliveryState,
        *,
        count_attempt: bool = False,
        error: str | None = None,
        now: float | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        """Move records to a delivery state (only records that still exist: HSET on an expired
        record would resurrect it without its TTL, so the update is guarded by a Lua check)."""
        if not record_ids:
            return
        stamp = repr(time.time() if now is None else now)
        args = [
            state.value,
            stamp,
            "1" if count_attempt else "0",
            error or "",
            ttl_seconds or "",
            self.retention_seconds,
        ]
        # One script call per chunk of a batch (not per record): the forwarder marks thousands
        # per second, and a chunk bounds how long one call holds Redis (scripts block it).
        for start in range(0, len(record_ids), MARK_CHUNK):
            keys = [record_key(r) for r in record_ids[start : start + MARK_CHUNK]]
            self._mark_script(keys=keys, args=args, client=pipe)


# KEYS: records; ARGV: state, now, count_attempt (0/1), error ('' = keep), new TTL ('' = keep),
# retention seconds (a confirmed record's idempotency marker lives that long from confirmation,
# while the record itself may go sooner). Returns how many existed.
_MARK_SCRIPT = """
local marked = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'state', ARGV[1], 'updated_at', ARGV[2])
    if ARGV[1] == 'confirmed' then
      redis.call('HSET', key, 'confirmed_at', ARGV[2])
      local idem = redis.call('HGET', key, 'idem')
      if idem then redis.call('EXPIRE', idem, ARGV[6]) end
    end
    if ARGV[1] == 'sent' then redis.call('HSETNX', key, 'first_sent_at', ARGV[2]) end
    if ARGV[3] == '1' then redis.call('HINCRBY', key, 'attempts', 1) end
    if ARGV[4] ~= '' then redis.call('HSET', key, 'last_error', ARGV[4]) end
    if ARGV[5] ~= '' then redis.call('EXPIRE', key, ARGV[5]) end
    marked = marked + 1
  end
end
return marked
"""
