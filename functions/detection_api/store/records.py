"""Detection records in Redis: one small hash per detection, readable through the REST API.

This module stores and updates records; ``record_fields.py`` defines their fields and encoding.

The record is written in the same atomic step as its delivery job (``atomic.py``, ``tak_jobs.py``;
docs/architecture.md "How a detection flows"), so a
detection is either fully accepted (record + job) or not at all. The forwarder moves it through
the delivery states. Keys expire after the retention window.

A queued detection's CoT is not in its record: it is in its delivery job, the one place the
forwarder reads it, and the record points at that job (only when the job id is not the record
id). A filtered detection has no job and keeps its CoT in the record. After confirmation the job
is deleted, so a confirmed record has no CoT. The hash stays listpack-encoded in Redis (one
allocation): a confirmed record is about 450 B. Records written by earlier versions are still
read, and updated by the general ``mark`` script, until they expire.

Identity (issue 10, many producers on one deployment):

- A record id is random (``new_record_ids``: 128 bits from the OS each), so it says nothing about
  the producer's ids and nobody can compute another producer's record id.
- Idempotency is a separate small marker, ``detection:idem:<sha256 of the scoped identity>``,
  whose value is the record id. The scoped identity always starts with the authenticated
  producer (``producer_identity``), then the producer's own ids (CloudEvent source + id, or v1
  camera + detection id): two producers or two cameras never share a marker, one producer
  resending finds its own. The marker outlives a confirmed record: it is kept for
  ``RETENTION_SECONDS`` after confirmation, the record itself only ``CONFIRMED_RETENTION_SECONDS``.
  The marker's key travels in the delivery job, so confirmation extends it without reading the
  record.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from detection_api.store.record_fields import (
    FIELDS,
    GEO_KEYS,
    DeliveryState,
    NewRecord,
    decode,
    encode_fields,
    encode_new,
    is_legacy,
    job_id_of,
    ms,
    new_record,
)
from detection_api.store.tak_jobs import cots_of

__all__ = [
    "FIELDS",
    "GEO_KEYS",
    "IDEMPOTENCY_PREFIX",
    "MARK_CHUNK",
    "RECORD_PREFIX",
    "DeliveryState",
    "NewRecord",
    "RecordStore",
    "decode",
    "idempotency_key",
    "is_legacy",
    "new_record",
    "new_record_ids",
    "record_key",
]

RECORD_PREFIX = "detection:record:"
# Records per mark script call: about 1 ms of Redis time on loopback (tests/test_records.py).
MARK_CHUNK = 500
IDEMPOTENCY_PREFIX = "detection:idem:"


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


def new_record_ids(count: int) -> list[str]:
    """``count`` random, unguessable record ids: 32 hex characters each (valid as rq job ids).

    One read of the OS's randomness for all of them: each read is a system call that releases
    the GIL, and under load a release usually hands the GIL to another of the worker's threads
    (two thread switches). ``uuid4`` per record made that 100 reads for a list of 100."""
    raw = os.urandom(16 * count).hex()
    return [raw[i : i + 32] for i in range(0, 32 * count, 32)]


class RecordStore:
    """Reads and writes detection records. Writes can join a caller's pipeline (transaction)."""

    def __init__(self, redis: Redis, retention_seconds: int) -> None:
        self.redis = redis
        self.retention_seconds = retention_seconds
        self._retention_text = str(retention_seconds)  # once, not per record (write_new)
        self._mark_script = redis.register_script(_MARK_SCRIPT)
        self._sent_script = redis.register_script(_SENT_SCRIPT)
        self._confirmed_script = redis.register_script(_CONFIRMED_SCRIPT)

    def write_new(
        self,
        pipe: Pipeline,
        record_id: str,
        fields: NewRecord | dict[str, Any],
        *,
        idempotency: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record commands that create the record (and its idempotency marker, a key from
        ``idempotency_key``) in the caller's pipeline. ``fields``: ingest's ``new_record``, or
        any fields by their API names (``FIELDS``)."""
        created_at = now or time.time()
        if isinstance(fields, NewRecord):
            pairs = encode_new(fields, record_id=record_id, created_at=created_at)
        else:
            pairs = encode_fields(fields, record_id=record_id, created_at=created_at)
        retention = self._retention_text
        # Recorded as plain commands: redis-py's ``set`` checks its experimental options on every
        # call (7 us, a twentieth of a detection's ingest), ``hset`` and ``expire`` their own.
        # All text, as redis-py would send them: ``atomic.json_command`` passes such a command on
        # as it is.
        if idempotency is not None:
            pipe.execute_command("SET", idempotency, record_id, "EX", retention)
        key = record_key(record_id)
        pipe.execute_command("HSET", key, *pairs)
        pipe.execute_command("EXPIRE", key, retention)

    def get_raw(self, record_id: str) -> dict[Any, Any]:
        return self.redis.hgetall(record_key(record_id))  # type: ignore[return-value]

    def get(self, record_id: str) -> dict[str, Any] | None:
        raw = self.get_raw(record_id)
        return self.decode_with_cot(record_id, raw) if raw else None

    def decode_with_cot(self, record_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
        """The API view, with the CoT read from the delivery job while the record has none
        (queued or in delivery; a confirmed record's job is gone, and so is its CoT)."""
        return self.decode_many_with_cot([(record_id, raw)])[0]

    def decode_many_with_cot(
        self, stored: Sequence[tuple[str, dict[Any, Any]]]
    ) -> list[dict[str, Any]]:
        """``decode_with_cot`` of each (record id, hash), the jobs read once each, together."""
        records = [decode(record_id, raw) for record_id, raw in stored]
        job_of = {
            record_id: job_id_of(record_id, raw)
            for (record_id, raw), record in zip(stored, records, strict=True)
            if "cot" not in record and not is_legacy(raw)
        }
        cots = cots_of(self.redis, job_of)
        for (record_id, _raw), record in zip(stored, records, strict=True):
            if record_id in cots:
                record["cot"] = cots[record_id]
        return records

    def mark_sent(self, pipe: Pipeline | Redis, record_ids: Sequence[str], now: float) -> None:
        """Hot path, compact records only: state ``sent`` (one HSET per record)."""
        for chunk in _chunks(record_ids):
            self._sent_script(keys=chunk, args=[ms(now)], client=pipe)

    def mark_confirmed(
        self,
        pipe: Pipeline | Redis,
        record_ids: Sequence[str],
        markers: Sequence[str],
        *,
        now: float,
        ttl_seconds: int,
    ) -> None:
        """Hot path, compact records only: state ``confirmed``, the record kept ``ttl_seconds``
        from now, and the idempotency ``markers`` (of these records) ``RETENTION_SECONDS``."""
        for start in range(0, max(len(record_ids), len(markers)), MARK_CHUNK):
            keys = [record_key(r) for r in record_ids[start : start + MARK_CHUNK]]
            args = [ms(now), ttl_seconds, self.retention_seconds, len(keys)]
            args += list(markers[start : start + MARK_CHUNK])
            self._confirmed_script(keys=keys, args=args, client=pipe)

    def mark(
        self,
        pipe: Pipeline | Redis,
        record_ids: Sequence[str],
        state: DeliveryState,
        *,
        count_attempt: bool = False,
        error: str | None = None,
        now: float | None = None,
        ttl_seconds: int | None = None,
    ) -> None:
        """Move records (either encoding) to a delivery state: the general, slower path (retries,
        outages, dead letters, operator requeues, records of earlier versions). Only records that
        still exist are touched: HSET on an expired record would resurrect it without its TTL."""
        if not record_ids:
            return
        stamp = time.time() if now is None else now
        args = [
            state.value,
            repr(stamp),
            ms(stamp),
            "1" if count_attempt else "0",
            error or "",
            ttl_seconds or "",
            self.retention_seconds,
        ]
        # One script call per chunk of a batch (not per record): a chunk bounds how long one call
        # holds Redis (scripts block it).
        for chunk in _chunks(record_ids):
            self._mark_script(keys=chunk, args=args, client=pipe)


def _chunks(record_ids: Sequence[str]) -> list[list[str]]:
    return [
        [record_key(r) for r in record_ids[start : start + MARK_CHUNK]]
        for start in range(0, len(record_ids), MARK_CHUNK)
    ]


# KEYS: compact records. ARGV: now (ms). HSET returns how many fields it created: both only when
# the record had expired (its state always exists), and then the resurrected key is deleted.
_SENT_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('HSET', key, 'state', 'sent', 'sa', ARGV[1]) == 2 then redis.call('DEL', key) end
end
return #KEYS
"""

# KEYS: compact records. ARGV: now (ms), record ttl, marker ttl, #KEYS, then idempotency markers.
# The job is deleted with the confirmation: the record's pointer to it goes too.
_CONFIRMED_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('HSET', key, 'state', 'confirmed', 'ka', ARGV[1]) == 2 then
    redis.call('DEL', key)
  else
    redis.call('HDEL', key, 'j')
    redis.call('EXPIRE', key, ARGV[2])
  end
end
for i = 5, #ARGV do redis.call('EXPIRE', ARGV[i], ARGV[3]) end
return #KEYS
"""

# KEYS: records; ARGV: state, now (seconds, legacy), now (ms, compact), count_attempt (0/1),
# error ('' = keep), new TTL ('' = keep), retention seconds (a confirmed legacy record's marker
# lives that long from confirmation). Returns how many existed.
_MARK_SCRIPT = """
local marked = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if redis.call('HEXISTS', key, 'created_at') == 1 then
      redis.call('HSET', key, 'state', ARGV[1], 'updated_at', ARGV[2])
      if ARGV[1] == 'confirmed' then
        redis.call('HSET', key, 'confirmed_at', ARGV[2])
        local idem = redis.call('HGET', key, 'idem')
        if idem then redis.call('EXPIRE', idem, ARGV[7]) end
      end
      if ARGV[1] == 'sent' then redis.call('HSETNX', key, 'first_sent_at', ARGV[2]) end
      if ARGV[4] == '1' then redis.call('HINCRBY', key, 'attempts', 1) end
      if ARGV[5] ~= '' then redis.call('HSET', key, 'last_error', ARGV[5]) end
    else
      redis.call('HSET', key, 'state', ARGV[1], 'ua', ARGV[3])
      if ARGV[1] == 'confirmed' then redis.call('HSET', key, 'ka', ARGV[3]) end
      if ARGV[1] == 'sent' then redis.call('HSET', key, 'sa', ARGV[3]) end
      if ARGV[4] == '1' then redis.call('HINCRBY', key, 'attempts', 1) end
      if ARGV[5] ~= '' then redis.call('HSET', key, 'e', ARGV[5]) end
    end
    if ARGV[6] ~= '' then redis.call('EXPIRE', key, ARGV[6]) end
    marked = marked + 1
  end
end
return marked
"""
