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
import threading
import time
from collections import deque
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry

from detection_api.backoff import Backoff
from detection_api.store.audit import AuditLog
from detection_api.store.claims import ClaimLedger
from detection_api.store.records import RecordStore
from detection_api.store.tak_jobs import DeliveryPayload, read_batch, tak_queue
from detection_api.tak.confirm import ConfirmMode
from detection_api.tak.forwarder_config import ForwarderConfig, default_forwarder_name
from detection_api.tak.forwarder_metrics import ForwarderMetrics
from detection_api.tak.forwarder_registration import Registration
from detection_api.tak.outcomes import Outcomes, job_ids
from detection_api.tak.status import TakStatus
from detection_api.tak.transport import (
    MAX_UDP_EVENT_BYTES,
    Scheme,
    TakConfirmTimeout,
    TakConnection,
    TakOutage,
)

__all__ = ["Forwarder", "ForwarderConfig", "default_forwarder_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _SentBatch:
    payloads: list[DeliveryPayload]
    ping_seq: int


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
        # Claimed jobs are listed in rq's started registry and the rq worker is marked busy, so
        # ``rq info`` and rq-dashboard show what is in flight.
        self.ledger = ClaimLedger(
            redis,
            self.queue.key,
            self.name,
            config.alive_ttl_seconds,
            started_registry_key=StartedJobRegistry(self.queue.name, connection=redis).key,
            worker_key=Worker.redis_worker_namespace_prefix + self.name,
            started_ttl_seconds=config.health_max_age_seconds,
        )
        self.failed_registry_key = FailedJobRegistry(self.queue.name, connection=redis).key
        self.notify_queue = notify_queue  # None: Discord notifications are off
        self.outcomes = Outcomes(
            redis,
            RecordStore(redis, int(config.retention_seconds)),
            AuditLog(
                redis, max_len=config.audit_max_len, retention_seconds=int(config.retention_seconds)
            ),
            self.ledger,
            self.metrics,
            confirmed_retention_seconds=config.confirmed_retention_seconds,
            max_attempts=config.max_delivery_attempts,
            notify_queue=notify_queue,
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
        self.registration = Registration(
            redis,
            self.queue,
            self.name,
            ledger=self.ledger,
            tak_status=self.tak_status,
            metrics=self.metrics,
            config=config,
        )
        self._stop = threading.Event()
        self._tak_backoff = Backoff(config.reconnect_base_seconds, config.reconnect_max_seconds)
        self._redis_backoff = Backoff(config.reconnect_base_seconds, config.reconnect_max_seconds)
        self._ever_connected = False
        self._claims_uncertain = False  # a Redis error may have left ids in our in-flight list
        self._busy = False  # what rq's worker registry says about this forwarder
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
                self.outcomes.requeue_everything_claimed("recovering after a Redis error")
                self._claims_uncertain = False
        if not self._stop.is_set() and len(self._pending) < self.config.window:
            # Block on an empty queue only when there is no pong to collect.
            block = 0 if (self._pending or burst) else self.config.claim_block_seconds
            jobs_wanted = max(1, round(self.config.batch_size / self._events_per_job))
            ids = self.ledger.claim(jobs_wanted, block)
            if ids:
                self._busy = True  # (the claim script told rq)
                self._send_batch(ids)
                return True
            if not self._pending:
                if self._busy:
                    self._busy = not self.registration.set_idle()
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
                self.registration.register()
                break
            except RedisError as exc:
                delay = self._redis_backoff.next_delay()
                log.error("Redis unavailable at start-up (%s); retrying in %.1f s", exc, delay)
                self._pause(delay)
        else:
            return False
        self._redis_backoff.reset()
        self.registration.start_housekeeping()
        return True

    def _shutdown(self) -> None:
        self.registration.retire()
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
        payloads, rejected = read_batch(
            self.redis,
            ids,
            now=now,
            retention_seconds=self.config.retention_seconds,
            max_event_bytes=self._max_event_bytes,
        )
        delivered_jobs = len(ids) - len(rejected)
        if delivered_jobs:
            self._events_per_job = 0.5 * self._events_per_job + 0.5 * len(payloads) / delivered_jobs

        stopping = self._stop.is_set()  # SIGTERM after the claim: write nothing new
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()  # rq's enqueue (dead-letter notifications) needs MULTI mode
            dead = self.outcomes.dead_letter(pipe, rejected)
            if payloads and not stopping:
                self.outcomes.sent(pipe, payloads, now)
            pipe.execute()
        self.outcomes.count_dead(dead)
        if not payloads:
            return
        if stopping:
            self.outcomes.requeue(job_ids(payloads), "stopping")
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
            self.outcomes.delivered(batch.payloads, confirmed=False)

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
        self.outcomes.delivered(batch.payloads, confirmed=True)

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
        returned = self.outcomes.after_outage(self._unconfirmed(unsent), str(exc))
        log.error(
            "lost the TAK connection before confirmation [%s]: %s; %d job(s) back at the "
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
        retried, dead = self.outcomes.after_confirm_timeout(payloads, str(exc))
        log.warning(
            "%d detection(s) not confirmed (%s): %d job(s) will be retried, %d dead-lettered",
            len(payloads),
            exc,
            retried,
            dead,
        )
