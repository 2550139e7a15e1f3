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
from functools import lru_cache

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
from detection_api.store.atomic import Budget, BudgetExceeded, Window

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


INGEST_ROUTES = frozenset({"/", "/api/v1/detections"})  # POST: charged by the write script


class RateLimits:
    """Limits per token subject (or client IP) counted in Redis, so they hold across pods.

    The ``limits`` library (the engine under flask-limiter) is used directly: one Lua call per
    request for the sliding-window counter, and the window statistics for the RateLimit-* headers
    are read only when answering 429. Redis down: the request goes on, and ingest answers 503.

    The ingest routes (POST on ``INGEST_ROUTES``) are not charged on arrival: their write script
    charges the same counters (``budget``: 1, then the detections beyond the first) in the round
    trip that stores them (store/atomic.py), so over the limit nothing is stored. A request those
    routes reject before storing (400, 413, 415, 422) is charged after it is answered
    (``settle``); past the limit, its answer becomes the 429.
    """

    def __init__(self, settings: Settings) -> None:
        self._storage = _storage(settings)
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._rules = parse_many(settings.rate_limit)
        self._windows = lru_cache(maxsize=4096)(self._windows_for)  # per producer, or address

    def charge(self, cost: int) -> None:
        if cost < 1:
            return
        key = _rate_limit_key()
        for rule in self._rules:
            try:
                if self._limiter.hit(rule, key, cost=cost):
                    continue
            except RedisError:
                return
            raise self.exceeded(rule)

    def exceeded(self, rule: RateLimitItem) -> Problem:
        """The 429 for a full ``rule`` (reads its window for the headers)."""
        try:
            stats = self._limiter.get_window_stats(rule, _rate_limit_key())
        except RedisError:
            return _too_many(rule, 1, "rate")
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return _too_many(rule, retry_after, "rate", stats.remaining)

    def defer(self) -> None:
        """An ingest request: its arrival is charged with its write (or by ``settle``)."""
        g.rate_cost = 1

    def admit(self, count: int) -> None:
        """The request carries ``count`` detections (1 + the rest)."""
        if g.get("rate_cost"):
            g.rate_cost = max(1, count)

    def take_budget(self) -> Budget | None:
        """The pending charge, for the write script (None: already charged, or nothing)."""
        cost = g.pop("rate_cost", 0)
        if not cost:
            return None
        return Budget(self._windows(_rate_limit_key()), first=1, rest=cost - 1)

    def _windows_for(self, key: str) -> tuple[Window, ...]:
        """The counters of ``key``, by limits' own key names (RedisStorage, sliding window), so
        ``charge`` and the write script charge the same ones."""
        storage = self._storage
        return tuple(
            Window(
                storage.prefixed_key(storage._previous_window_key(rule.key_for(key))),
                storage.prefixed_key(storage._current_window_key(rule.key_for(key))),
                rule.amount,
                rule.get_expiry(),
            )
            for rule in self._rules
        )

    def over_budget(self, exc: BudgetExceeded) -> Problem:
        return self.exceeded(self._rules[exc.window])

    def settle(self) -> Problem | None:
        """Charge what an ingest request left pending (it was answered before its write)."""
        cost = g.pop("rate_cost", 0)
        try:
            self.charge(cost)
        except Problem as problem:
            return problem
        return None


def install_rate_limits(
    app: Flask, settings: Settings, respond: Callable[[Problem], Response]
) -> RateLimits:
    """Charge every request but the open paths and OPTIONS; ``respond`` answers a ``Problem``
    (the app's problem+json handler). Returns the limits the ingest routes charge themselves."""
    limits = RateLimits(settings)

    @app.before_request
    def _rate_limit() -> None:
        if request.path in OPEN_PATHS or request.method == "OPTIONS":
            return
        if request.method == "POST" and request.path in INGEST_ROUTES:
            limits.defer()
            return
        limits.charge(1)

    @app.after_request
    def _settle(response: Response) -> Response:
        if g.get("rate_cost"):
            problem = limits.settle()
            if problem is not None:
                return respond(problem)
        return response

    return limits


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
