"""What the route modules share, built once by ``create_app`` and kept on the Flask app.

Routes are module-level functions in blueprints (``app/routes/``); they reach the process's
components through ``services()`` instead of closures, so every route module is small and
importable on its own. Nothing here is per request except ``principal()``, which reads the
identity ``security.install_auth`` put on ``flask.g``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app, g
from prometheus_client import Counter
from redis import Redis

from detection_api.app.ingest import Ingestor
from detection_api.app.metrics import FunctionMetrics
from detection_api.app.security import RateLimits
from detection_api.auth import Principal
from detection_api.settings import Settings

_KEY = "detection_api"


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    redis: Redis
    ingestor: Ingestor
    metrics: FunctionMetrics
    # The request rate limit; ingest takes its charge with the write (security.RateLimits).
    rate_limits: RateLimits
    dead_letters_received: Counter


def attach(app: Flask, services: Services) -> None:
    app.extensions[_KEY] = services


def services() -> Services:
    return cast(Services, current_app.extensions[_KEY])


def principal() -> Principal:
    return cast(Principal, g.principal)  # set by install_auth for every protected route
