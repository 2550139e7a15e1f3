"""The forwarder's view of its TAK connection, shared with operators and the alert channel.

Keeps the ``detection_api_tak_connected`` gauge, writes ``detection:forwarder:<name>:status``
(read by ``detection-api queue status``; it expires with the forwarder), and sends one Discord
notification when an outage has lasted ``TAK_DISCONNECT_ALERT_SECONDS`` and one when it ends:
never one per reconnect attempt.
"""

from __future__ import annotations

import contextlib
import logging
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from detection_api.alerts.notify import (
    enqueue_notification,
    tak_disconnected_payload,
    tak_reconnected_payload,
)
from detection_api.tak.forwarder_metrics import ForwarderMetrics

log = logging.getLogger(__name__)

STATUS_PREFIX = "detection:forwarder:"


def status_key(name: str) -> str:
    return f"{STATUS_PREFIX}{name}:status"


class TakStatus:
    def __init__(
        self,
        redis: Redis,
        name: str,
        endpoint: str,
        metrics: ForwarderMetrics,
        *,
        notify_queue: Queue | None,
        alert_after_seconds: float,
        status_ttl_seconds: int = 60,
    ) -> None:
        self.redis = redis
        self.name = name
        self.endpoint = endpoint
        self.metrics = metrics
        self.notify_queue = notify_queue
        self.alert_after_seconds = alert_after_seconds
        self.status_ttl_seconds = status_ttl_seconds
        self.down_since: float | None = None
        self._alerted = False
        self.confirm_mode = ""

    def up(self, confirm_mode: str = "") -> None:
        """Connected; ``confirm_mode`` is how its batches are confirmed (pong, readback, none)."""
        now = time.time()
        self.confirm_mode = confirm_mode
        self.metrics.tak_connected.set(1)
        if self._alerted and self.down_since is not None:
            self._notify(
                "tak_reconnected",
                tak_reconnected_payload(endpoint=self.endpoint, down_seconds=now - self.down_since),
            )
        self.down_since = None
        self._alerted = False
        self._write(connected=True, since=now, error="")

    def down(self, error: str) -> None:
        now = time.time()
        self.metrics.tak_connected.set(0)
        if self.down_since is None:
            self.down_since = now
        down_for = now - self.down_since
        if not self._alerted and down_for >= self.alert_after_seconds:
            self._alerted = True
            self._notify(
                "tak_disconnected",
                tak_disconnected_payload(
                    endpoint=self.endpoint,
                    down_seconds=down_for,
                    since=self.down_since,
                    error=error,
                ),
            )
        self._write(connected=False, since=self.down_since, error=error)

    def refresh(self) -> None:
        """Keep the status key alive while nothing changes (called from housekeeping)."""
        with contextlib.suppress(RedisError):
            self.redis.expire(status_key(self.name), self.status_ttl_seconds)

    def _write(self, *, connected: bool, since: float, error: str) -> None:
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    status_key(self.name),
                    mapping={
                        "tak_connected": "1" if connected else "0",
                        "tak_url": self.endpoint,
                        "since": repr(since),
                        "last_error": error[:500],
                        "tak_confirm": self.confirm_mode,
                    },
                )
                pipe.expire(status_key(self.name), self.status_ttl_seconds)
                pipe.execute()
        except RedisError:
            pass  # the status is informative; delivery never waits on it

    def _notify(self, kind: str, payload: dict[str, object]) -> None:
        try:
            enqueue_notification(self.notify_queue, kind, payload)
        except RedisError as exc:
            log.warning("could not queue the %s notification: %s", kind, exc)
