"""The rq job function of the slow path (the job payload is written and read in
``store/tak_jobs.py``).

The forwarder (``forwarder.py``) consumes the ``tak`` queue in batches and never runs
:func:`deliver_cot`; the function exists so that a plain ``rq worker tak`` (one job at a time)
delivers with the same checks and the same confirmation: it returns only once the TAK server has
answered the ping that followed the event, and raises otherwise so that rq's Retry and
failed-registry handling apply.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Any

from redis import Redis
from rq.job import get_current_job

from detection_api.settings import Settings, get_settings
from detection_api.store.records import DeliveryState, RecordStore
from detection_api.store.tak_jobs import parse_payload
from detection_api.tak.transport import (
    MAX_UDP_EVENT_BYTES,
    StreamTakConnection,
    TakConfirmTimeout,
    TakOutage,
    TlsFiles,
    UdpTakConnection,
    open_connection,
)

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

    This is an entry point: rq imports it by name and calls it with the job's payload only, so
    it reads the settings here, at its edge (rq passes nothing else to a job function), and
    hands them to :func:`deliver`.
    """
    settings = get_settings()
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver_cot runs as an rq job")
    return deliver(kwargs, job_id=job.id, redis=job.connection, settings=settings)


def deliver(kwargs: dict[str, Any], *, job_id: str, redis: Redis, settings: Settings) -> str:
    """Returns ``"confirmed"`` (``"sent_unconfirmed"`` over UDP). Raises PayloadRejected for a
    payload that can never be delivered, TakOutage when the server cannot be reached, and
    TakConfirmTimeout when it does not answer; rq then applies the job's Retry or fails it."""
    connection = _process_connection(settings)
    payloads = parse_payload(
        kwargs,
        job_id=job_id,
        now=time.time(),
        retention_seconds=settings.retention_seconds,
        max_event_bytes=None if connection.confirms else MAX_UDP_EVENT_BYTES,
    )
    records = RecordStore(redis, settings.retention_seconds)
    ids = [p.record_id for p in payloads]
    try:
        if not connection.connected:
            connection.connect()
        records.mark(redis, ids, DeliveryState.SENT)
        ping = connection.send([p.cot for p in payloads])
        connection.wait_confirmed(ping, settings.tak_confirm_timeout_seconds)
    except TakOutage as exc:
        records.mark(redis, ids, DeliveryState.QUEUED, error=str(exc))
        raise
    except TakConfirmTimeout as exc:
        records.mark(redis, ids, DeliveryState.RETRYING, count_attempt=True, error=str(exc))
        raise
    if not connection.confirms:
        return "sent_unconfirmed"
    done = time.time()
    records.mark(redis, ids, DeliveryState.CONFIRMED, now=done)
    markers = [p.idempotency for p in payloads if p.idempotency]
    records.mark_confirmed(redis, [], markers, now=done, ttl_seconds=0)
    return "confirmed"
