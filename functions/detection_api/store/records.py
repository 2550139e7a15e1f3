"""Detection records in Redis: one small hash per detection, readable through the REST API.

This module is the only one that writes and reads the record's fields.

The record is written in the same atomic step as its delivery job (``tak_jobs.py``), so a
detection is either fully accepted (record + job) or not at all. The forwarder moves it through
the delivery states. Keys expire after the retention window.

Encoding (the "compact" records, written since job payload v3): field names of one or two letters
(``FIELDS``), times as integer milliseconds (Redis stores small integers in 8 bytes), the
geolocation as a JSON array in ``GEO_KEYS`` order, and no CoT for a queued detection: its CoT is in
its delivery job, the one place the forwarder reads it, and the record points at that job
(``j``, only when the job id is not the record id). A filtered detection has no job and keeps its
CoT in the record. After confirmation the job is deleted, so a confirmed record has no CoT. A
small hash stays listpack-encoded in Redis (one allocation, no per-field overhead): a confirmed
record is ~300 B. Records written by earlier versions (long field names, ``state`` present) are
still read, and updated by the generic ``mark`` script, until they expire.

Identity (issue 10, many producers on one deployment):

- A record id is random (``new_record_id``: 128 bits from the OS), so it says nothing about the
  producer's ids and nobody can compute another producer's record id.
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
import json
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.client import Pipeline

from detection_api.cot import detection_uid
from detection_api.store.tak_jobs import cot_of

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


# API name -> field name in the compact record hash.
FIELDS: dict[str, str] = {
    "state": "state",  # long names kept for the two fields operators and tools read directly
    "detection_id": "d",
    "uid": "u",
    "cot_type": "t",
    "cot": "x",
    "object_class": "c",
    "ai_confidence": "a",
    "camera_id": "m",
    "track_id": "k",
    "source": "o",
    "event_source": "es",
    "event_id": "ei",
    "producer": "p",
    "filter_reason": "f",
    "geolocation": "g",
    "job_id": "j",
    "created_at": "ca",
    "updated_at": "ua",
    "sent_at": "sa",
    "confirmed_at": "ka",
    "attempts": "attempts",
    "last_error": "e",
}
_NAMES = {short: name for name, short in FIELDS.items()}
_TIMES = frozenset({"created_at", "updated_at", "sent_at", "confirmed_at"})
# The geolocation's keys (core.geolocation_as_dict), stored positionally; others go in a dict.
GEO_KEYS = (
    "lat", "lon", "hae_m", "slant_range_m", "ground_distance_m", "ce90_m", "le90_m", "ce_m",
    "le_m", "flag", "covariance_en_m2", "terrain", "dem", "terrain_note",
)  # fmt: skip
_LEGACY_JSON_FIELDS = frozenset({"geolocation", "detection", "reply"})


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


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def encode_geolocation(geolocation: dict[str, Any]) -> str:
    values: list[Any] = [geolocation.get(k) for k in GEO_KEYS]
    while values and values[-1] is None:
        values.pop()
    extra = {k: v for k, v in geolocation.items() if k not in GEO_KEYS}
    if extra:
        values.append(extra)
    return json.dumps(values, separators=(",", ":"))


def decode_geolocation(text: str) -> dict[str, Any]:
    values = json.loads(text)
    extra = values.pop() if values and isinstance(values[-1], dict) else {}
    out = {k: v for k, v in zip(GEO_KEYS, values, strict=False) if v is not None}
    out.update(extra)
    return out


# Redis keeps a hash listpack-encoded (compact) only while every value is at most
# ``hash-max-listpack-value`` (64) bytes; one longer value turns it into a hashtable for good
# (~3x the memory). Longer values are stored in pieces: ``g``, ``g~1``, ``g~2``...
LISTPACK_VALUE_MAX = 64
_PIECE = "~"


def _pieces(short: str, value: str) -> dict[str, str]:
    step = LISTPACK_VALUE_MAX if value.isascii() else LISTPACK_VALUE_MAX // 4
    if len(value) <= step:
        return {short: value}
    parts = [value[i : i + step] for i in range(0, len(value), step)]
    return {short if n == 0 else f"{short}{_PIECE}{n}": part for n, part in enumerate(parts)}


def new_record(
    *,
    state: DeliveryState,
    detection_id: str,
    uid: str,
    cot_type: str,
    cot: str,
    object_class: str,
    ai_confidence: float,
    camera_id: str | None,
    track_id: str | None,
    source: str | None,
    event_source: str | None,
    event_id: str | None,
    producer: str,
    filter_reason: str | None,
    geolocation: dict[str, Any],
) -> dict[str, Any]:
    """The fields of a new record (API names; ``write_new`` encodes them)."""
    return {
        "state": state.value,
        "detection_id": detection_id,
        "uid": uid,
        "cot_type": cot_type,
        "cot": cot,
        "object_class": object_class,
        "ai_confidence": repr(ai_confidence),
        "camera_id": camera_id,
        "track_id": track_id,
        "source": source,
        "event_source": event_source,
        "event_id": event_id,
        "producer": producer,
        "filter_reason": filter_reason,
        "geolocation": geolocation,
    }


def _default(name: str, record_id: str) -> str | None:
    """Values a record does not store because they follow from its id."""
    if name in ("detection_id", "job_id"):
        return record_id
    if name == "uid":
        return detection_uid(record_id=record_id, camera_id=None, track_id=None, source=None)
    return None


def encode_fields(fields: dict[str, Any], *, record_id: str, created_at: float) -> dict[str, Any]:
    """The compact hash of a new record from its API fields (None and redundant values are left
    out: ``detection_id`` and ``job_id`` equal to the record id)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or value == _default(name, record_id):
            continue
        if name == "geolocation":
            text = encode_geolocation(value)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, separators=(",", ":"), default=str)
        out.update(_pieces(FIELDS[name], text))
    out["ca"] = _ms(created_at)
    return out


def _joined(raw: dict[Any, Any]) -> dict[str, str]:
    """The record's fields as text, with values stored in pieces put back together."""
    whole: dict[str, str] = {}
    pieces: dict[str, list[tuple[int, str]]] = {}
    for k, v in raw.items():
        key, value = _text(k), _text(v)
        base, sep, index = key.partition(_PIECE)
        if sep and index.isdigit():
            pieces.setdefault(base, []).append((int(index), value))
        else:
            whole[key] = value
    for base, parts in pieces.items():
        whole[base] = whole.get(base, "") + "".join(p for _, p in sorted(parts))
    return whole


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_legacy(raw: dict[Any, Any]) -> bool:
    """A record written before the compact encoding (long field names, ``id`` among them)."""
    return b"id" in raw or "id" in raw


def decode(record_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    """The API view of a record hash (either encoding)."""
    if is_legacy(raw):
        return _decode_legacy(raw)
    record: dict[str, Any] = {
        "id": record_id,
        "detection_id": record_id,
        "uid": _default("uid", record_id),
        "attempts": 0,
    }
    for key, value in _joined(raw).items():
        name = _NAMES.get(key)
        if name is None:
            continue
        if name == "geolocation":
            record[name] = decode_geolocation(value)
        elif name == "attempts":
            record[name] = int(value)
        elif name in _TIMES:
            record[name] = int(value) / 1000
        else:
            record[name] = value
    record.pop("job_id", None)  # internal
    record.setdefault(
        "updated_at", max(record.get(t, 0.0) for t in ("created_at", "sent_at", "confirmed_at"))
    )
    return record


def _decode_legacy(raw: dict[Any, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for k, v in raw.items():
        key, value = _text(k), _text(v)
        if key in _LEGACY_JSON_FIELDS:
            record[key] = json.loads(value)
        elif key == "attempts":
            record[key] = int(value)
        elif key.endswith("_at"):
            record[key] = float(value)
        elif key != "idem":
            record[key] = value
    return record


def job_id_of(record_id: str, raw: dict[Any, Any]) -> str:
    """The delivery job that carries a compact record's CoT."""
    job = raw.get(b"j") or raw.get("j")
    return _text(job) if job else record_id


class RecordStore:
    """Reads and writes detection records. Writes can join a caller's pipeline (transaction)."""

    def __init__(self, redis: Redis, retention_seconds: int) -> None:
        self.redis = redis
        self.retention_seconds = retention_seconds
        self._mark_script = redis.register_script(_MARK_SCRIPT)
        self._sent_script = redis.register_script(_SENT_SCRIPT)
        self._confirmed_script = redis.register_script(_CONFIRMED_SCRIPT)

    def write_new(
        self,
        pipe: Pipeline,
        record_id: str,
        fields: dict[str, Any],
        *,
        idempotency: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record commands that create the record (and its idempotency marker, a key from
        ``idempotency_key``) in the caller's pipeline. ``fields`` are API names (``FIELDS``)."""
        mapping = encode_fields(fields, record_id=record_id, created_at=now or time.time())
        if idempotency is not None:
            pipe.set(idempotency, record_id, ex=self.retention_seconds)
        key = record_key(record_id)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.retention_seconds)

    def get_raw(self, record_id: str) -> dict[Any, Any]:
        return self.redis.hgetall(record_key(record_id))  # type: ignore[return-value]

    def get(self, record_id: str) -> dict[str, Any] | None:
        raw = self.get_raw(record_id)
        return self.decode_with_cot(record_id, raw) if raw else None

    def decode_with_cot(self, record_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
        """The API view, with the CoT read from the delivery job while the record has none
        (queued or in delivery; a confirmed record's job is gone, and so is its CoT)."""
        record = decode(record_id, raw)
        if "cot" not in record and not is_legacy(raw):
            cot = cot_of(self.redis, job_id_of(record_id, raw), record_id)
            if cot is not None:
                record["cot"] = cot
        return record

    def mark_sent(self, pipe: Pipeline | Redis, record_ids: Sequence[str], now: float) -> None:
        """Hot path, compact records only: state ``sent`` (one HSET per record)."""
        for chunk in _chunks(record_ids):
            self._sent_script(keys=chunk, args=[_ms(now)], client=pipe)

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
            args = [_ms(now), ttl_seconds, self.retention_seconds, len(keys)]
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
            _ms(stamp),
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
    if redis.call('HEXISTS', key, 'id') == 1 then
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
