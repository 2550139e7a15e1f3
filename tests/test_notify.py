"""Notifications and their rq job on queue ``notify``: alert policy, payload checks, the job written
(against a real Redis) and read back."""

from __future__ import annotations

import math

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from detection_api.alerts.notify import (
    NOTIFY_FUNC,
    OUTAGE_PREFIX,
    DetectionAlert,
    dead_letter_payload,
    detection_alert_payload,
    enqueue_notification,
    notify_queue,
    parse_notification,
    should_alert,
    tak_disconnected_payload,
    tak_reconnected_payload,
)
from detection_api.settings import Settings
from detection_api.store.tak_jobs import read_job_calls

WEBHOOK = "https://discord.example/api/webhooks/1/placeholder-token"  # placeholder, never real


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def _alert(**overrides: object) -> dict:
    fields = {"record_id": "r", "object_class": "car", "confidence": 0.9, "lat": 1, "lon": 2}
    return detection_alert_payload(**{**fields, "ce90_m": 3, **overrides})


def test_should_alert_matches_configured_classes_at_or_above_the_confidence():
    settings = _settings(alert_classes="Person, vehicle", alert_min_confidence=0.8)
    assert should_alert("person", 0.8, settings)
    assert should_alert("VEHICLE", 0.99, settings)
    assert not should_alert("person", 0.79, settings)
    assert not should_alert("dog", 0.99, settings)
    assert not should_alert("person", 0.99, _settings(alert_classes=""))
    assert should_alert("anything", 0.9, _settings(alert_classes="*", alert_min_confidence=0.5))


@pytest.mark.parametrize(
    ("field", "value"),
    [("lat", 91.0), ("lon", -181.0), ("confidence", 1.5), ("confidence", math.nan), ("ce90_m", -1)],
)
def test_detection_alert_payload_refuses_impossible_values(field, value):
    with pytest.raises(ValueError, match=f"at {field}:"):
        _alert(**{field: value})


def test_payloads_are_json_without_empty_fields_and_ignore_unknown_ones():
    alert = _alert(flag="GREEN", timestamp="2024-05-01T12:00:00Z", detection_id="d1")
    assert alert == {
        "record_id": "r",
        "object_class": "car",
        "confidence": 0.9,
        "lat": 1.0,
        "lon": 2.0,
        "ce90_m": 3.0,
        "flag": "GREEN",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    down = tak_disconnected_payload(endpoint="tak:8089", down_seconds=75, since=1.7e9)
    assert down == {"endpoint": "tak:8089", "down_seconds": 75.0}
    assert tak_reconnected_payload(endpoint="tak:8089") == {"endpoint": "tak:8089"}


def test_long_error_texts_are_cut_not_refused():
    letter = dead_letter_payload(record_id="r", reason="x" * 5000)
    assert len(letter["reason"]) == 1024
    assert letter["reason"].endswith("…")


def test_notify_queue_is_none_without_a_webhook_and_enqueue_is_then_a_no_op():
    assert notify_queue(object(), _settings()) is None
    assert notify_queue(object(), _settings(discord_webhook_url="")) is None
    # No queue, no Redis touched, no check: nothing would be posted anyway.
    enqueue_notification(None, "detection_alert", {"anything": "unchecked"})


def test_a_job_is_written_in_the_callers_transaction_and_read_back(redis: Redis):
    queue = notify_queue(redis, _settings(discord_webhook_url=WEBHOOK))
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.set("caller:record", "stored")
        enqueue_notification(queue, "detection_alert", _alert(), pipeline=pipe)
        assert redis.llen("rq:queue:notify") == 0  # nothing before the caller executes
        pipe.execute()
    (job_id,) = Queue("notify", connection=redis, serializer=JSONSerializer).get_job_ids()
    assert redis.get("caller:record") == b"stored"
    assert redis.hget(f"rq:job:{job_id}", "failure_ttl") == b"604800"
    (call,) = read_job_calls(redis, [job_id])
    assert call.func_name == NOTIFY_FUNC
    notification = parse_notification(call.kwargs)
    assert isinstance(notification, DetectionAlert)
    assert notification.object_class == "car"


def test_a_bad_payload_fails_where_it_is_made(redis: Redis):
    queue = notify_queue(redis, _settings(discord_webhook_url=WEBHOOK))
    with pytest.raises(ValueError, match="unknown notification kind 'weather'"):
        enqueue_notification(queue, "weather", {})
    with pytest.raises(ValueError, match="invalid dead_letter payload at reason"):
        enqueue_notification(queue, "dead_letter", {"record_id": "r"})
    assert redis.llen("rq:queue:notify") == 0


def test_parse_notification_names_what_is_wrong():
    good = _alert()
    with pytest.raises(ValueError, match="version 99"):
        parse_notification({"v": 99, "kind": "detection_alert", "payload": good})
    with pytest.raises(ValueError, match="unknown notification kind 'weather'"):
        parse_notification({"v": 1, "kind": "weather", "payload": good})
    with pytest.raises(ValueError, match="no payload object"):
        parse_notification({"v": 1, "kind": "detection_alert", "payload": [1]})
    with pytest.raises(ValueError, match="at lat"):
        parse_notification({"v": 1, "kind": "detection_alert", "payload": {**good, "lat": "n"}})
    parsed = parse_notification({"v": 1, "kind": "detection_alert", "payload": good})
    assert parsed == DetectionAlert.model_validate(good)


def _queued_kinds(redis: Redis) -> list[str]:
    ids = Queue("notify", connection=redis, serializer=JSONSerializer).get_job_ids()
    return [call.kwargs["kind"] for call in read_job_calls(redis, ids)]


def test_a_tak_outage_is_enqueued_once_whoever_reports_it(redis: Redis):
    queue = notify_queue(redis, _settings(discord_webhook_url=WEBHOOK))
    down = tak_disconnected_payload(endpoint="tak:8089", down_seconds=61)
    back = tak_reconnected_payload(endpoint="tak:8089", down_seconds=300)
    enqueue_notification(queue, "tak_reconnected", back)  # no outage announced: nothing to close
    for _ in range(3):  # three forwarders, or one restarted, report the same outage
        enqueue_notification(queue, "tak_disconnected", down)
    assert 21_500 < redis.ttl(f"{OUTAGE_PREFIX}tak:8089") <= 21_600  # forgotten after 6 h
    with redis.pipeline(transaction=True) as pipe:  # also decided at once inside a MULTI
        pipe.multi()
        enqueue_notification(queue, "tak_reconnected", back, pipeline=pipe)
        enqueue_notification(queue, "tak_reconnected", back, pipeline=pipe)
        pipe.execute()
    enqueue_notification(queue, "tak_disconnected", down)  # a new outage
    enqueue_notification(queue, "tak_disconnected", _alert_endpoint("other:8089"))
    assert _queued_kinds(redis) == [
        "tak_disconnected",
        "tak_reconnected",
        "tak_disconnected",
        "tak_disconnected",
    ]


def _alert_endpoint(endpoint: str) -> dict:
    return tak_disconnected_payload(endpoint=endpoint, down_seconds=61)
