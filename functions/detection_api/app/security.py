"""Flask adapters for authentication, rate limits, CORS and security headers.

Order matters and is fixed here: authentication runs first (the rate-limit key is the token's
subject), then the limiter, then the view. Open paths: health, readiness, metrics, OpenAPI.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

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
            if request.path == "/" and settings.auth_trust_cluster_events:
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
    return f"ip:{get_remote_address()}"


def install_rate_limits(app: Flask, settings: Settings) -> Limiter:
    """Limits per token subject (or client IP) in Redis, so they hold across pods. A breach is
    flask-limiter's 429, shaped into problem+json by the app's error handler; the limiter adds
    Retry-After and the RateLimit-* headers."""
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.redis_url,
        RATELIMIT_STRATEGY="sliding-window-counter",
        RATELIMIT_KEY_PREFIX="detection:ratelimit",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_HEADER_LIMIT="RateLimit-Limit",
        RATELIMIT_HEADER_REMAINING="RateLimit-Remaining",
        RATELIMIT_HEADER_RESET="RateLimit-Reset",
        # Redis down: let the request through; ingest itself answers 503 without the queue.
        RATELIMIT_SWALLOW_ERRORS=True,
    )

    limiter = Limiter(
        key_func=_rate_limit_key,
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=lambda: request.path in OPEN_PATHS,
    )
    return limiter


def install_cors_and_headers(app: Flask, settings: Settings) -> None:
    origins = settings.cors_origin_list
    if origins:
        CORS(
            app,
            origins=origins,
            methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "ce-specversion", "ce-id",
                           "ce-source", "ce-type"],
            expose_headers=["Location", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                            "RateLimit-Reset"],
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
