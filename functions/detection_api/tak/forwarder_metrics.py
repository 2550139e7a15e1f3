"""The forwarder's Prometheus metrics and its liveness endpoint, on one small HTTP server.

Names are a contract with the alert rules (README "Operations"). Gauges that describe Redis
(queue depth, dead letters) are read when Prometheus scrapes, so they are right even when the
forwarder is stuck.
``GET /health`` answers 200 while the main loop's heartbeat is fresh and 503 when it is not: it is
the Kubernetes liveness probe, so a wedged loop gets the pod restarted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from detection_api.store.queue_depth import QueueDepthCollector

log = logging.getLogger(__name__)

DELIVERY_OUTCOMES = ("confirmed", "requeued", "retried", "dead", "sent_unconfirmed")
# From 5 ms (a live connection) to 1 h (a long outage drained afterwards).
ACCEPT_TO_CONFIRM_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0,
)  # fmt: skip
CONFIRM_MODE_LABELS = ("pong", "readback", "none")
ANOMALY_KINDS = ("unsolicited_pongs", "oversized_events", "readback_unmatched")
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class DeadLetterCollector(Collector):
    """``detection_api_dead_letters_waiting``: size of rq's failed registry, read at scrape."""

    def __init__(self, redis_factory: Callable[[], Redis], failed_registry_key: str) -> None:
        self._redis_factory = redis_factory
        self._key = failed_registry_key

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            size = self._redis_factory().zcard(self._key)
        except RedisError:
            return  # absent rather than a misleading 0 while Redis is down
        yield GaugeMetricFamily(
            "detection_api_dead_letters_waiting",
            "Dead letters waiting in rq's failed registry (requeue-able)",
            value=float(size),
        )


class Heartbeat:
    """When the main loop last made progress (monotonic for the health check, wall clock for
    the exported gauge)."""

    def __init__(self, gauge: Gauge, max_age_seconds: float) -> None:
        self._gauge = gauge
        self.max_age_seconds = max_age_seconds
        self._last = time.monotonic()
        self._gauge.set(time.time())

    def beat(self) -> None:
        self._last = time.monotonic()
        self._gauge.set(time.time())

    @property
    def age_seconds(self) -> float:
        return time.monotonic() - self._last

    @property
    def fresh(self) -> bool:
        return self.age_seconds < self.max_age_seconds


class ForwarderMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        heartbeat_max_age_seconds: float = 60.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter(
            "detection_api_deliveries",
            "Deliveries by outcome: confirmed (pong), requeued (outage), retried (no pong), "
            "dead (dead letter), sent_unconfirmed (UDP, best effort)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)  # exported at 0 from the start: rate() works at once
        self.accept_to_confirm = Histogram(
            "detection_api_accept_to_confirm_seconds",
            "From the function storing a detection to the TAK server confirming it",
            buckets=ACCEPT_TO_CONFIRM_BUCKETS,
            registry=self.registry,
        )
        self.tak_connected = Gauge(
            "detection_api_tak_connected",
            "1 while the forwarder holds a confirmed connection to the TAK server",
            registry=self.registry,
        )
        self.tak_reconnects = Counter(
            "detection_api_tak_reconnects",
            "Connections to the TAK server re-established after a loss",
            registry=self.registry,
        )
        self.dead_letters_total = Counter(
            "detection_api_dead_letters",
            "Detections moved to rq's failed registry",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "detection_api_forwarder_batch_size",
            "Detections per confirmed batch",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.heartbeat = Heartbeat(
            Gauge(
                "detection_api_forwarder_last_heartbeat_timestamp_seconds",
                "Unix time of the forwarder main loop's last heartbeat",
                registry=self.registry,
            ),
            heartbeat_max_age_seconds,
        )
        # --- TAK interop: how batches are confirmed, and what the server sent that we ignore ---
        self.tak_confirm_mode = Gauge(
            "detection_api_tak_confirm_mode",
            "1 for the confirmation mode in use on the TAK connection (pong, readback, none)",
            ["mode"],
            registry=self.registry,
        )
        for mode in CONFIRM_MODE_LABELS:
            self.tak_confirm_mode.labels(mode).set(0)
        self.tak_stream_anomalies = Counter(
            "detection_api_tak_stream_anomalies",
            "Things the TAK server sent that confirm nothing: unsolicited_pongs (no ping of ours "
            "outstanding: relayed, forged or late), oversized_events (an event past 1 MiB: the "
            "connection was dropped), readback_unmatched (read-back copies matching no event in "
            "flight: echoes, replays, duplicates)",
            ["kind"],
            registry=self.registry,
        )
        self._anomalies_seen: dict[str, int] = {}
        for kind in ANOMALY_KINDS:
            self.tak_stream_anomalies.labels(kind)

    def set_confirm_mode(self, mode: str) -> None:
        for label in CONFIRM_MODE_LABELS:
            self.tak_confirm_mode.labels(label).set(1 if label == mode else 0)

    def sync_anomalies(self, totals: dict[str, int]) -> None:
        """Raise the counters to the connection's cumulative totals."""
        for kind, total in totals.items():
            delta = total - self._anomalies_seen.get(kind, 0)
            if delta > 0:
                self.tak_stream_anomalies.labels(kind).inc(delta)
                self._anomalies_seen[kind] = total

    def watch_redis(self, redis_factory: Callable[[], Redis], failed_registry_key: str) -> None:
        """Export the gauges read from Redis at scrape time."""
        self.registry.register(QueueDepthCollector(redis_factory))
        self.registry.register(DeadLetterCollector(redis_factory, failed_registry_key))

    def delivered(self, outcome: str, count: int = 1) -> None:
        if count:
            self.deliveries.labels(outcome).inc(count)

    def confirmed(self, accepted_at: Iterable[float], now: float) -> None:
        count = 0
        for moment in accepted_at:
            self.accept_to_confirm.observe(max(0.0, now - moment))
            count += 1
        self.delivered("confirmed", count)


# --- HTTP: /metrics and /health ------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never keeps the process from exiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not news."""


def _wsgi_app(metrics: ForwarderMetrics) -> Callable[..., list[bytes]]:
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == "/health":
            heartbeat = metrics.heartbeat
            healthy = heartbeat.fresh
            body = json.dumps(
                {
                    "status": "ok" if healthy else "stuck",
                    "heartbeat_age_seconds": round(heartbeat.age_seconds, 3),
                    "max_age_seconds": heartbeat.max_age_seconds,
                }
            ).encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        return list(metrics_app(environ, start_response))

    return app


class MetricsServer:
    """Serves ``/metrics`` and ``/health`` from a daemon thread."""

    def __init__(self, metrics: ForwarderMetrics, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 (scraped from the pod IP)  # nosec B104 # Prometheus scrapes the pod IP; NetworkPolicy limits who may
        self._server = make_server(
            host,
            port,
            _wsgi_app(metrics),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="forwarder-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics and /health on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
