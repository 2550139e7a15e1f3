"""The forwarder as the rest of the system sees it: registered as an rq worker (so ``rq info`` and
rq-dashboard list it), alive (its alive key, refreshed by a housekeeping thread while the main
loop blocks on a pong), and the one that returns the claims of forwarders that died.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from detection_api.store.claims import ClaimLedger
from detection_api.tak.forwarder_config import ForwarderConfig
from detection_api.tak.forwarder_metrics import ForwarderMetrics
from detection_api.tak.status import TakStatus

log = logging.getLogger(__name__)


class Registration:
    def __init__(
        self,
        redis: Redis,
        queue: Queue,
        name: str,
        *,
        ledger: ClaimLedger,
        tak_status: TakStatus,
        metrics: ForwarderMetrics,
        config: ForwarderConfig,
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.name = name
        self.ledger = ledger
        self.tak_status = tak_status
        self.metrics = metrics
        self.config = config
        self.worker: Worker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        """Register with rq, claim liveness, return dead forwarders' claims (raises RedisError)."""
        self.worker = Worker(
            [self.queue],
            name=self.name,
            connection=self.redis,
            serializer=JSONSerializer,
            worker_ttl=self.config.rq_worker_ttl_seconds,
        )
        self.worker.register_birth()
        self.worker.set_state(WorkerStatus.IDLE)
        self.ledger.refresh_alive()
        self.tak_status.refresh()
        self.reap()

    def start_housekeeping(self) -> None:
        self._thread = threading.Thread(
            target=self._housekeeping_loop, name="forwarder-housekeeping", daemon=True
        )
        self._thread.start()

    def retire(self) -> None:
        """Stop housekeeping, return any claim, leave rq's worker registry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            returned = self.ledger.retire()
            if returned:
                log.info("returned %d claimed job(s) to the front of the queue", returned)
                self.metrics.delivered("requeued", returned)
            if self.worker is not None:
                self.worker.register_death()
        except RedisError as exc:
            # The claims stay in Redis; another forwarder returns them once our alive key expires.
            log.error("Redis unavailable during shutdown (%s): claims are left to the reaper", exc)

    def set_idle(self) -> bool:
        """Tell rq this worker waits for work (claims set it ``busy``). False if not registered."""
        if self.worker is None:
            return False
        self.worker.set_state(WorkerStatus.IDLE)
        return True

    def reap(self) -> None:
        for reaped in self.ledger.reap_dead_forwarders():
            self.metrics.delivered("requeued", reaped.job_count)

    def _housekeeping_loop(self) -> None:
        """Keeps this process's alive key fresh while the main loop blocks (a pong wait can be
        longer than the key's TTL), returns dead forwarders' claims, beats rq's heartbeat."""
        last_rq_heartbeat = time.monotonic()
        while not self._stop.wait(self.config.housekeeping_interval_seconds):
            try:
                self.ledger.refresh_alive()
                self.tak_status.refresh()
                self.reap()
                if time.monotonic() - last_rq_heartbeat >= self.config.rq_worker_ttl_seconds / 3:
                    if self.worker is not None:
                        self.worker.heartbeat()
                    last_rq_heartbeat = time.monotonic()
            except RedisError as exc:
                log.debug("housekeeping skipped, Redis unavailable: %s", exc)
