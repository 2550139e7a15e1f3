"""What the forwarder writes to Redis when a batch is sent, confirmed, interrupted by an outage,
left unconfirmed by a live connection, or can never be delivered (dead letters).

Each outcome is a few script calls per batch, not per detection: records are marked in chunks
(``records.py``), the audit stream gets one entry per batch (``audit.py``), claims are released or
returned by ``claims.py``. Records of earlier revisions (jobs v1/v2, ``legacy``) take the general
``mark`` path; compact records the one-command-per-record hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from detection_api.alerts.notify import dead_letter_payload, enqueue_notification
from detection_api.store.audit import AuditEvent, AuditLog
from detection_api.store.claims import ClaimLedger
from detection_api.store.records import DeliveryState, RecordStore, record_key
from detection_api.store.tak_jobs import DeliveryPayload, dead_letter, record_ids_of_job
from detection_api.tak.forwarder_metrics import ForwarderMetrics

log = logging.getLogger(__name__)


def job_ids(payloads: Sequence[DeliveryPayload]) -> list[str]:
    """The distinct jobs of some deliveries, in queue order (a v2/v3 job carries several)."""
    return list(dict.fromkeys(p.job_id for p in payloads))


@dataclass(frozen=True, slots=True)
class Split:
    """Record ids of some deliveries by encoding (compact: this revision's, legacy: earlier)."""

    compact: list[str]
    legacy: list[str]
    markers: list[str]  # idempotency markers of the compact records

    @classmethod
    def of(cls, payloads: Sequence[DeliveryPayload]) -> Split:
        compact = [p.record_id for p in payloads if not p.legacy]
        legacy = [p.record_id for p in payloads if p.legacy]
        markers = [p.idempotency for p in payloads if p.idempotency and not p.legacy]
        return cls(compact, legacy, markers)


class Outcomes:
    def __init__(
        self,
        redis: Redis,
        records: RecordStore,
        audit: AuditLog,
        ledger: ClaimLedger,
        metrics: ForwarderMetrics,
        *,
        confirmed_retention_seconds: int,
        max_attempts: int,
        notify_queue: Queue | None,
    ) -> None:
        self.redis = redis
        self.records = records
        self.audit = audit
        self.ledger = ledger
        self.metrics = metrics
        self.confirmed_retention_seconds = confirmed_retention_seconds
        self.max_attempts = max_attempts
        self.notify_queue = notify_queue

    def sent(self, pipe: Pipeline, payloads: Sequence[DeliveryPayload], now: float) -> None:
        split = Split.of(payloads)
        self.records.mark_sent(pipe, split.compact, now)
        self.records.mark(pipe, split.legacy, DeliveryState.SENT, now=now)

    def delivered(
        self, payloads: Sequence[DeliveryPayload], *, confirmed: bool, now: float | None = None
    ) -> None:
        """Records confirmed (or, unconfirmable, left ``sent``), jobs deleted and claims released,
        in one transaction."""
        done_at = time.time() if now is None else now
        record_ids = [p.record_id for p in payloads]
        with self.redis.pipeline(transaction=True) as pipe:
            if confirmed:
                keep = self.confirmed_retention_seconds
                split = Split.of(payloads)
                self.records.mark_confirmed(
                    pipe, split.compact, split.markers, now=done_at, ttl_seconds=keep
                )
                self.records.mark(
                    pipe, split.legacy, DeliveryState.CONFIRMED, now=done_at, ttl_seconds=keep
                )
                self.audit.append_batch(
                    pipe,
                    AuditEvent.CONFIRMED,
                    record_ids,
                    now=done_at,
                    ttl_seconds=keep,
                    trail_ids=split.legacy,  # compact records derive it from confirmed_at
                )
            self.ledger.release_delivered(pipe, job_ids(payloads))
            pipe.execute()
        self.metrics.batch_size.observe(len(record_ids))
        if confirmed:
            self.metrics.confirmed((p.accepted_at for p in payloads), done_at)
        else:
            self.metrics.delivered("sent_unconfirmed", len(record_ids))

    def after_outage(self, payloads: Sequence[DeliveryPayload], reason: str) -> int:
        """Back to the front of the queue, no attempt counted. Returns the jobs returned."""
        record_ids = [p.record_id for p in payloads]
        with self.redis.pipeline(transaction=False) as pipe:
            self.records.mark(pipe, record_ids, DeliveryState.QUEUED, error=f"TAK outage: {reason}")
            self.audit.append_batch(pipe, AuditEvent.REQUEUED, record_ids, reason=reason)
            pipe.execute()
        return self.requeue(job_ids(payloads), "TAK outage")

    def after_confirm_timeout(
        self, payloads: Sequence[DeliveryPayload], reason: str
    ) -> tuple[int, int]:
        """One attempt for every unconfirmed event; jobs out of attempts become dead letters,
        the rest go back to the front. Returns (jobs retried, jobs dead-lettered)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for p in payloads:
                pipe.hget(record_key(p.record_id), "attempts")
            attempts = [int(a or 0) + 1 for a in pipe.execute()]
        # A job's events always travel together: the job is out of attempts when one of them is.
        exhausted = {
            p.job_id for p, n in zip(payloads, attempts, strict=True) if n >= self.max_attempts
        }
        retry_jobs = [j for j in job_ids(payloads) if j not in exhausted]
        dead_reason = f"no confirmation after {self.max_attempts} attempt(s): {reason}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # rq's enqueue (dead-letter notifications) needs MULTI mode
            self.records.mark(
                pipe,
                [p.record_id for p in payloads],
                DeliveryState.RETRYING,
                count_attempt=True,
                error=f"not confirmed: {reason}",
            )
            self.audit.append_batch(
                pipe,
                AuditEvent.RETRIED,
                [p.record_id for p in payloads if p.job_id not in exhausted],
                reason=reason,
            )
            dead = self.dead_letter(pipe, dict.fromkeys(sorted(exhausted), dead_reason))
            pipe.execute()
        self.count_dead(dead)
        self.requeue(retry_jobs, "confirmation timeout", outcome="retried")
        return len(retry_jobs), len(exhausted)

    def dead_letter(self, pipe: Pipeline, reasons: dict[str, str]) -> int:
        """Failed jobs into rq's failed registry, records dead with the reason, claims dropped
        (a dead letter must never be requeued by a later recovery). Returns how many."""
        if not reasons:
            return 0
        ids = list(reasons)
        jobs = Job.fetch_many(ids, self.redis, serializer=JSONSerializer)
        with self.redis.pipeline(transaction=False) as read:
            for job_id in ids:
                read.hget(record_key(job_id), "state")
            record_states = [s.decode() if s else None for s in read.execute()]
        dead = 0
        for job_id, job, state in zip(ids, jobs, record_states, strict=True):
            reason = reasons[job_id]
            if job is None and state == DeliveryState.CONFIRMED:
                # Delivered by an earlier claim whose copy a reaper had also put back: done.
                log.info("job %s already delivered, dropping its second copy", job_id)
                continue
            log.error("dead letter %s: %s", job_id, reason)
            record_ids = [job_id]
            if job is not None:  # a vanished job has nothing left to requeue
                record_ids = record_ids_of_job(job) or record_ids
                dead_letter(job, reason, pipe)
            self.records.mark(pipe, record_ids, DeliveryState.DEAD, error=reason)
            self.audit.append_batch(pipe, AuditEvent.DEAD_LETTERED, record_ids, reason=reason)
            enqueue_notification(
                self.notify_queue,
                "dead_letter",
                dead_letter_payload(record_id=job_id, reason=reason),
                pipeline=pipe,
            )
            dead += len(record_ids)
        self.ledger.forget(pipe, ids)
        return dead

    def count_dead(self, count: int) -> None:
        if count:
            self.metrics.delivered("dead", count)
            self.metrics.dead_letters_total.inc(count)

    def requeue(self, ids: list[str], why: str, outcome: str = "requeued") -> int:
        returned = self.ledger.requeue(ids)
        self.metrics.delivered(outcome, returned)
        if returned:
            log.info("%d claimed job(s) back at the front of the queue (%s)", returned, why)
        return returned

    def requeue_everything_claimed(self, why: str) -> int:
        returned = self.ledger.requeue_inflight()
        self.metrics.delivered("requeued", returned)
        if returned:
            log.info("%d claimed job(s) back at the front of the queue (%s)", returned, why)
        return returned
