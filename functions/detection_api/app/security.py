"""Flask adapters for authentication, rate limits, CORS and security headers.

Order matters and is fixed here: authentication runs first (the rate-limit key is the token's
subject), then the limiter, then the view. Open paths: health, readiness, metrics, OpenAPI.

Limits count detections, not requests: every request costs 1 when it arrives, and an ingest route
charges the rest (``charge``) once it knows how many detections the request carries, before
anything is stored, so a batch of 100 costs 100. Failed authentications are counted per client
address (``AUTH_FAILURE_RATE_LIMIT``); past the limit, that address's failures are answered 429
with ``Retry-After`` and no reason (no oracle for guessing), while a valid token still passes:
a flood of bad tokens must not lock out the producers that share an address (behind Knative's
queue-proxy, every client does).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from flask_cors import CORS
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from detection_api.app.cluster_events import EVENT_PATHS, is_cluster_delivery
from detection_api.app.problems import Problem
from detection_api.app.token_cache import VerifiedTokens
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


def _too_many(rule: RateLimitItem, retry_after: int, what: str, remaining: int = 0) -> Problem:
    return Problem(
        429,
        "rate_limited",
        "Too many requests",
        f"{what} limit of {rule} exceeded; retry after {retry_after} s",
        headers={
            "Retry-After": str(retry_after),
            "RateLimit-Limit": str(rule.amount),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(retry_after),
        },
    )


def _storage(settings: Settings) -> RedisStorage:
    return RedisStorage(settings.redis_url.get_secret_value(), key_prefix="detection:ratelimit")


def _trusted_cluster_delivery(settings: Settings) -> Principal | None:
    """The in-cluster trust decision for a request without a token (one call site)."""
    if settings.auth_trust_cluster_events and is_cluster_delivery(
        request.method, request.path, request.host, settings.cluster_domain
    ):
        return Principal("cluster", frozenset({Scope.WRITE.value}), "cluster-trust")
    return None


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

    tokens = VerifiedTokens(verifier.verify)
    failures = SlidingWindowCounterRateLimiter(_storage(settings))
    failure_rules = parse_many(settings.auth_failure_rate_limit)

    def client_key() -> str:
        return f"authfail:ip:{request.remote_addr or 'unknown'}"

    def failed(message: str) -> Problem:
        """Count the failure; past the limit the answer is a 429 without the reason."""
        for rule in failure_rules:
            try:
                if failures.hit(rule, client_key()):
                    continue
                stats = failures.get_window_stats(rule, client_key())
            except RedisError:
                break
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            return _too_many(rule, retry_after, "failed authentication")
        return _unauthorized(message)

    def _verify() -> Principal:
        header = request.headers.get("Authorization", "")
        if not header:
            raise failed("a bearer token is required")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise failed("use Authorization: Bearer <token>")
        try:
            return tokens.verify(token.strip())
        except AuthError as exc:
            raise failed(exc.message) from None

    @app.before_request
    def _authenticate() -> None:
        scope = _required_scope()
        if scope is None:
            return
        if not request.headers.get("Authorization"):
            trusted = _trusted_cluster_delivery(settings)
            if trusted is not None:
                g.principal = trusted
                return
        principal = _verify()
        if principal.via == "eventing-oidc" and request.path not in EVENT_PATHS:
            raise Problem(403, "forbidden", "Forbidden", "eventing tokens may only deliver events")
        if not principal.allows(scope):
            raise Problem(403, "forbidden", "Forbidden", f"the token lacks the {scope} scope")
        g.principal = principal


def _rate_limit_key() -> str:
    principal: Principal | None = g.get("principal")
    if principal is not None and principal.via == "jwt":
        return f"sub:{principal.subject}"
    return f"ip:{request.remote_addr or 'unknown'}"


def install_rate_limits(app: Flask, settings: Settings) -> Callable[[int], None]:
    """Limits per token subject (or client IP) counted in Redis, so they hold across pods.

    The ``limits`` library (the engine under flask-limiter) is used directly: one Lua call per
    request for the sliding-window counter, and the window statistics for the RateLimit-* headers
    are read only when answering 429. Redis down: the request goes on, and ingest answers 503.
    Returns ``charge(cost)``: an ingest route calls it with the detections beyond the first.
    """
    limiter = SlidingWindowCounterRateLimiter(_storage(settings))
    rules = parse_many(settings.rate_limit)

    def charge(cost: int) -> None:
        if cost < 1:
            return
        key = _rate_limit_key()
        for rule in rules:
            try:
                allowed = limiter.hit(rule, key, cost=cost)
                if allowed:
                    continue
                stats = limiter.get_window_stats(rule, key)
            except RedisError:
                return
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise _too_many(rule, retry_after, "rate", stats.remaining)

    @app.before_request
    def _rate_limit() -> None:
        if request.path in OPEN_PATHS or request.method == "OPTIONS":
            return
        charge(1)

    return charge


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
