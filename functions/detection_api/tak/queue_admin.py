"""Operator views and actions on the delivery queue (behind ``detection-api queue ...``).

Reads go through one pipeline where they can (a status is ~1 ms, unlike ``rq info``); actions use
rq's own registry API, so a requeue here and ``rq requeue`` are the same operation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from detection_api.store.audit import AuditEvent, AuditLog
from detection_api.store.claims import FORWARDERS_KEY, alive_key, inflight_key
from detection_api.store.records import DeliveryState, RecordStore
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME, QUEUE_NAME, record_ids_of_job
from detection_api.tak.status import status_key


@dataclass(frozen=True)
class ForwarderStatus:
    name: str
    alive: bool
    in_flight: int
    tak_connected: bool | None
    tak_url: str | None
    since: float | None
    last_error: str | None
    tak_confirm: str | None = None  # pong | readback | none: how the TAK server confirms


@dataclass(frozen=True)
class QueueStatus:
    depth: dict[str, int]
    oldest_age_seconds: float | None  # of the job at the head of the tak queue
    dead_letters: dict[str, int]
    forwarders: list[ForwarderStatus]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    record_ids: list[str]
    failed_at: float | None
    reason: str


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _epoch(value: bytes | str | None) -> float | None:
    """rq stores times as ISO 8601 strings in UTC."""
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def queue_status(redis: Redis, now: float | None = None) -> QueueStatus:
    now = time.time() if now is None else now
    queues = (QUEUE_NAME, NOTIFY_QUEUE_NAME)
    with redis.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.llen(f"rq:queue:{name}")
        for name in queues:
            pipe.zcard(FailedJobRegistry(name, connection=redis).key)
        pipe.lindex(f"rq:queue:{QUEUE_NAME}", 0)
        pipe.smembers(FORWARDERS_KEY)
        results = pipe.execute()
    depths, dead, head, members = results[0:2], results[2:4], results[4], results[5]
    oldest = None
    if head:
        enqueued = redis.hget(Job.key_for(_text(head) or ""), "enqueued_at")
        stamp = _epoch(enqueued)
        oldest = None if stamp is None else max(0.0, now - stamp)
    names = sorted(_text(m) or "" for m in members)
    forwarders = []
    if names:
        with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(alive_key(name))
                pipe.llen(inflight_key(name))
                pipe.hgetall(status_key(name))
            raw = pipe.execute()
        for i, name in enumerate(names):
            alive, in_flight, status = raw[3 * i : 3 * i + 3]
            status = {_text(k): _text(v) for k, v in status.items()}
            connected = status.get("tak_connected")
            forwarders.append(
                ForwarderStatus(
                    name=name,
                    alive=bool(alive),
                    in_flight=int(in_flight),
                    tak_connected=None if connected is None else connected == "1",
                    tak_url=status.get("tak_url"),
                    since=float(status["since"]) if status.get("since") else None,
                    last_error=status.get("last_error") or None,
                    tak_confirm=status.get("tak_confirm") or None,
                )
            )
    return QueueStatus(
        depth=dict(zip(queues, map(int, depths), strict=True)),
        oldest_age_seconds=oldest,
        dead_letters=dict(zip(queues, map(int, dead), strict=True)),
        forwarders=forwarders,
    )


def _registry(redis: Redis, queue: str) -> FailedJobRegistry:
    return FailedJobRegistry(queue, connection=redis, serializer=JSONSerializer)


def _record_ids(job: Job) -> list[str]:
    return record_ids_of_job(job) or [job.id]


def _reason(job: Job) -> str:
    result = job.latest_result()
    text = result.exc_string if result is not None and result.exc_string else job.exc_info
    return (text or "").strip().splitlines()[-1] if text else "(no reason recorded)"


def dead_letters(redis: Redis, queue: str = QUEUE_NAME) -> list[DeadLetter]:
    registry = _registry(redis, queue)
    ids = registry.get_job_ids(cleanup=False)
    out = []
    for job_id, job in zip(ids, Job.fetch_many(ids, redis, serializer=JSONSerializer), strict=True):
        if job is None:
            out.append(DeadLetter(job_id, [], None, "(job data expired)"))
            continue
        failed_at = job.ended_at.timestamp() if job.ended_at else None
        out.append(DeadLetter(job_id, _record_ids(job), failed_at, _reason(job)))
    return out


def requeue(
    redis: Redis,
    job_ids: list[str] | None,
    *,
    queue: str = QUEUE_NAME,
    retention_seconds: int = 86_400,
) -> list[str]:
    """Dead letters back to the front of their queue (``None``: all of them). Records go back to
    ``queued`` with an audit entry. Returns the ids requeued; unknown ids are skipped."""
    registry = _registry(redis, queue)
    wanted = registry.get_job_ids(cleanup=False) if job_ids is None else job_ids
    records = RecordStore(redis, retention_seconds)
    audit = AuditLog(redis, max_len=100_000, retention_seconds=retention_seconds)
    done = []
    for job_id in wanted:
        if job_id not in registry:
            continue
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        record_ids = _record_ids(job) if queue == QUEUE_NAME else []
        # Records first: once requeued, a forwarder may confirm it before a later write lands.
        with redis.pipeline(transaction=False) as pipe:
            records.mark(pipe, record_ids, DeliveryState.QUEUED, error="requeued by an operator")
            audit.append_batch(pipe, AuditEvent.REQUEUED, record_ids, reason="operator requeue")
            pipe.execute()
        registry.requeue(job, at_front=True)
        done.append(job_id)
    return done


def purge_dead(
    redis: Redis, older_than_seconds: float, *, queue: str = QUEUE_NAME, now: float | None = None
) -> list[str]:
    """Delete dead letters that failed more than ``older_than_seconds`` ago."""
    now = time.time() if now is None else now
    purged = []
    for letter in dead_letters(redis, queue):
        if letter.failed_at is not None and now - letter.failed_at < older_than_seconds:
            continue
        try:
            Job.fetch(letter.job_id, connection=redis, serializer=JSONSerializer).delete()
        except NoSuchJobError:
            _registry(redis, queue).remove(letter.job_id)
        purged.append(letter.job_id)
    return purged
