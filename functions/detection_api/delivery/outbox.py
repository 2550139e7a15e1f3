"""The contract between ingest (the function) and delivery (the TAK forwarder): the rq queue.

Each accepted, unfiltered detection becomes one rq job on queue ``tak`` whose id is the record id.
The job's kwargs are the delivery payload (below), serialised as JSON (never pickle: a queue entry
must not be able to run code in the forwarder). Jobs never expire in the queue (``ttl=None``): an
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
DELIVER_FUNC = "detection_api.delivery.jobs.deliver_cot"
# Version of the payload below. The forwarder accepts this one and the previous one, so two
# revisions of the function can enqueue side by side during a traffic split.
PAYLOAD_VERSION = 1
SUPPORTED_PAYLOAD_VERSIONS = frozenset({PAYLOAD_VERSION})


@dataclass(frozen=True, slots=True)
class Delivery:
    record_id: str
    cot_xml: str
    accepted_at: float  # epoch seconds when the function stored it (accept-to-confirm latency)

    def as_kwargs(self) -> dict[str, object]:
        return {
            "v": PAYLOAD_VERSION,
            "record_id": self.record_id,
            "cot": self.cot_xml,
            "accepted_at": self.accepted_at,
        }


def tak_queue(redis: object) -> Queue:
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)  # type: ignore[arg-type]


def enqueue_deliveries(queue: Queue, pipe: Pipeline, deliveries: list[Delivery]) -> None:
    """Add delivery jobs to a caller's MULTI pipeline (the caller executes it)."""
    for delivery in deliveries:
        queue.enqueue_call(
            DELIVER_FUNC,
            kwargs=delivery.as_kwargs(),
            job_id=delivery.record_id,
            result_ttl=0,  # the record keeps the outcome; finished jobs would only fill memory
            failure_ttl=None,  # dead letters stay until an operator requeues or purges them
            ttl=None,
            timeout=60,
            description=f"deliver {delivery.record_id} to TAK",
            pipeline=pipe,
        )
