"""Flask adapters for authentication, rate limits, CORS and security headers.

Order matters and is fixed here: authentication runs first (the rate-limit key is the token's
subject), then the limiter, then the view. Open paths: health, readiness, metrics, OpenAPI.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, g, request
from flask_cors import CORS
from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from detection_api.app.cluster_events import is_cluster_delivery
from detection_api.app.problems import Problem
from detection_api.auth import AuthError, Principal, Scope, TokenVerifier
from detection_api.settings import Settings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})


def _required_scope() -> Scope | None:
    if request.path in OPEN_PATHS or request.method == "OPTIONS":
        return None
    if request.method in {"GET", "HEAD"}:
        return Scope.READ
    return Scope.WRITE


def _unauthorized(message: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="detection-api", error="invalid_token"'},
    )


def install_auth(app: Flask, settings: Settings) -> None:
    if settings.auth_disabled:
        log.warning("AUTH_DISABLED=true: every request is accepted without a token")

        @app.before_request
        def _anonymous() -> None:
            g.principal = Principal("anonymous", frozenset({Scope.ADMIN.value}), "auth-disabled")

        return

    verifier = TokenVerifier(settings)
    if not verifier.configured and not settings.eventing_oidc_jwks_file:
        log.error("authentication is on but no JWT key is configured: protected paths answer 401")

    @app.before_request
    def _authenticate() -> None:
        scope = _required_scope()
        if scope is None:
            return
        header = request.headers.get("Authorization", "")
        if not header:
            if settings.auth_trust_cluster_events and is_cluster_delivery(
                request.method, request.path, request.host, settings.cluster_domain
            ):
                g.principal = Principal("cluster", frozenset({Scope.WRITE.value}), "cluster-trust")
                return
            raise _unauthorized("a bearer token is required")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized("use Authorization: Bearer <token>")
        try:
            principal = verifier.verify(token.strip())
        except AuthError as exc:
            raise _unauthorized(exc.message) from None
        if principal.via == "eventing-oidc" and request.path != "/":
            raise Problem(403, "forbidden", "Forbidden", "eventing tokens may only deliver events")
        if not principal.allows(scope):
            raise Problem(403, "forbidden", "Forbidden", f"the token lacks the {scope} scope")
        g.principal = principal


def _rate_limit_key() -> str:
    principal: Principal | None = g.get("principal")
    if principal is not None and principal.via == "jwt":
        return f"sub:{principal.subject}"
    return f"ip:{request.remote_addr or 'unknown'}"


def install_rate_limits(app: Flask, settings: Settings) -> None:
    """Limits per token subject (or client IP) counted in Redis, so they hold across pods.

    The ``limits`` library (the engine under flask-limiter) is used directly: one Lua call per
    request for the sliding-window counter, and the window statistics for the RateLimit-* headers
    are read only when answering 429. Redis down: the request goes on, and ingest answers 503.
    """
    storage = RedisStorage(settings.redis_url, key_prefix="detection:ratelimit")
    limiter = SlidingWindowCounterRateLimiter(storage)
    rules = parse_many(settings.rate_limit)

    @app.before_request
    def _rate_limit() -> None:
        if request.path in OPEN_PATHS or request.method == "OPTIONS":
            return
        key = _rate_limit_key()
        for rule in rules:
            try:
                allowed = limiter.hit(rule, key)
            except RedisError:
                return
            if not allowed:
                stats = limiter.get_window_stats(rule, key)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise Problem(
                    429,
                    "rate_limited",
                    "Too many requests",
                    f"limit of {rule} exceeded; retry after {retry_after} s",
                    headers={
                        "Retry-After": str(retry_after),
                        "RateLimit-Limit": str(rule.amount),
                        "RateLimit-Remaining": str(stats.remaining),
                        "RateLimit-Reset": str(retry_after),
                    },
                )


def install_cors_and_headers(app: Flask, settings: Settings) -> None:
    origins = settings.cors_origin_list
    if origins:
        CORS(
            app,
            origins=origins,
            methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
            ],
            expose_headers=[
                "Location",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        forwarded_proto = request.headers.get("X-Forwarded-Proto", "")
        if request.is_secure or forwarded_proto.split(",")[0].strip() == "https":
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response
