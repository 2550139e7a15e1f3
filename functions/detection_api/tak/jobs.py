"""The delivery job: its payload checks, its dead-letter path, and the rq job function itself.

The forwarder (``forwarder.py``) consumes the ``tak`` queue in batches and never runs
:func:`deliver_cot`; the function exists so that a plain ``rq worker tak`` (the slow path, one
job at a time) delivers with the same checks and the same confirmation: it returns only once the
TAK server has answered the ping that followed the event, and raises otherwise so that rq's
Retry and failed-registry handling apply.
"""

from __future__ import annotations

import atexit
import os
import time
import xml.parsers.expat
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq.job import Job, get_current_job
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from detection_api.settings import Settings, get_settings
from detection_api.store.records import DeliveryState, RecordStore
from detection_api.store.tak_jobs import DELIVER_FUNC, DELIVER_FUNCS, SUPPORTED_PAYLOAD_VERSIONS
from detection_api.tak.transport import (
    MAX_UDP_EVENT_BYTES,
    StreamTakConnection,
    TakConfirmTimeout,
    TakOutage,
    TlsFiles,
    UdpTakConnection,
    open_connection,
)


class PayloadRejected(Exception):
    """A job that can never be delivered as it is: it goes to the dead letters with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeliveryPayload:
    job_id: str  # the rq job that carries it (claims, requeues and dead letters are per job)
    record_id: str
    cot: bytes  # UTF-8 CoT event, exactly what goes on the wire
    accepted_at: float


def parse_payload(
    kwargs: Mapping[str, Any],
    *,
    job_id: str,
    now: float,
    retention_seconds: float,
    max_event_bytes: int | None = None,
) -> list[DeliveryPayload]:
    """Check a job's delivery payload (``outbox``: v1 one delivery, v2 a list); raise
    PayloadRejected if it can never be delivered. A job is delivered (or dead-lettered) whole."""
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
    payloads = []
    for item in items:
        record_id = item.get("record_id") if isinstance(item, dict) else None
        cot = item.get("cot") if isinstance(item, dict) else None
        if not isinstance(record_id, str) or not record_id:
            raise PayloadRejected("payload has no record_id")
        if not isinstance(cot, str) or not cot:
            raise PayloadRejected(f"payload has no CoT event for {record_id}")
        event = cot.encode("utf-8")
        check_cot_event(event)
        if max_event_bytes is not None and len(event) > max_event_bytes:
            raise PayloadRejected(f"CoT event of {len(event)} bytes exceeds {max_event_bytes}")
        payloads.append(DeliveryPayload(job_id, record_id, event, float(accepted_at)))
    return payloads


def check_cot_event(event: bytes) -> None:
    """One well-formed ``<event>`` element with uid, type and how.

    A malformed event is not only undeliverable: taky stops parsing the rest of the connection
    after one (and crashes later on an event without ``how``), which would fail every event
    sent after it. Expat checks a ~1 KB event in ~15 us; only the root element is looked at in
    Python (a second root is a well-formedness error expat reports itself).
    """
    root: list[tuple[str, dict[str, str]]] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(name: str, attributes: dict[str, str]) -> None:
        root.append((name, attributes))
        parser.StartElementHandler = None  # the rest is checked at C speed

    parser.StartElementHandler = start
    try:
        parser.Parse(event, True)
    except xml.parsers.expat.ExpatError as exc:
        raise PayloadRejected(f"CoT event is not well-formed XML: {exc}") from exc
    if not root or root[0][0] != "event":
        raise PayloadRejected("CoT payload is not an <event> element")
    missing = [name for name in ("uid", "type", "how") if not root[0][1].get(name)]
    if missing:
        raise PayloadRejected(f"CoT event lacks {', '.join(missing)}")


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


def _decode_call(raw: bytes) -> JobCall | PayloadRejected:
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


def dead_letter(job: Job, reason: str, pipe: Pipeline) -> None:
    """rq's own worker-less failure path: status failed, into the FailedJobRegistry with the
    reason as the exception text, so ``rq requeue`` and ``FailedJobRegistry.requeue`` work."""
    job.ended_at = rq_now()
    record_job_failure(job, f"DeadLetter: {reason}", pipe)


# --- the rq job function (slow path) ------------------------------------------------------------

# One connection per process, opened by the process that uses it: a TLS socket inherited across
# fork() and used by two processes corrupts the stream.
_connection: StreamTakConnection | UdpTakConnection | None = None
_connection_pid = 0


def _process_connection(settings: Settings) -> StreamTakConnection | UdpTakConnection:
    global _connection, _connection_pid  # noqa: PLW0603 (one connection per process, by design)
    if _connection is None or _connection_pid != os.getpid():
        _connection = open_connection(
            settings.tak_url,
            TlsFiles.from_settings(settings),
            client_uid=f"detection-api-rq-{os.getpid()}",
            confirm_timeout=settings.tak_confirm_timeout_seconds,
        )
        _connection_pid = os.getpid()
        atexit.register(_close_process_connection)
    return _connection


def _close_process_connection() -> None:
    if _connection is not None and _connection_pid == os.getpid():
        _connection.close()


def deliver_cot(**kwargs: Any) -> str:
    """Deliver a job's CoT events and wait for the TAK server to confirm them (rq job function).

    Returns ``"confirmed"`` (``"sent_unconfirmed"`` over UDP). Raises PayloadRejected for a
    payload that can never be delivered, TakOutage when the server cannot be reached, and
    TakConfirmTimeout when it does not answer; rq then applies the job's Retry or fails it.
    """
    settings = get_settings()
    connection = _process_connection(settings)
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver_cot runs as an rq job")
    payloads = parse_payload(
        kwargs,
        job_id=job.id,
        now=time.time(),
        retention_seconds=settings.retention_seconds,
        max_event_bytes=None if connection.confirms else MAX_UDP_EVENT_BYTES,
    )
    records = RecordStore(job.connection, settings.retention_seconds)
    ids = [p.record_id for p in payloads]
    try:
        if not connection.connected:
            connection.connect()
        records.mark(job.connection, ids, DeliveryState.SENT)
        ping = connection.send([p.cot for p in payloads])
        connection.wait_confirmed(ping, settings.tak_confirm_timeout_seconds)
    except TakOutage as exc:
        records.mark(job.connection, ids, DeliveryState.QUEUED, error=str(exc))
        raise
    except TakConfirmTimeout as exc:
        records.mark(
            job.connection, ids, DeliveryState.RETRYING, count_attempt=True, error=str(exc)
        )
        raise
    if not connection.confirms:
        return "sent_unconfirmed"
    records.mark(job.connection, ids, DeliveryState.CONFIRMED)
    return "confirmed"
