"""The function as the Procfile runs it (functions-framework), against a real Redis.

Covers the README's "HTTP API": CloudEvents in three modes, v1 REST, records, idempotency,
thresholds, problem+json for every malformed input with nothing left in the queue, and Redis
outages (503, then recovery without a restart).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from http_client import Reply, post_json, request
from product import start_function

from detection_api.local.ports import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
CREATED = "org.detectionapi.detection.created"
TAK_QUEUE = "rq:queue:tak"


@pytest.fixture
def function_factory(redis_server, start_process) -> Callable[..., str]:
    def start(**env: str) -> str:
        return start_function(
            start_process,
            {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true", **env},
            name=f"function-{len(env)}-{free_port()}",
        )

    return start


@pytest.fixture
def function_url(function_factory) -> str:
    return function_factory()


def detection(**changes: Any) -> dict[str, Any]:
    det = copy.deepcopy(EXAMPLE)
    det.pop("detection_id", None)
    meta = changes.pop("sensor_metadata", {})
    det.update(changes)
    det["sensor_metadata"].update(meta)
    return det


def event(data: Any, event_id: str = "ev-1", source: str = "/test/drone") -> CloudEvent:
    return CloudEvent(
        {"type": CREATED, "source": source, "id": event_id, "datacontenttype": "application/json"},
        data,
    )


def post_event(url: str, ev: CloudEvent, mode: str = "binary") -> Reply:
    headers, body = to_binary(ev) if mode == "binary" else to_structured(ev)
    return request(url, "POST", "/", body, dict(headers))


def queued_record_ids(redis_server) -> list[list[str]]:
    """The record ids each queued job carries, in queue order."""
    from detection_api.store.tak_jobs import tak_queue

    queue = tak_queue(redis_server.client())
    return [
        [d["record_id"] for d in queue.fetch_job(job_id).kwargs["deliveries"]]
        for job_id in queue.job_ids
    ]


def assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.header("content-type") == "application/problem+json"
    body = reply.json
    assert body["status"] == status
    assert body["type"].startswith("urn:detection-api:problem:")
    assert b"Traceback" not in reply.body
    return body


# -- happy paths ------------------------------------------------------------------------------


def test_rest_answers_cot_xml_with_location_and_queues_one_job(function_url, redis_server):
    reply = post_json(function_url, "/api/v1/detections", detection())
    assert reply.status == 201
    assert reply.header("content-type").startswith("application/xml")
    assert reply.body.startswith(b"<event ")
    assert b'how="m-i"' in reply.body
    location = reply.header("location")
    assert location.startswith("/api/v1/detections/")
    record = request(function_url, "GET", location).json
    assert record["state"] == "queued"
    assert record["cot"].encode() == reply.body
    assert redis_server.client().llen(TAK_QUEUE) == 1


def test_rest_list_with_accept_json_answers_one_outcome_each(function_url, redis_server):
    reply = post_json(
        function_url,
        "/api/v1/detections",
        [detection(detection_id="a-1"), detection(detection_id="a-2")],
        Accept="application/json",
    )
    assert reply.status == 201
    body = reply.json
    assert [o["detection_id"] for o in body] == ["a-1", "a-2"]
    assert all(o["geolocation"]["flag"] in {"GREEN", "YELLOW", "RED"} for o in body)
    assert queued_record_ids(redis_server) == [[body[0]["id"], body[1]["id"]]]  # one job


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_cloudevent_gets_a_reply_event_of_another_type(function_url, redis_server, mode):
    reply = post_event(function_url, event(detection(), event_id=f"ev-{mode}"), mode)
    assert reply.status == 200, reply.body
    assert reply.header("ce-type") == "org.detectionapi.detection.geolocated"
    assert reply.header("ce-subject") == f"ev-{mode}"  # the detection id defaults to the event id
    data = reply.json
    assert data["state"] == "queued"
    assert data["cot"].startswith("<event ")
    assert redis_server.client().llen(TAK_QUEUE) == 1


def test_batch_of_cloudevents_answers_a_batch_of_replies(function_url, redis_server):
    items = [json.loads(to_structured(event(detection(), event_id=f"b-{i}"))[1]) for i in range(5)]
    reply = request(
        function_url,
        "POST",
        "/",
        json.dumps(items).encode(),
        {"Content-Type": "application/cloudevents-batch+json"},
    )
    assert reply.status == 200, reply.body
    assert reply.header("content-type") == "application/cloudevents-batch+json"
    replies = reply.json
    assert [r["subject"] for r in replies] == [f"b-{i}" for i in range(5)]
    # One rq job carries the whole request (payload v2), in order.
    assert queued_record_ids(redis_server) == [[r["data"]["id"] for r in replies]]


def test_redelivered_event_gets_the_same_answer_and_is_queued_once(function_url, redis_server):
    first = post_event(function_url, event(detection(), event_id="dup-1"))
    second = post_event(function_url, event(detection(), event_id="dup-1"))
    assert first.status == second.status == 200
    assert first.header("ce-id") == second.header("ce-id")
    assert first.json["uid"] == second.json["uid"]
    assert second.json.get("duplicate") is True
    assert redis_server.client().llen(TAK_QUEUE) == 1
    # Same id from another source is another event.
    third = post_event(function_url, event(detection(), event_id="dup-1", source="/other"))
    assert third.header("ce-id") != first.header("ce-id")
    assert redis_server.client().llen(TAK_QUEUE) == 2


def test_a_redelivered_list_gets_the_same_answers_reading_its_job_once(function_url, redis_server):
    """A producer resending a whole list (its first answer lost): every detection answered from
    its record, CoT included, and the one job that holds their CoT read once, not once each."""
    items = [detection(detection_id=f"list-{i}", camera_id="cam-a") for i in range(40)]
    first = post_json(function_url, "/api/v1/detections", items, Accept="application/json")
    assert first.status == 201, first.body
    redis = redis_server.client()
    redis.config_resetstat()
    again = post_json(function_url, "/api/v1/detections", items, Accept="application/json")
    assert again.status == 201, again.body
    assert [a["id"] for a in again.json] == [f["id"] for f in first.json]
    assert all(a["duplicate"] is True for a in again.json)
    assert [a["geolocation"] for a in again.json] == [f["geolocation"] for f in first.json]
    assert redis.info("commandstats")["cmdstat_hget"]["calls"] == 1
    assert queued_record_ids(redis_server) == [[f["id"] for f in first.json]]
    xml = post_json(function_url, "/api/v1/detections", items[:3], Accept="application/xml")
    assert xml.status == 201 and xml.body.count(b"<event ") == 3  # the CoT, from the job


def test_replies_off_answers_202(function_factory):
    url = function_factory(REPLY_EVENTS="false")
    reply = post_event(url, event(detection(), event_id="quiet"))
    assert reply.status == 202
    assert reply.body == b""


def test_thresholds_record_filtered_detections_without_queueing(function_factory, redis_server):
    url = function_factory(MIN_AI_CONFIDENCE="0.95")
    reply = post_json(url, "/api/v1/detections", detection(), Accept="application/json")
    assert reply.status == 201
    assert reply.json["state"] == "filtered"
    assert "MIN_AI_CONFIDENCE" in reply.json["filter_reason"]
    assert redis_server.client().llen(TAK_QUEUE) == 0
    record = request(url, "GET", reply.header("location")).json
    assert record["state"] == "filtered"


def test_health_ready_openapi_and_metrics(function_url):
    assert request(function_url, "GET", "/health").status == 200
    assert request(function_url, "GET", "/ready").status == 200
    doc = request(function_url, "GET", "/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/detections" in doc["paths"]
    post_json(function_url, "/api/v1/detections", detection())
    text = request(function_url, "GET", "/metrics").body.decode()
    for name in (
        "detection_api_requests_total",
        "detection_api_request_duration_seconds_bucket",
        "detection_api_detections_total",
        "detection_api_ce90_meters_bucket",
        'detection_queue_depth{queue="tak"} 1.0',
    ):
        assert name in text
    # Through the ingress (which adds forwarding headers) metrics are not served.
    via_ingress = request(function_url, "GET", "/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert_problem(via_ingress, 404)


def test_unknown_record_is_404_problem(function_url):
    assert_problem(request(function_url, "GET", "/api/v1/detections/ffff"), 404)
    assert_problem(request(function_url, "GET", "/nowhere"), 404)


# -- bad input: 4xx problem+json, nothing queued ------------------------------------------------


def _bad_rest_cases() -> list[tuple[str, Any, int, str | None]]:
    nan_body = json.dumps(detection(ai_confidence=float("nan")))  # Python writes bare NaN
    assert "NaN" in nan_body
    return [
        ("pixel outside image", detection(pixel_x=99_999.0), 400, "pixel_x"),
        (
            "missing class",
            {k: v for k, v in detection().items() if k != "object_class"},
            400,
            "object_class",
        ),
        (
            "pitch out of range",
            detection(sensor_metadata={"pitch": -91}),
            400,
            "sensor_metadata.pitch",
        ),
        ("wrong type", detection(ai_confidence="high"), 400, "ai_confidence"),
        ("not an object", [1, 2], 400, "[0]"),
        ("naive timestamp", detection(timestamp="2026-11-26T14:05:09"), 400, "timestamp"),
        ("NaN", nan_body, 400, None),
        ("above the horizon", detection(sensor_metadata={"pitch": 10.0}), 422, "sensor_metadata"),
        ("empty list", [], 400, None),
    ]


@pytest.mark.parametrize(
    ("case", "payload", "status", "path"), _bad_rest_cases(), ids=lambda v: str(v)[:20]
)
def test_bad_rest_input_is_a_problem_and_stores_nothing(
    function_url, redis_server, case, payload, status, path
):
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    reply = request(
        function_url, "POST", "/api/v1/detections", body, {"Content-Type": "application/json"}
    )
    problem = assert_problem(reply, status)
    if path is not None:
        assert any(e["path"].startswith(path) for e in problem["errors"]), problem
    client = redis_server.client()
    assert client.llen(TAK_QUEUE) == 0
    assert not client.keys("detection:record:*")


def test_bad_media_type_and_oversized_bodies(function_factory, redis_server):
    url = function_factory(MAX_BODY_BYTES="4096")
    assert_problem(
        request(url, "POST", "/api/v1/detections", b"x", {"Content-Type": "text/plain"}), 415
    )
    big = json.dumps(detection(source="x" * 5000)).encode()
    assert_problem(
        request(url, "POST", "/api/v1/detections", big, {"Content-Type": "application/json"}), 413
    )
    headers, _ = to_binary(event(detection()))
    assert_problem(request(url, "POST", "/", big, dict(headers)), 413)
    assert redis_server.client().llen(TAK_QUEUE) == 0


def test_bad_cloudevents_are_problems_and_store_nothing(function_url, redis_server):
    headers, body = to_binary(event(detection()))
    no_id = {k: v for k, v in headers.items() if k != "ce-id"}
    assert_problem(request(function_url, "POST", "/", body, no_id), 400)
    wrong_type = dict(headers, **{"ce-type": "com.example.other"})
    assert_problem(request(function_url, "POST", "/", body, wrong_type), 400)
    assert_problem(
        request(function_url, "POST", "/", body, dict(headers, **{"content-type": "text/csv"})),
        415,
    )
    invalid_data = to_binary(event(detection(ai_confidence=7)))
    problem = assert_problem(
        request(function_url, "POST", "/", invalid_data[1], dict(invalid_data[0])), 400
    )
    assert problem["errors"][0]["path"] == "ai_confidence"
    batch_with_one_bad = [
        json.loads(to_structured(event(detection(), event_id="ok"))[1]),
        json.loads(to_structured(event(detection(pixel_y=-1.0), event_id="bad"))[1]),
    ]
    problem = assert_problem(
        request(
            function_url,
            "POST",
            "/",
            json.dumps(batch_with_one_bad).encode(),
            {"Content-Type": "application/cloudevents-batch+json"},
        ),
        400,
    )
    assert problem["errors"][0]["path"].startswith("[1].pixel_y")
    assert redis_server.client().llen(TAK_QUEUE) == 0
    assert not redis_server.client().keys("detection:record:*")


# -- Redis outage ---------------------------------------------------------------------------------


def test_redis_down_is_503_with_retry_after_and_recovers_by_itself(function_url, redis_server):
    assert post_json(function_url, "/api/v1/detections", detection()).status == 201
    redis_server.kill()
    reply = post_json(function_url, "/api/v1/detections", detection())
    problem = assert_problem(reply, 503)
    assert reply.header("retry-after")
    assert problem["type"].endswith("redis_unavailable")
    assert_problem(request(function_url, "GET", "/ready"), 503)
    assert request(function_url, "GET", "/health").status == 200  # alive, just not ready

    redis_server.restart()
    reply = post_json(function_url, "/api/v1/detections", detection())
    assert reply.status == 201, reply.body
    assert request(function_url, "GET", "/ready").status == 200
    # The first job was acknowledged before the kill: appendonly kept it.
    assert redis_server.client().llen(TAK_QUEUE) == 2


def test_audit_trail_per_record_and_for_rejections(function_url, redis_server):
    reply = post_json(function_url, "/api/v1/detections", detection(detection_id="audit-1"))
    events = request(function_url, "GET", reply.header("location") + "/events").json
    assert [e["event"] for e in events] == ["received", "queued"]
    assert all(e["detection_id"] == "audit-1" for e in events)
    post_json(function_url, "/api/v1/detections", detection(detection_id="bad-1", pixel_x=-5.0))
    trail = redis_server.client().xrange("detection:audit")
    rejected = [f for _, f in trail if f[b"event"] == b"rejected"]
    assert rejected[-1][b"detection_id"] == b"bad-1"
    assert rejected[-1][b"reason"].startswith(b"validation")


def test_alert_classes_queue_a_discord_notification_with_the_detection(
    function_factory, redis_server
):
    url = function_factory(
        DISCORD_WEBHOOK_URL="http://127.0.0.1:9/webhook-placeholder",
        ALERT_CLASSES="vehicle",
        ALERT_MIN_CONFIDENCE="0.5",
    )
    assert post_json(url, "/api/v1/detections", detection()).status == 201
    assert post_json(url, "/api/v1/detections", detection(object_class="person")).status == 201
    client = redis_server.client()
    assert client.llen("rq:queue:notify") == 1  # the vehicle only
    assert client.llen(TAK_QUEUE) == 2
