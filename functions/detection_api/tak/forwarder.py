"""The TAK forwarder: a batching consumer of rq's ``tak`` queue with confirmed, at-least-once
delivery over one long-lived connection.

A stock rq job execution costs ~57 Redis commands; one per detection cannot pass ~150/s. The
forwarder keeps rq's data structures (jobs, the queue list, the worker registry, the failed
registry as dead letters with requeue) and amortises the per-job cost over a batch:

1. claim up to ``FORWARDER_BATCH_SIZE`` ids from the head of the queue into this forwarder's
   in-flight list (atomic; BLMOVE waits when the queue is empty),
2. fetch the jobs in one pipeline, dead-letter the ones that can never be delivered,
3. mark the records ``sent``, write every event and then ONE ping,
4. on the pong: records ``confirmed``, jobs deleted (``result_ttl=0``), claim released, in one
   transaction. Nothing counts as delivered before the pong.

Up to ``window`` (2) batches are written before the oldest pong is awaited, so Redis work for
the next batch overlaps the server's processing of the previous one (pongs come back in order).

An outage (refused, reset, TLS failure) puts the batch back at the front of the queue, counts no
attempt and pauses the forwarder (capped exponential backoff with jitter) until the server is
back. A live connection that does not answer in time costs each event one attempt; after
``MAX_DELIVERY_ATTEMPTS`` an event is dead-lettered. UDP is best effort: records end ``sent``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from detection_api.alerts.notify import dead_letter_payload, enqueue_notification
from detection_api.backoff import Backoff
from detection_api.settings import Settings
from detection_api.store.audit import AuditEvent, AuditLog
from detection_api.store.claims import ClaimLedger
from detection_api.store.records import DeliveryState, RecordStore, record_key
from detection_api.store.tak_jobs import tak_queue
from detection_api.tak.confirm import ConfirmMode
from detection_api.tak.forwarder_metrics import ForwarderMetrics
from detection_api.tak.jobs import (
    DeliveryPayload,
    PayloadRejected,
    dead_letter,
    parse_job_call,
    read_job_calls,
)
from detection_api.tak.status import TakStatus
from detection_api.tak.transport import (
    CONNECT_TIMEOUT_SECONDS,
    FIRST_PONG_STREAMING_MAX_SECONDS,
    MAX_UDP_EVENT_BYTES,
    Scheme,
    TakConfirmTimeout,
    TakConnection,
    TakOutage,
)

log = logging.getLogger(__name__)

VANISHED = "job data missing from Redis (deleted or evicted)"


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    batch_size: int = 200
    confirm_timeout_seconds: float = 10.0
    reconnect_max_seconds: float = 30.0
    reconnect_base_seconds: float = 0.5
    max_delivery_attempts: int = 10
    retention_seconds: float = 86_400.0
    confirmed_retention_seconds: int = 3600
    # A forwarder whose alive key is older than this is presumed dead and its claims returned.
    alive_ttl_seconds: float = 10.0
    # How often the alive key is refreshed and dead forwarders' claims are looked for.
    housekeeping_interval_seconds: float = 2.0
    claim_block_seconds: int = 1
    rq_worker_ttl_seconds: int = 30
    # Batches written but not yet confirmed. With 2, the next batch is fetched from Redis and
    # written while the server still processes the previous one, so neither side waits for the
    # other; pongs come back in order, one per batch.
    window: int = 2
    disconnect_alert_seconds: float = 60.0
    audit_max_len: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ForwarderConfig:
        return cls(
            batch_size=settings.forwarder_batch_size,
            confirm_timeout_seconds=settings.tak_confirm_timeout_seconds,
            reconnect_max_seconds=settings.tak_reconnect_max_seconds,
            max_delivery_attempts=settings.max_delivery_attempts,
            retention_seconds=float(settings.retention_seconds),
            confirmed_retention_seconds=settings.confirmed_retention_seconds,
            disconnect_alert_seconds=settings.tak_disconnect_alert_seconds,
            audit_max_len=settings.audit_max_len,
        )

    @property
    def max_loop_block_seconds(self) -> float:
        """Longest the main loop can block in one step: writing a batch then waiting for its
        pong, or connecting (TCP, TLS) then reading up to the first pong."""
        return max(
            2 * self.confirm_timeout_seconds,
            2 * CONNECT_TIMEOUT_SECONDS + FIRST_PONG_STREAMING_MAX_SECONDS,
            float(self.claim_block_seconds),
        )

    @property
    def health_max_age_seconds(self) -> float:
        return 3 * self.max_loop_block_seconds


def _record_ids_of(job: Job) -> list[str]:
    """The records a job carries, read leniently (it may be the malformed job being rejected)."""
    try:
        kwargs = job.kwargs
    except Exception:  # an undecodable job is still dead-lettered, under its own id
        return []
    if not isinstance(kwargs, dict):
        return []
    items = kwargs.get("deliveries")
    if isinstance(items, list):
        return [
            i["record_id"]
            for i in items
            if isinstance(i, dict) and isinstance(i.get("record_id"), str)
        ]
    return [kwargs["record_id"]] if isinstance(kwargs.get("record_id"), str) else []


def default_forwarder_name() -> str:
    """Unique per process: a restarted forwarder must not wait for its old name to expire."""
    return f"tak-forwarder.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class _SentBatch:
    payloads: list[DeliveryPayload]
    ping_seq: int

    @property
    def record_ids(self) -> list[str]:
        return [p.record_id for p in self.payloads]

    @property
    def job_ids(self) -> list[str]:
        return _job_ids(self.payloads)


def _job_ids(payloads: list[DeliveryPayload]) -> list[str]:
    """The distinct jobs of some deliveries, in queue order (a v2 job carries several)."""
    return list(dict.fromkeys(p.job_id for p in payloads))


class Forwarder:
    def __init__(
        self,
        redis: Redis,
        connection: TakConnection,
        config: ForwarderConfig,
        metrics: ForwarderMetrics | None = None,
        name: str | None = None,
        *,
        notify_queue: Queue | None = None,
    ) -> None:
        self.redis = redis
        self.connection = connection
        self.config = config
        self.metrics = metrics or ForwarderMetrics(
            heartbeat_max_age_seconds=config.health_max_age_seconds
        )
        self.name = name or default_forwarder_name()
        self.queue = tak_queue(redis)
        self.records = RecordStore(redis, int(config.retention_seconds))
        self.ledger = ClaimLedger(redis, self.queue.key, self.name, config.alive_ttl_seconds)
        self.failed_registry_key = FailedJobRegistry(self.queue.name, connection=redis).key
        self.notify_queue = notify_queue  # None: Discord notifications are off
        self.audit = AuditLog(
            redis, max_len=config.audit_max_len, retention_seconds=int(config.retention_seconds)
        )
        self.tak_status = TakStatus(
            redis,
            self.name,
            str(connection.endpoint),
            self.metrics,
            notify_queue=notify_queue,
            alert_after_seconds=config.disconnect_alert_seconds,
            status_ttl_seconds=int(3 * config.alive_ttl_seconds),
        )
        udp = connection.endpoint.scheme is Scheme.UDP
        self._max_event_bytes = MAX_UDP_EVENT_BYTES if udp else None
        self._stop = threading.Event()
        self._housekeeping_stop = threading.Event()
        self._housekeeping: threading.Thread | None = None
        self._worker: Worker | None = None
        self._tak_backoff = Backoff(config.reconnect_base_seconds, config.reconnect_max_seconds)
        self._redis_backoff = Backoff(config.reconnect_base_seconds, config.reconnect_max_seconds)
        self._ever_connected = False
        self._claims_uncertain = False  # a Redis error may have left ids in our in-flight list
        self._pending: deque[_SentBatch] = deque()  # written, waiting for their pongs (in order)
        # Jobs carry 1..100 events (v2): claim about batch_size events, not batch_size jobs.
        self._events_per_job = 1.0

    # --- life cycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; the batch in flight is still confirmed (SIGTERM)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, burst: bool = False) -> int:
        """Forward until stopped (or, with ``burst``, until the queue is empty). Returns 0."""
        log.info(
            "forwarder %s: queue %s -> %s, batches of up to %d",
            self.name,
            self.queue.name,
            self.connection.endpoint,
            self.config.batch_size,
        )
        if self.connection.endpoint.scheme is Scheme.UDP:
            log.warning(
                "TAK_URL is UDP: delivery is best effort. Datagrams cannot be confirmed, records "
                "end in state 'sent', never 'confirmed'; use tls:// or tcp:// for confirmation"
            )
        if not self._start():
            self._shutdown()
            return 0
        try:
            while not (self._stop.is_set() and not self._pending):
                self.metrics.heartbeat.beat()
                try:
                    more = self._step(burst=burst)
                    self.metrics.sync_anomalies(self.connection.counters())
                    if not more:
                        break
                    self._redis_backoff.reset()
                except RedisError as exc:
                    # Whatever was in flight is abandoned: its ids go back to the queue once Redis
                    # answers again (at least once: some may be delivered twice).
                    self._pending.clear()
                    self._claims_uncertain = True
                    delay = self._redis_backoff.next_delay()
                    log.error("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                    self._pause(delay)
        finally:
            self._shutdown()
        return 0

    def _step(self, *, burst: bool) -> bool:
        """Claim and send one batch if the window has room, else confirm the oldest one.
        Returns False when there is nothing more to do (stopping, or a drained queue in burst)."""
        if not self._pending:
            if not self._ensure_connected():
                return False
            if self._claims_uncertain:
                self._requeue_everything_claimed("recovering after a Redis error")
                self._claims_uncertain = False
        if not self._stop.is_set() and len(self._pending) < self.config.window:
            # Block on an empty queue only when there is no pong to collect.
            block = 0 if (self._pending or burst) else self.config.claim_block_seconds
            jobs_wanted = max(1, round(self.config.batch_size / self._events_per_job))
            ids = self.ledger.claim(jobs_wanted, block)
            if ids:
                self._send_batch(ids)
                return True
            if not self._pending:
                self._drain_while_idle()
                return not burst
        if self._pending:
            self._confirm_oldest()
        return True

    def _start(self) -> bool:
        """Register with rq (so ``rq info`` lists this forwarder), claim liveness, and return the
        claims of forwarders that died. Retries while Redis is down."""
        while not self._stop.is_set():
            self.metrics.heartbeat.beat()
            try:
                self._worker = Worker(
                    [self.queue],
                    name=self.name,
                    connection=self.redis,
                    serializer=JSONSerializer,
                    worker_ttl=self.config.rq_worker_ttl_seconds,
                )
                self._worker.register_birth()
                self.ledger.refresh_alive()
                self.tak_status.refresh()
                self._reap()
                break
            except RedisError as exc:
                delay = self._redis_backoff.next_delay()
                log.error("Redis unavailable at start-up (%s); retrying in %.1f s", exc, delay)
                self._pause(delay)
        else:
            return False
        self._redis_backoff.reset()
        self._housekeeping = threading.Thread(
            target=self._housekeeping_loop, name="forwarder-housekeeping", daemon=True
        )
        self._housekeeping.start()
        return True

    def _shutdown(self) -> None:
        self._housekeeping_stop.set()
        if self._housekeeping is not None:
            self._housekeeping.join(timeout=5)
        try:
            returned = self.ledger.retire()
            if returned:
                log.info("returned %d claimed job(s) to the front of the queue", returned)
                self.metrics.delivered("requeued", returned)
            if self._worker is not None:
                self._worker.register_death()
        except RedisError as exc:
            # The claims stay in Redis; another forwarder returns them once our alive key expires.
            log.error("Redis unavailable during shutdown (%s): claims are left to the reaper", exc)
        self.connection.close()
        self.metrics.tak_connected.set(0)
        log.info("forwarder %s stopped", self.name)

    def _pause(self, seconds: float) -> None:
        """Sleep, but stay responsive to SIGTERM and keep the liveness heartbeat fresh."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self.metrics.heartbeat.beat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, 1.0))

    def _housekeeping_loop(self) -> None:
        """Keeps this process's alive key fresh while the main loop blocks (a pong wait can be
        longer than the key's TTL), returns dead forwarders' claims, beats rq's heartbeat."""
        last_rq_heartbeat = time.monotonic()
        while not self._housekeeping_stop.wait(self.config.housekeeping_interval_seconds):
            try:
                self.ledger.refresh_alive()
                self.tak_status.refresh()
                self._reap()
                if time.monotonic() - last_rq_heartbeat >= self.config.rq_worker_ttl_seconds / 3:
                    if self._worker is not None:
                        self._worker.heartbeat()
                    last_rq_heartbeat = time.monotonic()
            except RedisError as exc:
                log.debug("housekeeping skipped, Redis unavailable: %s", exc)

    def _reap(self) -> None:
        for reaped in self.ledger.reap_dead_forwarders():
            self.metrics.delivered("requeued", reaped.job_count)

    # --- TAK connection ---------------------------------------------------------------------

    def _ensure_connected(self) -> bool:
        """Connect (again) if needed; while the server is unreachable nothing is claimed."""
        while not self._stop.is_set():
            if self.connection.connected:
                return True
            try:
                self.connection.connect()
            except TakOutage as exc:
                self.tak_status.down(f"[{exc.kind.value}] {exc.message}")
                delay = self._tak_backoff.next_delay()
                log.error(
                    "TAK server %s unavailable [%s]: %s; not dequeuing, retry %d in %.1f s",
                    self.connection.endpoint,
                    exc.kind.value,
                    exc.message,
                    self._tak_backoff.failures,
                    delay,
                )
                self._pause(delay)
                continue
            self._announce_mode()
            if self._ever_connected:
                self.metrics.tak_reconnects.inc()
            self._ever_connected = True
            self._tak_backoff.reset()
            log.info("connected to TAK server %s", self.connection.endpoint)
            return True
        return False

    def _drain_while_idle(self) -> None:
        """Read what the server sent while there is nothing to deliver (other clients' events,
        unsolicited pongs): it must not pile up, nor be mistaken later for an answer."""
        try:
            self.connection.drain()
        except TakOutage as exc:
            self.tak_status.down(f"[{exc.kind.value}] {exc.message}")
            log.error("lost the idle TAK connection [%s]: %s", exc.kind.value, exc.message)

    def _announce_mode(self) -> None:
        mode = self.connection.mode
        self.tak_status.up(confirm_mode=mode.value)
        self.metrics.set_confirm_mode(mode.value)
        requested = getattr(self.connection, "requested_mode", mode)
        if mode is ConfirmMode.NONE and requested is not ConfirmMode.NONE:
            log.warning(
                "TAK server %s cannot confirm delivery: it answers no ping and relays nothing "
                "back to a second connection. Detections are still sent, but records end 'sent', "
                "never 'confirmed' (TAK_CONFIRM=%s)",
                self.connection.endpoint,
                requested.value,
            )
        else:
            log.info("TAK confirmation mode: %s (TAK_CONFIRM=%s)", mode.value, requested.value)

    # --- batches ----------------------------------------------------------------------------

    def _send_batch(self, ids: list[str]) -> None:
        """Fetch and check the claimed jobs, dead-letter the undeliverable, mark the rest sent and
        write them followed by one ping."""
        now = time.time()
        payloads: list[DeliveryPayload] = []
        rejected: dict[str, str] = {}  # job id -> reason
        for job_id, call in zip(ids, read_job_calls(self.redis, ids), strict=True):
            if call is None or isinstance(call, PayloadRejected):
                rejected[job_id] = VANISHED if call is None else call.reason
                continue
            try:
                payloads.extend(
                    parse_job_call(
                        job_id,
                        call,
                        now=now,
                        retention_seconds=self.config.retention_seconds,
                        max_event_bytes=self._max_event_bytes,
                    )
                )
            except PayloadRejected as exc:
                rejected[job_id] = exc.reason
        delivered_jobs = len(ids) - len(rejected)
        if delivered_jobs:
            self._events_per_job = 0.5 * self._events_per_job + 0.5 * len(payloads) / delivered_jobs

        stopping = self._stop.is_set()  # SIGTERM after the claim: write nothing new
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # rq's enqueue (dead-letter notifications) needs MULTI mode
            dead = self._dead_letter(pipe, rejected)
            if payloads and not stopping:
                self.records.mark(pipe, [p.record_id for p in payloads], DeliveryState.SENT)
            pipe.execute()
        self._count_dead(dead)
        if not payloads:
            return
        if stopping:
            self._requeue(_job_ids(payloads), "stopping")
            return
        try:
            ping_seq = self.connection.send([p.cot for p in payloads])
        except TakOutage as exc:
            self._after_outage(payloads, exc)
            return
        except TakConfirmTimeout as exc:
            self._after_confirm_timeout(payloads, exc)
            return
        batch = _SentBatch(payloads, ping_seq)
        if self.connection.confirms:
            self._pending.append(batch)
        else:
            self._after_delivery(batch)

    def _confirm_oldest(self) -> None:
        batch = self._pending[0]
        try:
            self.connection.wait_confirmed(batch.ping_seq, self.config.confirm_timeout_seconds)
        except TakOutage as exc:
            self._after_outage([], exc)
            return
        except TakConfirmTimeout as exc:
            self._after_confirm_timeout([], exc)
            return
        self._pending.popleft()
        self._after_delivery(batch)

    def _after_delivery(self, batch: _SentBatch) -> None:
        done_at = time.time()
        record_ids = batch.record_ids
        with self.redis.pipeline(transaction=True) as pipe:
            if self.connection.confirms:
                keep = self.config.confirmed_retention_seconds
                self.records.mark(
                    pipe, record_ids, DeliveryState.CONFIRMED, now=done_at, ttl_seconds=keep
                )
                self.audit.append_batch(
                    pipe, AuditEvent.CONFIRMED, record_ids, now=done_at, ttl_seconds=keep
                )
            self.ledger.release_delivered(pipe, batch.job_ids)
            pipe.execute()
        self.metrics.batch_size.observe(len(record_ids))
        if self.connection.confirms:
            self.metrics.confirmed((p.accepted_at for p in batch.payloads), done_at)
        else:
            self.metrics.delivered("sent_unconfirmed", len(record_ids))

    def _unconfirmed(self, unsent: list[DeliveryPayload]) -> list[DeliveryPayload]:
        """Everything written or about to be written but not confirmed, in queue order."""
        payloads = [p for batch in self._pending for p in batch.payloads] + unsent
        self._pending.clear()
        return payloads

    def _after_outage(self, unsent: list[DeliveryPayload], exc: TakOutage) -> None:
        """The connection died before the pong: nothing unconfirmed is known to have arrived.
        Back to the front of the queue, no attempt counted: an outage is never the events'
        fault."""
        self.tak_status.down(f"[{exc.kind.value}] {exc.message}")
        payloads = self._unconfirmed(unsent)
        record_ids = [p.record_id for p in payloads]
        with self.redis.pipeline(transaction=False) as pipe:
            self.records.mark(pipe, record_ids, DeliveryState.QUEUED, error=f"TAK outage: {exc}")
            self.audit.append_batch(pipe, AuditEvent.REQUEUED, record_ids, reason=str(exc))
            pipe.execute()
        returned = self._requeue(_job_ids(payloads), "TAK outage")
        log.error(
            "lost the TAK connection before confirmation [%s]: %s; %d detection(s) back at the "
            "front of the queue, no attempt counted",
            exc.kind.value,
            exc.message,
            returned,
        )

    def _after_confirm_timeout(self, unsent: list[DeliveryPayload], exc: TakConfirmTimeout) -> None:
        """A connection that looked alive did not confirm: one attempt for every unconfirmed
        event; events out of attempts become dead letters, the rest go back to the front."""
        self.tak_status.down(f"no confirmation: {exc}")
        payloads = self._unconfirmed(unsent)
        with self.redis.pipeline(transaction=False) as pipe:
            for p in payloads:
                pipe.hget(record_key(p.record_id), "attempts")
            attempts = [int(a or 0) + 1 for a in pipe.execute()]
        # A job's events always travel together: the job is out of attempts when one of them is.
        exhausted_jobs = {
            p.job_id for p, n in zip(payloads, attempts, strict=True) if n >= self.max_attempts
        }
        retry_jobs = [j for j in _job_ids(payloads) if j not in exhausted_jobs]
        reason = f"no confirmation after {self.max_attempts} attempt(s): {exc}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # rq's enqueue (dead-letter notifications) needs MULTI mode
            self.records.mark(
                pipe,
                [p.record_id for p in payloads],
                DeliveryState.RETRYING,
                count_attempt=True,
                error=f"not confirmed: {exc}",
            )
            self.audit.append_batch(
                pipe,
                AuditEvent.RETRIED,
                [p.record_id for p in payloads if p.job_id not in exhausted_jobs],
                reason=str(exc),
            )
            dead = self._dead_letter(pipe, dict.fromkeys(sorted(exhausted_jobs), reason))
            pipe.execute()
        self._count_dead(dead)
        self._requeue(retry_jobs, "confirmation timeout", outcome="retried")
        log.warning(
            "%d detection(s) not confirmed (%s): %d job(s) will be retried, %d dead-lettered",
            len(payloads),
            exc,
            len(retry_jobs),
            len(exhausted_jobs),
        )

    @property
    def max_attempts(self) -> int:
        return self.config.max_delivery_attempts

    def _dead_letter(self, pipe: Pipeline, reasons: dict[str, str]) -> int:
        """Failed jobs into rq's failed registry, records dead with the reason, claims dropped
        (a dead letter must never be requeued by a later recovery). Returns how many."""
        if not reasons:
            return 0
        job_ids = list(reasons)
        jobs = Job.fetch_many(job_ids, self.redis, serializer=JSONSerializer)
        with self.redis.pipeline(transaction=False) as read:
            for job_id in job_ids:
                read.hget(record_key(job_id), "state")
            record_states = [s.decode() if s else None for s in read.execute()]
        dead = 0
        for job_id, job, state in zip(job_ids, jobs, record_states, strict=True):
            reason = reasons[job_id]
            if job is None and state == DeliveryState.CONFIRMED:
                # Delivered by an earlier claim whose copy a reaper had also put back: done.
                log.info("job %s already delivered, dropping its second copy", job_id)
                continue
            log.error("dead letter %s: %s", job_id, reason)
            record_ids = [job_id]
            if job is not None:  # a vanished job has nothing left to requeue
                record_ids = _record_ids_of(job) or record_ids
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
        self.ledger.forget(pipe, job_ids)
        return dead

    def _count_dead(self, count: int) -> None:
        if count:
            self.metrics.delivered("dead", count)
            self.metrics.dead_letters_total.inc(count)

    def _requeue(self, ids: list[str], why: str, outcome: str = "requeued") -> int:
        returned = self.ledger.requeue(ids)
        self.metrics.delivered(outcome, returned)
        if returned:
            log.info("%d claimed job(s) back at the front of the queue (%s)", returned, why)
        return returned

    def _requeue_everything_claimed(self, why: str) -> int:
        returned = self.ledger.requeue_inflight()
        self.metrics.delivered("requeued", returned)
        if returned:
            log.info("%d claimed job(s) back at the front of the queue (%s)", returned, why)
        return returned
