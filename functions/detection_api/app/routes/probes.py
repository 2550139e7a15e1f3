"""``GET /health`` (the process is alive) and ``GET /ready`` (Redis answers): open, no token."""

from __future__ import annotations

from flask import Blueprint, Response
from redis.exceptions import RedisError

from detection_api.app.problems import redis_unavailable
from detection_api.app.services import services

JSON = "application/json"
_HEALTHY = b'{"status": "ok"}'
_READY = b'{"status": "ready"}'

blueprint = Blueprint("probes", __name__)


@blueprint.get("/health")
def health() -> Response:
    return Response(_HEALTHY, mimetype=JSON)


@blueprint.get("/ready")
def ready() -> Response:
    try:
        services().redis.ping()
    except RedisError:
        raise redis_unavailable() from None
    return Response(_READY, mimetype=JSON)
