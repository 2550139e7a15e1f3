"""``detection-api worker``: run the TAK forwarder (the Procfile's ``worker`` process).

Reads the settings, serves ``/metrics`` and ``/health`` on ``FORWARDER_METRICS_PORT`` (0 picks a
free port), and forwards until SIGTERM/SIGINT, which stop the claiming, confirm the batch in
flight and exit 0 well within a Kubernetes grace period.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from types import FrameType

from redis import Redis

from detection_api.alerts.notifier import Notifier, NotifierConfig
from detection_api.alerts.notify import notify_queue
from detection_api.logs import configure_logging
from detection_api.settings import ConfigError, Settings, get_settings, secret
from detection_api.stop_signal import StopSignal
from detection_api.tak.data_package import connection_settings
from detection_api.tak.forwarder import Forwarder, ForwarderConfig
from detection_api.tak.forwarder_metrics import ForwarderMetrics, MetricsServer
from detection_api.tak.presence import Presence
from detection_api.tak.transport import TakEndpoint, TlsFiles, open_connection

log = logging.getLogger("detection_api.worker")

# Redis calls fail instead of hanging: the loop then backs off and reconnects. Must exceed the
# 1 s BLMOVE wait.
REDIS_SOCKET_TIMEOUT_SECONDS = 10.0


def redis_client(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=30,
    )


def _version() -> str:
    try:
        return metadata.version("detection-api")
    except metadata.PackageNotFoundError:
        return "0"


def _configuration(cleanup: contextlib.ExitStack) -> tuple[Settings, str, TlsFiles]:
    """Settings, TAK_URL and TLS files (TAK_DATA_PACKAGE applied). Bad configuration stops the
    process here: ``ConfigError`` is one line naming the variable (cli.py prints it, exit 2).

    A data package's files (the client identity among them) are read on every connect: they are
    unpacked into a private directory that ``cleanup`` removes when the worker exits."""
    settings = get_settings()
    unpacked = None
    if settings.tak_data_package:
        directory = tempfile.TemporaryDirectory(prefix="tak-data-package-")
        unpacked = Path(cleanup.enter_context(directory))
    try:
        url, tls = connection_settings(settings, unpacked)
        TakEndpoint.parse(url)
    except ValueError as exc:  # DataPackageError, a TAK_URL from a package
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings, url, tls


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:  # removes what the worker made for its lifetime
        return _run(args, cleanup)


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    settings, tak_url, tls = _configuration(cleanup)
    configure_logging(settings.log_level)
    config = ForwarderConfig.from_settings(settings)
    redis = redis_client(settings.redis_url.get_secret_value())
    metrics = ForwarderMetrics(heartbeat_max_age_seconds=config.health_max_age_seconds)
    connection = open_connection(
        tak_url,
        tls,
        presence=Presence(settings.tak_uid, settings.tak_callsign, _version()),
        confirm=settings.tak_confirm,
        confirm_timeout=config.confirm_timeout_seconds,
    )
    forwarder = Forwarder(
        redis, connection, config, metrics, notify_queue=notify_queue(redis, settings)
    )
    # Discord notifications are posted by a thread of this process (never by a request).
    notifier_config = NotifierConfig(
        webhook_url=secret(settings.discord_webhook_url),
        max_per_minute=settings.notify_max_per_minute,
    )
    notifier_stop = threading.Event()
    notifier = threading.Thread(
        target=Notifier(redis, notifier_config).run,
        args=(notifier_stop,),
        name="notifier",
        daemon=True,
    )
    notifier.start()
    # Scrapes use their own short-timeout client: a scrape must never wait on the main loop.
    scrape_redis = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=2.0, socket_connect_timeout=2.0
    )
    metrics.watch_redis(lambda: scrape_redis, forwarder.failed_registry_key)
    server = MetricsServer(metrics, settings.forwarder_metrics_port).start()

    # The handler only sets a lock-free flag (a handler that took a lock the main thread holds,
    # such as the forwarder's stop Event's, would hang the worker on SIGTERM; see StopSignal);
    # a thread of its own passes the request on.
    stop_signal = StopSignal()

    def relay_stop() -> None:
        stop_signal.wait()
        name = signal.Signals(stop_signal.signum or signal.SIGTERM).name
        log.info("%s: finishing the batch in flight, then exiting", name)
        forwarder.request_stop()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stop_signal.set(signum)

    threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return forwarder.run(burst=bool(getattr(args, "burst", False)))
    finally:
        notifier_stop.set()
        notifier.join(timeout=5)
        server.stop()
