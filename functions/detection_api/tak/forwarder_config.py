"""The forwarder's configuration (from the settings, at the entry point) and its process name."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from detection_api.settings import Settings
from detection_api.tak.transport import CONNECT_TIMEOUT_SECONDS, FIRST_PONG_STREAMING_MAX_SECONDS


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


def default_forwarder_name() -> str:
    """Unique per process: a restarted forwarder must not wait for its old name to expire."""
    return f"tak-forwarder.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
