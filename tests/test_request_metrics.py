"""Request metrics under the names and labels the alert rules use: routed requests, requests a
before-request hook answers (401), unmatched paths and failed error handling are all counted and
timed; /metrics is prometheus-flask-exporter's, never through the ingress. Real Redis, the app's
own Flask test client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from detection_api.app.http_app import create_app
from detection_api.local.redis_server import RedisServer
from detection_api.settings import Settings

SECRET = "k" * 40  # test-only HS256 secret
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
RECORD_RULE = "/api/v1/detections/<record_id>"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    server = RedisServer(data_dir=tmp_path).start()
    try:
        settings = Settings(redis_url=server.url, jwt_secret_key=SECRET)
        yield create_app(settings).test_client()
    finally:
        server.stop()


def bearer(scope: str = "detections:read") -> dict[str, str]:
    claims = {"sub": "reader", "scope": scope, "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, 'HS256')}"}


def samples(client: FlaskClient) -> list[tuple[str, dict[str, str], float]]:
    response = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    text = response.get_data(as_text=True)
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in found if n == name and all(lab.get(k) == w for k, w in labels.items())
    )


def test_routed_rejected_and_unmatched_requests_are_counted_by_route_template(
    client: FlaskClient,
) -> None:
    for _ in range(3):  # routed: the view answers 404 (no such record)
        assert client.get("/api/v1/detections/abc123", headers=bearer()).status_code == 404
    for _ in range(2):  # answered by the auth hook before any view
        assert client.get("/api/v1/detections/abc123").status_code == 401
    assert client.get("/no/such/path", headers=bearer()).status_code == 404
    assert client.delete("/health").status_code == 405

    found = samples(client)
    requests = "detection_api_requests_total"
    assert value(found, requests, method="GET", endpoint=RECORD_RULE, status="404") == 3
    assert value(found, requests, method="GET", endpoint=RECORD_RULE, status="401") == 2
    assert value(found, requests, method="GET", endpoint="unmatched", status="404") == 1
    assert value(found, requests, method="DELETE", endpoint="unmatched", status="405") == 1
    duration = "detection_api_request_duration_seconds_count"
    assert value(found, duration, method="GET", endpoint=RECORD_RULE) == 5
    # Labels are the contract's, nothing more (no raw paths, no ids).
    labelled = [lab for n, lab, _ in found if n == requests]
    assert all(set(lab) == {"method", "endpoint", "status"} for lab in labelled)
    assert not any("abc123" in lab["endpoint"] for lab in labelled)


def test_scrapes_are_counted_and_the_exporters_default_metrics_are_off(
    client: FlaskClient,
) -> None:
    samples(client)
    found = samples(client)
    requests = "detection_api_requests_total"
    assert value(found, requests, method="GET", endpoint="/metrics", status="200") == 1
    assert not [n for n, _, _ in found if n.startswith("flask_")]


def test_metrics_are_never_served_through_the_ingress(client: FlaskClient) -> None:
    for header in ({"X-Forwarded-For": "10.1.2.3"}, {"Forwarded": "for=10.1.2.3"}):
        response = client.get("/metrics", headers=header)
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
        assert "detection_api" not in response.get_data(as_text=True)
    classic = client.get("/metrics")
    assert classic.status_code == 200
    assert classic.content_type.startswith("text/plain")
    assert "detection_api_requests_total" in classic.get_data(as_text=True)


def test_a_request_whose_error_handling_itself_fails_is_counted_as_a_500(
    redis_server: RedisServer,
) -> None:
    app = create_app(Settings(redis_url=redis_server.url, jwt_secret_key=SECRET))

    class Broken(Exception):
        pass

    def broken_view() -> str:
        raise Broken

    def failing_handler(error: Broken) -> str:
        raise RuntimeError("the handler fails too")

    app.add_url_rule("/broken", view_func=broken_view)
    app.register_error_handler(Broken, failing_handler)
    client = app.test_client()
    assert client.get("/broken", headers=bearer()).status_code == 500
    found = samples(client)
    requests = "detection_api_requests_total"
    assert value(found, requests, method="GET", endpoint="/broken", status="500") == 1
    duration = "detection_api_request_duration_seconds_count"
    assert value(found, duration, method="GET", endpoint="/broken") == 1


def test_ensure_sync_answers_as_flask_does_and_asks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import flask.app

    from detection_api.app.request_metrics import MeteredFlask

    asked: list[object] = []
    real = flask.app.iscoroutinefunction

    def counting(func: object) -> bool:
        asked.append(func)
        return real(func)

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    app = MeteredFlask("t")

    def view() -> str:
        return "ok"

    async def coroutine_view() -> str:
        return "ok"

    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view
    assert asked == [view]

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> str:
            return "ok"

    handler = Unhashable()
    assert app.ensure_sync(handler) is handler
    assert asked[-1] is handler
    # A coroutine function still gets Flask's own treatment: without Flask's async extra
    # installed (as here), the same RuntimeError as a plain Flask app raises.
    with pytest.raises(RuntimeError) as plain:
        flask.Flask("plain").ensure_sync(coroutine_view)
    with pytest.raises(RuntimeError) as ours:
        app.ensure_sync(coroutine_view)
    assert str(ours.value) == str(plain.value)
