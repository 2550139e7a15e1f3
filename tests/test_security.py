"""security.RateLimits: the charges an ingest takes in its write script are the limits library's
own windows (a hit on another route and a charge in the write share one budget), in the order
separate hits took them, and a refused charge answers the 429 of its rule. Real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, g
from prometheus_client import CollectorRegistry

from detection_api.app.problems import Problem
from detection_api.app.security import RateLimits
from detection_api.auth import Principal
from detection_api.local.redis_server import RedisServer
from detection_api.settings import Settings
from detection_api.store.atomic import AtomicWriter, RateLimited


def limits_for(server: RedisServer, rate_limit: str) -> RateLimits:
    settings = Settings(redis_url=server.url, jwt_secret_key="k" * 40, rate_limit=rate_limit)
    return RateLimits(settings)


@pytest.fixture
def as_producer() -> Iterator[None]:
    app = Flask("t")
    with app.test_request_context("/api/v1/detections", method="POST"):
        g.principal = Principal("camera-operator", frozenset({"detections:write"}), "jwt")
        yield


def test_arrival_then_the_rest_under_every_rule(
    redis_server: RedisServer, as_producer: None
) -> None:
    charges = limits_for(redis_server, "100/second;1000/hour").window_charges(5)
    assert [(c.limit, c.expiry_seconds, c.amount) for c in charges] == [
        (100, 1, 1),
        (1000, 3600, 1),
        (100, 1, 4),
        (1000, 3600, 4),
    ]
    assert all("sub:camera-operator" in c.current_key for c in charges)
    assert [
        (c.limit, c.amount) for c in limits_for(redis_server, "7/minute").window_charges(1)
    ] == [(7, 1)]


def test_each_producer_is_charged_on_its_own_windows_the_keys_built_once(
    redis_server: RedisServer,
) -> None:
    limits = limits_for(redis_server, "100/second;1000/hour")
    app = Flask("t")
    keys: dict[str, list[tuple[str, str]]] = {}
    for subject in ("producer-a", "producer-b", "producer-a"):
        with app.test_request_context("/api/v1/detections", method="POST"):
            g.principal = Principal(subject, frozenset({"detections:write"}), "jwt")
            charges = limits.window_charges(3)
        got = [(c.previous_key, c.current_key) for c in charges]
        assert keys.setdefault(subject, got) == got  # the same keys again for the same producer
        rule_keys = [
            limits.storage._current_window_key(r.key_for(f"sub:{subject}")) for r in limits.rules
        ]
        assert [c.current_key for c in charges] == [
            limits.storage.prefixed_key(k) for k in rule_keys * 2
        ]
    assert keys["producer-a"] != keys["producer-b"]
    assert limits._windows.cache_info().misses == 2  # built once per producer


def test_a_charge_in_the_write_and_a_hit_elsewhere_share_one_budget(
    redis_server: RedisServer, as_producer: None
) -> None:
    limits = limits_for(redis_server, "10/minute")
    writer = AtomicWriter(redis_server.client())
    writer.charge(limits.window_charges(6))  # an ingest of 6, taken by the write script
    limits.charge(3)  # a read on another route: the library's own hit
    stats = limits.limiter.get_window_stats(limits.rules[0], "sub:camera-operator")
    assert stats.remaining == 1
    with pytest.raises(RateLimited) as refused:
        writer.charge(limits.window_charges(2))  # arrival fits (10), the rest does not
    assert refused.value.index == 1
    problem = limits.refused(refused.value.index)
    assert problem.status == 429
    assert problem.headers["RateLimit-Limit"] == "10"
    assert problem.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(problem.headers["Retry-After"]) <= 60
    with pytest.raises(Problem):
        limits.charge(1)


def _headers_app(settings: Settings) -> Flask:
    from flask import Response

    from detection_api.app.security import install_cors_and_headers

    app = Flask("t")
    install_cors_and_headers(app, settings)

    @app.get("/plain")
    def plain() -> str:
        return "ok"

    @app.get("/cached")
    def cached() -> Response:
        response = Response("ok")
        response.headers["cache-control"] = "max-age=60"  # the route's own, in any case
        return response

    return app


def test_security_headers_on_every_answer_and_a_routes_own_kept() -> None:
    app = _headers_app(Settings(jwt_secret_key="k" * 40))
    client = app.test_client()
    plain = client.get("/plain")
    assert plain.headers["X-Content-Type-Options"] == "nosniff"
    assert plain.headers["X-Frame-Options"] == "DENY"
    assert plain.headers["Referrer-Policy"] == "no-referrer"
    assert plain.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in plain.headers  # plain HTTP, no proxy said TLS
    cached = client.get("/cached")
    assert cached.headers.getlist("Cache-Control") == ["max-age=60"]
    assert cached.headers["X-Frame-Options"] == "DENY"
    missing = client.get("/nowhere")  # answers Flask makes itself get them too
    assert missing.status_code == 404 and missing.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("base_url", "forwarded", "hsts"),
    [
        ("https://api.example", None, True),
        ("http://api.example", "https", True),
        ("http://api.example", "https, http", True),  # the first proxy's view counts
        ("http://api.example", " https ", True),
        ("http://api.example", "http, https", False),
        ("http://api.example", None, False),
    ],
)
def test_hsts_only_over_tls(base_url: str, forwarded: str | None, hsts: bool) -> None:
    client = _headers_app(Settings(jwt_secret_key="k" * 40)).test_client()
    headers = {"X-Forwarded-Proto": forwarded} if forwarded is not None else {}
    answer = client.get("/plain", base_url=base_url, headers=headers)
    assert ("Strict-Transport-Security" in answer.headers) is hsts
    if hsts:
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_only_limited_requests_pay_in_the_before_request_hook(redis_server: RedisServer) -> None:
    """Open paths and CORS preflights never pay; ingest routes pay in their write (not here);
    any other request pays 1 when it arrives, and past the limit is answered 429."""
    from detection_api.app.errors import ProblemResponder
    from detection_api.app.metrics import FunctionMetrics
    from detection_api.app.security import install_auth, install_rate_limits

    settings = Settings(
        redis_url=redis_server.url, auth_disabled=True, rate_limit="2/minute", jwt_secret_key=None
    )
    app = Flask("t")
    ProblemResponder(FunctionMetrics(CollectorRegistry(), ()), 1024).install(app)
    install_auth(app, settings)
    install_rate_limits(app, settings)

    @app.route("/health", methods=["GET", "OPTIONS"])
    @app.route("/records", methods=["GET", "OPTIONS"])
    @app.post("/api/v1/detections", endpoint="detections.create_detections")
    def answer() -> str:
        g.rate_charged = True  # as the ingest views mark it: their write took the charge
        return "ok"

    client = app.test_client()
    for _ in range(4):
        assert client.get("/health").status_code == 200
        assert client.options("/records").status_code == 200
        assert client.post("/api/v1/detections").status_code == 200
    assert [client.get("/records").status_code for _ in range(3)] == [200, 200, 429]
