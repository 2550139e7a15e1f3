"""The contract between ingest (the function) and delivery (the TAK forwarder): the rq queue.

This module is the only one that writes and reads the job payload (the check that each CoT event
it carries is fit for a TAK server: ``job_events.py``).

Accepted, unfiltered detections become rq jobs on queue ``tak``: one job carries the deliveries of
one request (up to ``MAX_DELIVERIES_PER_JOB``), so a batch of 100 CloudEvents costs one rq job, not
100. The job id is the record id of its first delivery. The job's kwargs are the delivery payload
(below), serialised as JSON (never pickle: a queue entry must not be able to run code in the
forwarder). Jobs never expire in the queue (``ttl=None``): an
outage shorter than the retention window must not lose them; the forwarder dead-letters anything
older than the retention itself, with a reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, NamedTuple

import orjson
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from detection_api.store.job_events import PayloadRejected, check_cot_events

QUEUE_NAME = "tak"
NOTIFY_QUEUE_NAME = "notify"
DELIVER_FUNC = "detection_api.tak.jobs.deliver_cot"
# Jobs enqueued by a revision from before the package split name the function where it was then.
DELIVER_FUNCS = frozenset({DELIVER_FUNC, "detection_api.delivery.jobs.deliver_cot"})
# Version of the payload below. The forwarder accepts this one and the previous one, so two
# revisions of the function can enqueue side by side during a traffic split:
#   v1 {"v": 1, "record_id", "cot", "accepted_at"}                      one delivery per job
#   v2 {"v": 2, "accepted_at", "deliveries": [{"record_id", "cot"}, ...]}  one or more per job
#   v3 as v2, each delivery may add "idem" (its idempotency marker), and the records are compact
#      (records.py: the CoT only in the job, the trail derived from the record)
# v1 and v2 jobs are from revisions whose records use the long field names (``legacy``).
PAYLOAD_VERSION = 3
PREVIOUS_PAYLOAD_VERSION = 2
SUPPORTED_PAYLOAD_VERSIONS = frozenset({1, PREVIOUS_PAYLOAD_VERSION, PAYLOAD_VERSION})
MAX_DELIVERIES_PER_JOB = 100


class Delivery(NamedTuple):  # one per queued detection: a named tuple, cheaper to build
    record_id: str
    cot_xml: str
    accepted_at: float  # epoch seconds when the function stored it (accept-to-confirm latency)
    idempotency: str | None = None  # the record's marker key, extended on confirmation


def job_kwargs(deliveries: list[Delivery]) -> dict[str, object]:
    """The v3 payload of one job."""
    items: list[dict[str, str]] = []
    for d in deliveries:
        item = {"record_id": d.record_id, "cot": d.cot_xml}
        if d.idempotency:
            item["idem"] = d.idempotency
        items.append(item)
    return {
        "v": PAYLOAD_VERSION,
        "accepted_at": min(d.accepted_at for d in deliveries),
        "deliveries": items,
    }


def job_ids_for(record_ids: Sequence[str], per_job: int = MAX_DELIVERIES_PER_JOB) -> list[str]:
    """The job id of each delivery when ``enqueue_deliveries`` writes them ``per_job`` a job."""
    size = max(1, min(per_job, MAX_DELIVERIES_PER_JOB))
    return [record_ids[i - i % size] for i in range(len(record_ids))]


def tak_queue(redis: object) -> Queue:
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)  # type: ignore[arg-type]


# The job hash fields rq 3.0 (pinned) writes for ``enqueue_call`` with the options below
# (``Job.to_dict`` + status), but for created_at, enqueued_at and data. tests/test_tak_jobs.py
# compares them with what rq writes, so an rq upgrade that changes them fails there. Numbers as
# the text Redis stores: a command of text alone takes ``atomic.json_command``'s fast path (two
# ints sent a single request's job down the per-argument one, 4 us).
_JOB_FIELDS: dict[str, str] = {
    "success_callback_name": "",
    "failure_callback_name": "",
    "stopped_callback_name": "",
    "started_at": "",
    "ended_at": "",
    "last_heartbeat": "",
    "worker_name": "",
    "group_id": "",
    "origin": QUEUE_NAME,
    "timeout": "60",
    "result_ttl": "0",  # the records keep the outcome; finished jobs would only fill memory
    "status": JobStatus.QUEUED.value,
}  # no ttl and no failure_ttl: never expire queued; dead letters stay until requeued or purged


def rq_timestamp(moment: datetime) -> str:
    """A UTC time as rq writes its job stamps (``rq.utils.utcformat``: ``%Y-%m-%dT%H:%M:%S.%fZ``),
    through ``isoformat``: a third of ``strftime``'s cost."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_ZLIB_LEVEL = 1


def _job_data(call_json: bytes, deliveries: int) -> bytes | str:
    """The job's ``data`` field: the JSON-serialised call, zlib-compressed as rq stores it, except
    in a job of one delivery, which keeps it as JSON text.

    zlib's fixed cost (its state's set-up and Huffman tables, whatever the level) was 156 K of a
    single request's 2,085 K instructions (7.5%), to save about 440 of a single delivery's
    ~1,000 bytes. rq's ``Job.restore`` and ``_decode_call`` read uncompressed data (a JSON array
    starts with ``[``, never a zlib header). As text, the job's ``HSET`` travels as one JSON
    command (``atomic.json_command``) rather than argument by argument. Redis keeps such a job's
    hash as a listpack when ``hash-max-listpack-value`` allows the value (``local/redis_server.py``
    and the manifests set 2048): 1.4 KB, where the compressed one took 2.1 KB as a hash table."""
    if deliveries == 1:
        return call_json.decode()
    return _compress(call_json)


def _compress(data: bytes) -> bytes:
    """zlib, as rq's ``data`` field is, at level 1 rather than rq's 6, with a window no larger
    than the data (the same output: the window covers all of it) and, under 8 KiB, ``memLevel``
    4: a match table of 2 Ki entries instead of 32 Ki, whose set-up was most of the cost for a
    small job. CoT events repeat their structure, which level 1 already finds:
    a full job of 100 deliveries (98 KB of JSON) compresses in half the time of level 6 (589 us
    against 1,216 us here) to 10% more bytes (9.8 KB against 8.9 KB: 9 B more per detection, of
    the ~590 B a queued detection holds in Redis). Any zlib decompressor (rq's,
    ``_decode_call``) reads any level."""
    wbits = max(9, min(15, len(data).bit_length()))
    mem_level = 4 if len(data) < 8192 else 8
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, wbits, mem_level)
    return compressor.compress(data) + compressor.flush()


def enqueue_deliveries(
    queue: Queue, pipe: Pipeline, deliveries: list[Delivery], *, per_job: int = 1
) -> list[str]:
    """Add delivery jobs, ``per_job`` deliveries each (at most ``MAX_DELIVERIES_PER_JOB``), to a
    caller's pipeline, which ingest never executes: it hands the recorded commands to
    ``atomic.AtomicWriter`` (one Lua script). Returns the job ids.

    The job hashes are written directly, as rq's ``Queue.enqueue_call`` writes them (same
    fields; ``data`` the JSON-serialised call, zlib-compressed unless the job has one delivery:
    ``_job_data``), without building an rq ``Job`` per request (about a tenth of a single
    request's function time). rq, ``rq info`` and the forwarder read them as rq's own. The JSON
    is orjson's: compact separators and UTF-8 where rq's ``JSONSerializer`` writes ``", "`` and
    ``\\u`` escapes, the same value for any JSON reader (rq's included), at a tenth of the cost
    for a full job."""
    size = max(1, min(per_job, MAX_DELIVERIES_PER_JOB))
    if not deliveries:
        return []
    stamp = rq_timestamp(datetime.now(UTC))
    job_ids = []
    pipe.sadd(queue.redis_queues_keys, queue.key)  # the set ``rq info`` lists queues from
    for start in range(0, len(deliveries), size):
        chunk = deliveries[start : start + size]
        job_id = chunk[0].record_id
        call = (DELIVER_FUNC, None, (), job_kwargs(chunk))
        fields = {
            "created_at": stamp,
            "data": _job_data(orjson.dumps(call), len(chunk)),
            **_JOB_FIELDS,
            "description": f"deliver {len(chunk)} detection(s) to TAK",
            "enqueued_at": stamp,
        }
        pipe.execute_command("HSET", Job.key_for(job_id), *chain.from_iterable(fields.items()))
        job_ids.append(job_id)
    pipe.rpush(queue.key, *job_ids)
    return job_ids


# --- reading (the forwarder, the rq slow path, the notifier, the record API) ----------------------


@dataclass(frozen=True, slots=True)
class DeliveryPayload:
    job_id: str  # the rq job that carries it (claims, requeues and dead letters are per job)
    record_id: str
    cot: bytes  # UTF-8 CoT event, exactly what goes on the wire
    accepted_at: float
    legacy: bool = False  # a v1/v2 job: its record uses the long field names
    idempotency: str | None = None


@dataclass(frozen=True, slots=True)
class JobCall:
    """The part of an rq job the forwarder needs: which function, with which arguments."""

    func_name: str
    kwargs: Mapping[str, Any]


def read_job_calls(redis: Redis, job_ids: Sequence[str]) -> list[JobCall | PayloadRejected | None]:
    """The calls of many jobs in one round trip (``None``: the job hash does not exist).

    Reads only the job's ``data`` field. ``Job.fetch_many`` reads and restores every field (two
    date parses per job) and cost about as much as the whole rest of a batch; the decoding below
    is the one ``Job.restore`` performs (``data`` = zlib of the serialised call) for rq 3.0.
    """
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "data")
        raw_values = pipe.execute()
    return [None if raw is None else _decode_call(raw) for raw in raw_values]


VANISHED = "job data missing from Redis (deleted or evicted)"


def read_batch(
    redis: Redis,
    job_ids: Sequence[str],
    *,
    now: float,
    retention_seconds: float,
    max_event_bytes: int | None = None,
) -> tuple[list[DeliveryPayload], dict[str, str]]:
    """The deliveries of claimed jobs, in order, and the jobs that can never be delivered (job
    id -> reason), read in one round trip."""
    payloads: list[DeliveryPayload] = []
    rejected: dict[str, str] = {}
    for job_id, call in zip(job_ids, read_job_calls(redis, job_ids), strict=True):
        if call is None or isinstance(call, PayloadRejected):
            rejected[job_id] = VANISHED if call is None else call.reason
            continue
        try:
            payloads.extend(
                parse_job_call(
                    job_id,
                    call,
                    now=now,
                    retention_seconds=retention_seconds,
                    max_event_bytes=max_event_bytes,
                )
            )
        except PayloadRejected as exc:
            rejected[job_id] = exc.reason
    return payloads, rejected


def _decode_call(raw: bytes) -> JobCall | PayloadRejected:
    if raw[:1] == b"[":  # a job of one delivery, as JSON text (``_job_data``): never zlib's header
        data = raw
    else:
        try:
            data = zlib.decompress(raw)
        except zlib.error:
            data = raw  # rq's fallback for uncompressed data
    try:
        func_name, _instance, _args, kwargs = JSONSerializer.loads(data)
    except (ValueError, TypeError) as exc:
        return PayloadRejected(f"job payload cannot be decoded: {exc}")
    if not isinstance(func_name, str) or not isinstance(kwargs, dict):
        return PayloadRejected("job payload is not a function call")
    return JobCall(func_name, kwargs)


def parse_job_call(
    job_id: str,
    call: JobCall,
    *,
    now: float,
    retention_seconds: float,
    max_event_bytes: int | None = None,
) -> list[DeliveryPayload]:
    """Check a job taken from the ``tak`` queue (its function, then its payload)."""
    if call.func_name not in DELIVER_FUNCS:
        raise PayloadRejected(f"job runs {call.func_name!r}, not {DELIVER_FUNC}")
    return parse_payload(
        call.kwargs,
        job_id=job_id,
        now=now,
        retention_seconds=retention_seconds,
        max_event_bytes=max_event_bytes,
    )


def parse_payload(
    kwargs: Mapping[str, Any],
    *,
    job_id: str,
    now: float,
    retention_seconds: float,
    max_event_bytes: int | None = None,
) -> list[DeliveryPayload]:
    """Check a job's delivery payload (v1 one delivery, v2/v3 a list); raise PayloadRejected if
    it can never be delivered. A job is delivered (or dead-lettered) whole."""
    version = kwargs.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise PayloadRejected(f"payload has no integer version 'v' (got {version!r})")
    if version not in SUPPORTED_PAYLOAD_VERSIONS:
        newest = max(SUPPORTED_PAYLOAD_VERSIONS)
        if version > newest:
            raise PayloadRejected(
                f"payload version {version} is newer than this forwarder supports "
                f"({sorted(SUPPORTED_PAYLOAD_VERSIONS)}): upgrade the forwarder, then requeue"
            )
        raise PayloadRejected(f"payload version {version} is no longer supported")
    accepted_at = kwargs.get("accepted_at")
    if not isinstance(accepted_at, int | float) or isinstance(accepted_at, bool):
        raise PayloadRejected("payload has no numeric accepted_at")
    if now - accepted_at > retention_seconds:
        raise PayloadRejected(
            f"retention exceeded: accepted {now - accepted_at:.0f} s ago, "
            f"RETENTION_SECONDS={retention_seconds:g}"
        )
    if version == 1:
        items: Any = [{"record_id": kwargs.get("record_id"), "cot": kwargs.get("cot")}]
        if kwargs.get("record_id") != job_id:
            raise PayloadRejected(f"payload record_id {kwargs.get('record_id')} is not the job id")
    else:
        items = kwargs.get("deliveries")
        if not isinstance(items, list) or not items:
            raise PayloadRejected("payload has no deliveries")
    legacy = version < PAYLOAD_VERSION
    accepted = float(accepted_at)
    payloads = []
    for item in items:
        if not isinstance(item, dict):
            raise PayloadRejected("payload has no record_id")
        record_id, cot, idem = item.get("record_id"), item.get("cot"), item.get("idem")
        if not isinstance(record_id, str) or not record_id:
            raise PayloadRejected("payload has no record_id")
        if not isinstance(cot, str) or not cot:
            raise PayloadRejected(f"payload has no CoT event for {record_id}")
        event = cot.encode("utf-8")
        if max_event_bytes is not None and len(event) > max_event_bytes:
            raise PayloadRejected(f"CoT event of {len(event)} bytes exceeds {max_event_bytes}")
        idem = idem if isinstance(idem, str) and idem else None
        payloads.append(DeliveryPayload(job_id, record_id, event, accepted, legacy, idem))
    check_cot_events([p.cot for p in payloads])
    return payloads


def cot_of(redis: Redis, job_id: str, record_id: str) -> str | None:
    """A queued record's CoT, from its delivery job (None when the job is gone)."""
    return cots_of(redis, {record_id: job_id}).get(record_id)


def cots_of(redis: Redis, job_of: Mapping[str, str]) -> dict[str, str]:
    """Queued records' CoT (record id -> CoT) from their delivery jobs (``job_of``: record id ->
    job id), each job read and decoded once, in one round trip: the records of a redelivered list
    share one job, which was read and decompressed whole once per record (100 round trips and
    100 decodings of a 100-delivery job). Records whose job or delivery is gone are left out."""
    wanted: dict[str, set[str]] = {}
    for record_id, job_id in job_of.items():
        wanted.setdefault(job_id, set()).add(record_id)
    if not wanted:
        return {}
    cots: dict[str, str] = {}
    for records, call in zip(wanted.values(), read_job_calls(redis, list(wanted)), strict=True):
        if not isinstance(call, JobCall):
            continue
        for item in _delivery_items(call.kwargs):
            record_id, cot = item.get("record_id"), item.get("cot")
            if isinstance(record_id, str) and record_id in records and isinstance(cot, str):
                cots.setdefault(record_id, cot)  # (a malformed job may name a record twice)
    return cots


def _delivery_items(kwargs: Any) -> list[dict[str, Any]]:
    """A job's deliveries, read leniently: the objects of its ``deliveries`` list (payload v3),
    or the call's own arguments (one delivery, earlier payloads)."""
    if not isinstance(kwargs, dict):
        return []
    items = kwargs.get("deliveries")
    if isinstance(items, list):
        return [item for item in items if isinstance(item, dict)]
    return [kwargs]


def record_ids_of_kwargs(kwargs: Any) -> list[str]:
    """The records a job carries, read leniently (it may be the malformed job being rejected)."""
    return [
        item["record_id"]
        for item in _delivery_items(kwargs)
        if isinstance(item.get("record_id"), str)
    ]


def record_ids_of_job(job: Job) -> list[str]:
    """The records a job carries ([] when its payload cannot be decoded)."""
    try:
        kwargs = job.kwargs
    except Exception:  # an undecodable job is still dead-lettered or listed, under its own id
        return []
    return record_ids_of_kwargs(kwargs)


def dead_letter(job: Job, reason: str, pipe: Pipeline) -> None:
    """rq's own worker-less failure path: status failed, into the FailedJobRegistry with the
    reason as the exception text, so ``rq requeue`` and ``FailedJobRegistry.requeue`` work."""
    job.ended_at = rq_now()
    record_job_failure(job, f"DeadLetter: {reason}", pipe)
