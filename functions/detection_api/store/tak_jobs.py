"""The contract between ingest (the function) and delivery (the TAK forwarder): the rq queue.

Accepted, unfiltered detections become rq jobs on queue ``tak``: one job carries the deliveries of
one request (up to ``MAX_DELIVERIES_PER_JOB``), so a batch of 100 CloudEvents costs one rq job, not
100. The job id is the record id of its first delivery. The job's kwargs are the delivery payload
(below), serialised as JSON (never pickle: a queue entry must not be able to run code in the
forwarder). Jobs never expire in the queue (``ttl=None``): an
outage shorter than the retention window must not lose them; the forwarder dead-letters anything
older than the retention itself, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.client import Pipeline
from rq import Queue
from rq.serializers import JSONSerializer

QUEUE_NAME = "tak"
NOTIFY_QUEUE_NAME = "notify"
DELIVER_FUNC = "detection_api.tak.jobs.deliver_cot"
# Jobs enqueued by a revision from before the package split name the function where it was then.
DELIVER_FUNCS = frozenset({DELIVER_FUNC, "detection_api.delivery.jobs.deliver_cot"})
# Version of the payload below. The forwarder accepts this one and the previous one, so two
# revisions of the function can enqueue side by side during a traffic split:
#   v1 {"v": 1, "record_id", "cot", "accepted_at"}                      one delivery per job
#   v2 {"v": 2, "accepted_at", "deliveries": [{"record_id", "cot"}, ...]}  one or more per job
PAYLOAD_VERSION = 2
PREVIOUS_PAYLOAD_VERSION = 1
SUPPORTED_PAYLOAD_VERSIONS = frozenset({PREVIOUS_PAYLOAD_VERSION, PAYLOAD_VERSION})
MAX_DELIVERIES_PER_JOB = 100


@dataclass(frozen=True, slots=True)
class Delivery:
    record_id: str
    cot_xml: str
    accepted_at: float  # epoch seconds when the function stored it (accept-to-confirm latency)


def job_kwargs(deliveries: list[Delivery]) -> dict[str, object]:
    """The v2 payload of one job."""
    return {
        "v": PAYLOAD_VERSION,
        "accepted_at": min(d.accepted_at for d in deliveries),
        "deliveries": [{"record_id": d.record_id, "cot": d.cot_xml} for d in deliveries],
    }


def tak_queue(redis: object) -> Queue:
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)  # type: ignore[arg-type]


def enqueue_deliveries(
    queue: Queue, pipe: Pipeline, deliveries: list[Delivery], *, per_job: int = 1
) -> list[str]:
    """Add delivery jobs, ``per_job`` deliveries each (at most ``MAX_DELIVERIES_PER_JOB``), to a
    caller's pipeline in MULTI mode, which ingest never executes: it hands the recorded commands
    to ``atomic.AtomicWriter`` (one Lua script). Returns the job ids."""
    size = max(1, min(per_job, MAX_DELIVERIES_PER_JOB))
    job_ids = []
    for start in range(0, len(deliveries), size):
        chunk = deliveries[start : start + size]
        job_id = chunk[0].record_id
        queue.enqueue_call(
            DELIVER_FUNC,
            kwargs=job_kwargs(chunk),
            job_id=job_id,
            result_ttl=0,  # the records keep the outcome; finished jobs would only fill memory
            failure_ttl=None,  # dead letters stay until an operator requeues or purges them
            ttl=None,
            timeout=60,
            description=f"deliver {len(chunk)} detection(s) to TAK",
            pipeline=pipe,
        )
        job_ids.append(job_id)
    return job_ids
