"""Flask adapters for authentication, rate limits, CORS and security headers.

Order matters and is fixed here: authentication runs first (the rate-limit key is the token's
subject), then the limiter, then the view. Open paths: health, readiness, metrics, OpenAPI.

Limits count detections, not requests: a request costs 1 when it arrives, except on the two
ingest routes, which pay one per detection in the same Redis script that stores them
(``RateLimits.window_charges``), so a batch of 100 costs 100 and a refused batch stores nothing.

Failed authentications are counted per client address (``AUTH_FAILURE_RATE_LIMIT``); past the
limit, that address's failures are answered 429 with ``Retry-After`` and no reason (no oracle for
guessing), while a valid token still passes: a flood of bad tokens must not lock out the
producers that share an address (behind Knative's queue-proxy, every client does).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from flask import Flask, Request, Response, g, request
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
from detection_api.store.atomic import WindowCharge

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
# Added to every answer that does not set them itself; HSTS only to requests that came over TLS.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
SECURE_HEADERS = (*SECURITY_HEADERS, HSTS)


def _required_scope(req: Request) -> Scope | None:
    method = req.method
    if method == "OPTIONS" or req.path in OPEN_PATHS:
        return None
    if method in {"GET", "HEAD"}:
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

    def _verify(header: str) -> Principal:
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
        # The request proxy resolved once: each use of ``request`` looks the context up again.
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        scope = _required_scope(req)
        if scope is None:
            return
        header = req.environ.get("HTTP_AUTHORIZATION", "")  # (one lookup, not three)
        if not header:
            trusted = _trusted_cluster_delivery(settings)
            if trusted is not None:
                g.principal = trusted
                return
        principal = _verify(header)
        if principal.via == "eventing-oidc" and req.path not in EVENT_PATHS:
            raise Problem(403, "forbidden", "Forbidden", "eventing tokens may only deliver events")
        if not principal.allows(scope):
            raise Problem(403, "forbidden", "Forbidden", f"the token lacks the {scope} scope")
        g.principal = principal


def _rate_limit_key() -> str:
    principal: Principal | None = g.get("principal")
    if principal is not None and principal.via == "jwt":
        return f"sub:{principal.subject}"
    return f"ip:{request.remote_addr or 'unknown'}"


_WINDOW_KEYS_CACHED = 4096  # producers (token subjects or client IPs) whose window keys are kept

# The ingest routes' views: they take their charge with the write (store/atomic.py), not here.
INGEST_ENDPOINTS = frozenset({"cloudevents.receive_events", "detections.create_detections"})


class RateLimits:
    """Limits per token subject (or client IP) counted in Redis, so they hold across pods.

    The ``limits`` library (the engine under flask-limiter) decides: its sliding-window counter on
    its own keys. A request that is not an ingest pays 1 in ``before_request`` (one Lua call). An
    ingest request pays one per detection inside the script that stores it (``window_charges``,
    taken by ``store/atomic.py``), so accepting a detection costs one Redis round trip, not two;
    an ingest request rejected before its write (bad media type, malformed body, too many
    detections) pays 1 after its answer. The window statistics for the RateLimit-* headers are
    read only when answering 429. Redis down: the request goes on, and ingest answers 503.
    """

    def __init__(self, settings: Settings) -> None:
        self.storage = _storage(settings)
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.rules = parse_many(settings.rate_limit)
        # A key's window keys never change (the windows' times are in Redis, not in the keys):
        # built once per producer, not on every request (a twentieth of a single request's hooks).
        self._windows = functools.lru_cache(maxsize=_WINDOW_KEYS_CACHED)(self._windows_of)

    def charge(self, cost: int) -> None:
        """Take ``cost`` now (its own round trip); raises the 429 ``Problem`` past a limit."""
        key = _rate_limit_key()
        for index, rule in enumerate(self.rules):
            try:
                if self.limiter.hit(rule, key, cost=cost):
                    continue
            except RedisError:
                return
            raise self.refused(index)

    def window_charges(self, cost: int) -> list[WindowCharge]:
        """The charges of a request of ``cost`` detections, on the keys and numbers
        ``SlidingWindowCounterRateLimiter.hit`` uses: its arrival (1) under every rule, then the
        rest (``cost - 1``) under every rule, the order in which separate hits took them, so a
        refused request still pays for its arrival."""
        windows = self._windows(_rate_limit_key())
        amounts = [1, cost - 1] if cost > 1 else [1]
        return [
            WindowCharge(previous, current, limit, expiry, amount)
            for amount in amounts
            for previous, current, limit, expiry in windows
        ]

    def _windows_of(self, key: str) -> tuple[tuple[str, str, int, int], ...]:
        """Each rule's (previous window key, current window key, limit, window seconds)."""
        windows = []
        for rule in self.rules:
            window = rule.key_for(key)
            windows.append(
                (
                    self.storage.prefixed_key(self.storage._previous_window_key(window)),
                    self.storage.prefixed_key(self.storage._current_window_key(window)),
                    rule.amount,
                    rule.get_expiry(),
                )
            )
        return tuple(windows)

    def refused(self, charge_index: int) -> Problem:
        """The 429 for the refused charge ``charge_index`` of ``window_charges``, with its rule's
        Retry-After and RateLimit-* headers."""
        rule = self.rules[charge_index % len(self.rules)]
        try:
            stats = self.limiter.get_window_stats(rule, _rate_limit_key())
        except RedisError:
            return _too_many(rule, 1, "rate")
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return _too_many(rule, retry_after, "rate", stats.remaining)


def install_rate_limits(app: Flask, settings: Settings) -> RateLimits:
    limits = RateLimits(settings)

    @app.before_request
    def _rate_limit() -> None:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        if req.endpoint in INGEST_ENDPOINTS or req.path in OPEN_PATHS or req.method == "OPTIONS":
            return  # ingest pays with its write; open paths and preflights never pay
        limits.charge(1)

    @app.after_request
    def _charge_rejected_ingest(response: Response) -> Response:
        # An ingest request answered before its write: it still pays for its one request.
        if (
            request.endpoint in INGEST_ENDPOINTS
            and not g.get("rate_charged")
            and g.get("principal") is not None
        ):
            with suppress(Problem):  # already answered; the next request meets the limit
                limits.charge(1)
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

    # Flask's way to add WSGI middleware (functions/main.py hands the framework this callable).
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]


def _over_tls(environ: dict[str, Any]) -> bool:
    """Whether the request came over TLS, to this server or (``X-Forwarded-Proto``'s first
    value) to the proxy in front of it: what ``request.is_secure`` and that header tell."""
    if environ.get("wsgi.url_scheme") in ("https", "wss"):
        return True
    forwarded = environ.get("HTTP_X_FORWARDED_PROTO")
    return bool(forwarded) and forwarded.split(",")[0].strip() == "https"


class SecurityHeaders:
    """WSGI middleware: ``SECURITY_HEADERS`` (and HSTS to requests that came over TLS) on every
    answer that does not set them itself, errors and Flask's own 404s included.

    Added to the WSGI header list rather than in an ``after_request`` hook: werkzeug's
    ``Headers.add`` checks every value, and the request proxy resolves on each use, which made
    the hook 60 K of a single ingest request's 1,915 K instructions (README, "Benchmarks")."""

    def __init__(self, wsgi_app: WsgiApp) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        wanted = SECURE_HEADERS if _over_tls(environ) else SECURITY_HEADERS

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            missing = [header for header in wanted if header[0].lower() not in present]
            return start_response(status, headers + missing, exc_info)

        return self.wsgi_app(environ, start)
