"""Authentication, scopes, rate limits shared through Redis, CORS and headers: the real function."""

from __future__ import annotations

import time

import jwt
import pytest
from http_client import post_json, request
from product import function_argv
from test_function_http import assert_problem, detection

from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok

SECRET = "integration-test-secret-" + "x" * 16  # generated per test run, never a real key


def bearer(scope: str = "detections:write", sub: str = "drone-7", **claims: object) -> str:
    body = {"sub": sub, "scope": scope, "exp": int(time.time()) + 300, **claims}
    return "Bearer " + jwt.encode(body, SECRET, algorithm="HS256")


@pytest.fixture
def secured(redis_server, start_process):
    started = []

    def start(**env: str) -> str:
        port = free_port()
        process = start_process(
            f"function-{port}",
            function_argv(port),
            env={"REDIS_URL": redis_server.url, "JWT_SECRET_KEY": SECRET, **env},
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
        )
        started.append(process)
        return f"http://127.0.0.1:{port}"

    start.processes = started  # type: ignore[attr-defined]
    return start


def test_rejection_paths(secured, redis_server):
    url = secured()
    path = "/api/v1/detections"
    cases = [
        ({}, 401),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        ({"Authorization": "Bearer garbage"}, 401),
        ({"Authorization": bearer(exp=int(time.time()) - 600)}, 401),
        ({"Authorization": bearer(nbf=int(time.time()) + 600)}, 401),
        ({"Authorization": bearer(scope="detections:read")}, 403),
    ]
    for headers, status in cases:
        reply = post_json(url, path, detection(), **headers)
        body = assert_problem(reply, status)
        if status == 401:
            assert reply.header("www-authenticate").startswith("Bearer")
        assert "eyJ" not in reply.body.decode(), body  # no token echoed back
    assert redis_server.client().llen("rq:queue:tak") == 0
    good = post_json(url, path, detection(), Authorization=bearer())
    assert good.status == 201
    location = good.header("location")
    assert_problem(request(url, "GET", location, headers={"Authorization": bearer()}), 403)
    reader = request(url, "GET", location, headers={"Authorization": bearer("detections:read")})
    assert reader.status == 200
    # Open paths stay open.
    for open_path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert request(url, "GET", open_path).status == 200


def test_no_secret_in_logs_errors_metrics_or_the_audit_stream(secured, redis_server):
    url = secured(LOG_LEVEL="DEBUG")
    tokens = [bearer(exp=int(time.time()) - 600), bearer(scope="detections:read"), bearer()]
    bodies = []
    for tok in tokens:
        bodies.append(post_json(url, "/api/v1/detections", detection(), Authorization=tok).body)
    # A producer that put a secret in a wrong field must not see it echoed back either.
    leaky = detection(ai_confidence=SECRET)
    bodies.append(post_json(url, "/api/v1/detections", leaky, Authorization=tokens[2]).body)
    bodies.append(request(url, "GET", "/metrics").body)
    process = secured.processes[-1]
    audit = b" ".join(
        b" ".join(v for v in fields.values())
        for _, fields in redis_server.client().xrange("detection:audit")
    )
    haystacks = {
        "log": process.log_text().encode(),
        "answers": b" ".join(bodies),
        "audit": audit,
    }
    assert b"rejected" in audit  # the trail has the rejections, just not the secrets
    for where, text in haystacks.items():
        for tok in tokens:
            assert tok.split()[1].encode() not in text, where
        assert SECRET.encode() not in text, where


def test_cluster_trust_lets_broker_events_in_without_a_token(secured):
    from cloudevents.conversion import to_binary
    from test_function_http import event

    url = secured(AUTH_TRUST_CLUSTER_EVENTS="true")
    headers, body = to_binary(event(detection(), event_id="trusted"))
    # Trusted only on the Service's cluster-local address (app/cluster_events.py).
    cluster = {**dict(headers), "Host": "detection-api.detection-api.svc.cluster.local"}
    assert request(url, "POST", "/", body, cluster).status == 200
    assert request(url, "POST", "/", body, dict(headers)).status == 401
    # ...but only CloudEvents on "/": the REST API still needs a token.
    assert_problem(post_json(url, "/api/v1/detections", detection()), 401)


def test_rate_limit_holds_across_two_function_processes(secured):
    env = {"RATE_LIMIT": "6/minute"}
    first, second = secured(**env), secured(**env)
    token = bearer(sub="shared-producer")
    statuses = []
    for i in range(8):
        url = first if i % 2 == 0 else second
        statuses.append(post_json(url, "/api/v1/detections", detection(), Authorization=token))
    assert [r.status for r in statuses[:6]] == [201] * 6
    limited = statuses[6]
    assert_problem(limited, 429)
    assert int(limited.header("retry-after")) >= 1
    assert limited.header("ratelimit-limit") == "6"
    assert limited.header("ratelimit-remaining") == "0"
    # Another subject has its own budget.
    other = post_json(first, "/api/v1/detections", detection(), Authorization=bearer(sub="b"))
    assert other.status == 201
    metrics = request(first, "GET", "/metrics").body.decode()
    assert 'detection_api_rejections_total{reason="rate_limited"}' in metrics


def test_cors_and_security_headers(secured):
    url = secured(CORS_ORIGINS="https://console.example")
    allowed = request(
        url,
        "OPTIONS",
        "/api/v1/detections",
        headers={
            "Origin": "https://console.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert allowed.header("access-control-allow-origin") == "https://console.example"
    refused = request(url, "GET", "/health", headers={"Origin": "https://evil.example"})
    assert refused.header("access-control-allow-origin") is None
    assert refused.header("x-content-type-options") == "nosniff"
    assert refused.header("x-frame-options") == "DENY"
    assert refused.header("strict-transport-security") is None  # plain HTTP here
    behind_tls = request(url, "GET", "/health", headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.header("strict-transport-security").startswith("max-age=")


def test_no_cors_by_default(secured):
    url = secured()
    reply = request(url, "GET", "/health", headers={"Origin": "https://console.example"})
    assert reply.header("access-control-allow-origin") is None
