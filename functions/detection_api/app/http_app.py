"""The function's HTTP surface (README "HTTP API") as a Flask app.

functions-framework (``functions/main.py``) hands every request to this app: with the HTTP signature
all paths reach the one target, so routing, errors and metrics live here. ``create_app`` only
assembles: the routes are blueprints in ``app/routes/`` (one per resource), errors are
``app/errors.py``, auth, rate limits, CORS and headers ``app/security.py``, request metrics and
``/metrics`` ``app/request_metrics.py``. Components the routes share are built once here and
reached through ``app/services.py``.
"""

from __future__ import annotations

from functools import cache

from flask import Flask
from prometheus_client import CollectorRegistry, Counter
from redis import Redis

from detection_api.app.errors import ProblemResponder
from detection_api.app.ingest import Ingestor
from detection_api.app.metrics import FunctionMetrics
from detection_api.app.request_metrics import MeteredFlask, install_request_metrics
from detection_api.app.routes import BLUEPRINTS
from detection_api.app.security import install_auth, install_cors_and_headers, install_rate_limits
from detection_api.app.services import Services, attach
from detection_api.cot_types import DEFAULT_TYPE_MAP
from detection_api.logs import configure_logging
from detection_api.settings import ConfigError, Settings, get_settings
from detection_api.store.queue_depth import QueueDepthCollector


def redis_from_settings(settings: Settings) -> Redis:
    # Short timeouts: a request must answer 503 quickly when Redis is gone, not hang a thread.
    return Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    settings = settings or get_settings()
    redis = redis or redis_from_settings(settings)
    app = MeteredFlask("detection_api")
    # One byte more than allowed: werkzeug stops reading a chunked body (no Content-Length) at the
    # limit without an error, so read_body() must see that more came to answer 413, not 400.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(lambda: redis))
    metrics = FunctionMetrics(registry, DEFAULT_TYPE_MAP.keys())
    install_request_metrics(app, registry)
    ProblemResponder(metrics, settings.max_body_bytes).install(app)
    # Auth first (the rate-limit key is the token subject), then limits.
    install_cors_and_headers(app, settings)
    install_auth(app, settings)
    rate_limits = install_rate_limits(app, settings)
    dead_letters_received = Counter(
        "detection_api_broker_dead_letters_total",
        "Broker dead letters received on POST /dead-letters (stored for `queue dead`)",
        ["error_code"],
        registry=registry,
    )
    ingestor = Ingestor(settings, redis)
    attach(app, Services(settings, redis, ingestor, metrics, rate_limits, dead_letters_received))
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


@cache
def get_app() -> Flask:
    """The process-wide app, built when functions/main.py is imported (at start, not on the first
    request). Raises ``ConfigError`` (one printable line) for a bad setting."""
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        return create_app(settings)
    except (ValueError, OSError) as exc:  # settings only the components can judge (key files)
        raise ConfigError(f"invalid configuration: {str(exc).splitlines()[0][:300]}") from None
