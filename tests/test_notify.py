"""Discord notifications, the pure parts: alert policy, payloads, message building within Discord's
limits, coalescing, TAK-outage de-duplication, the rate limiter, webhook answers, URL redaction."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection_api.alerts.notifier import (
    NotifierConfig,
    OpenOutage,
    Outcome,
    SlidingWindowLimiter,
    classify_response,
    coalesce_tak_events,
    redact_url,
    retry_delay,
    scrub,
    usable_webhook_url,
)
from detection_api.alerts.notify import (
    MAX_CONTENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_EMBEDS,
    MAX_FIELD_NAME_CHARS,
    MAX_FIELD_VALUE_CHARS,
    MAX_FIELDS,
    MAX_FOOTER_CHARS,
    MAX_TITLE_CHARS,
    MAX_TOTAL_EMBED_CHARS,
    InvalidNotification,
    Notification,
    NotificationKind,
    build_message,
    dead_letter_payload,
    detection_alert_payload,
    embed_chars,
    enqueue_notification,
    escape_markdown,
    map_link,
    notify_queue,
    parse_notification,
    should_alert,
    tak_disconnected_payload,
    tak_reconnected_payload,
)
from detection_api.settings import Settings

WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/AbCdEf-SECRET_token_0123456789xyz"
TOKEN = "AbCdEf-SECRET_token_0123456789xyz"


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def _notification(kind: str, payload: dict, job_id: str = "job", at: float = 1_700_000_000.0):
    return parse_notification(job_id, {"v": 1, "kind": kind, "payload": payload, "enqueued_at": at})


def _alert(i: int = 0, **overrides: object) -> Notification:
    fields: dict = {
        "record_id": f"rec{i:04d}",
        "object_class": "person",
        "confidence": 0.91,
        "lat": 48.1234567,
        "lon": 11.7654321,
        "ce90_m": 12.34,
        "flag": "GREEN",
        "camera_id": "cam-1",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    fields.update(overrides)
    return _notification("detection_alert", detection_alert_payload(**fields), f"job{i}")


def _disconnected(endpoint: str = "tak.example:8089", job_id: str = "d", since: float = 100.0):
    payload = tak_disconnected_payload(endpoint=endpoint, down_seconds=75, since=since)
    return _notification("tak_disconnected", payload, job_id)


def _reconnected(endpoint: str = "tak.example:8089", job_id: str = "r"):
    payload = tak_reconnected_payload(endpoint=endpoint, down_seconds=300)
    return _notification("tak_reconnected", payload, job_id)


def _dead_letter(i: int = 0, reason: str = "no confirmation after 10 attempt(s)"):
    return _notification("dead_letter", dead_letter_payload(record_id=f"r{i}", reason=reason))


# --- alert policy and payloads -----------------------------------------------------------------


def test_should_alert_matches_configured_classes_at_or_above_the_confidence():
    settings_ = _settings(alert_classes="Person, vehicle", alert_min_confidence=0.8)
    assert should_alert("person", 0.8, settings_)
    assert should_alert("VEHICLE", 0.99, settings_)
    assert not should_alert("person", 0.79, settings_)
    assert not should_alert("dog", 0.99, settings_)
    assert not should_alert("person", 0.99, _settings(alert_classes=""))
    assert should_alert("anything", 0.9, _settings(alert_classes="*", alert_min_confidence=0.5))


def test_notify_queue_is_none_without_a_webhook_and_enqueue_is_then_a_no_op():
    assert notify_queue(object(), _settings()) is None
    # No queue, no Redis touched: would fail on any attribute access of a real queue.
    enqueue_notification(None, "detection_alert", {"anything": "unchecked"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("lat", 91.0), ("lon", -181.0), ("confidence", 1.5), ("confidence", math.nan), ("ce90_m", -1)],
)
def test_detection_alert_payload_refuses_impossible_values(field, value):
    fields = {
        "record_id": "r",
        "object_class": "person",
        "confidence": 0.9,
        "lat": 1.0,
        "lon": 2.0,
        "ce90_m": 3.0,
        field: value,
    }
    with pytest.raises(ValueError, match=field):
        detection_alert_payload(**fields)


def test_parse_notification_names_what_is_wrong():
    good = detection_alert_payload(
        record_id="r", object_class="car", confidence=0.9, lat=1, lon=2, ce90_m=3
    )
    with pytest.raises(InvalidNotification, match="version"):
        parse_notification("j", {"v": 99, "kind": "detection_alert", "payload": good})
    with pytest.raises(InvalidNotification, match="unknown notification kind"):
        parse_notification("j", {"v": 1, "kind": "weather", "payload": good})
    with pytest.raises(InvalidNotification, match="lat"):
        parse_notification(
            "j", {"v": 1, "kind": "detection_alert", "payload": {**good, "lat": "north"}}
        )
    parsed = parse_notification("j", {"v": 1, "kind": "detection_alert", "payload": good})
    assert parsed.kind is NotificationKind.DETECTION_ALERT
    assert parsed.payload.object_class == "car"


def test_long_error_texts_are_cut_not_refused():
    letter = dead_letter_payload(record_id="r", reason="x" * 5000)
    assert len(letter["reason"]) == 1024
    assert letter["reason"].endswith("…")


# --- message content ---------------------------------------------------------------------------


def test_a_detection_alert_shows_class_confidence_position_accuracy_and_a_map_link():
    message = build_message([_alert(7, confidence=0.934, ce90_m=12.345, flag="YELLOW")])
    assert message is not None
    (embed,) = message.embeds
    link = "https://www.openstreetmap.org/?mlat=48.1234567&mlon=11.7654321#map=17/48.1234567/11.7654321"
    assert embed["url"] == link == map_link(48.1234567, 11.7654321)
    assert embed["title"] == "person detected (93%)"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Class"] == "person"
    assert fields["Confidence"] == "93.4%"
    assert fields["Position"] == "48.1234567, 11.7654321"
    assert fields["CE90"] == "12.3 m (YELLOW)"
    assert embed["color"] == 0xF1C40F
    assert embed["footer"]["text"] == "record rec0007"
    assert embed["timestamp"] == "2024-05-01T12:00:00Z"
    assert "1 detection alert" in message.body["content"]
    assert message.body["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize(("flag", "color"), [("GREEN", 0x2ECC71), ("RED", 0xE74C3C)])
def test_embed_color_follows_the_confidence_flag(flag, color):
    message = build_message([_alert(flag=flag)])
    assert message is not None
    assert message.embeds[0]["color"] == color


def test_producer_text_cannot_mention_or_inject_links():
    message = build_message([_alert(object_class="@everyone [free](https://evil.example)")])
    assert message is not None
    body = json.dumps(message.body)
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Class"] == r"\@everyone \[free\]\(https://evil.example\)"
    assert message.body["allowed_mentions"] == {"parse": []}
    assert "[free](" not in body
    assert escape_markdown("a\x00b\x1b_c") == r"ab\_c"


def test_tak_and_dead_letter_notifications_come_first():
    message = build_message([_alert(1), _dead_letter(1), _disconnected(), _dead_letter(2)])
    assert message is not None
    titles = [e["title"] for e in message.embeds]
    assert titles == ["TAK server disconnected", "2 dead letters", "person detected (91%)"]
    assert "tak.example:8089" in message.embeds[0]["description"]
    assert "1 min 15 s" in message.embeds[0]["description"]
    assert "`r1`" in message.embeds[1]["description"]
    content = message.body["content"]
    assert "TAK server disconnected" in content
    assert "2 dead letters" in content
    assert "1 detection alert" in content


def test_alerts_beyond_ten_embeds_are_counted_in_one_summary():
    alerts = [_alert(i, object_class="person" if i % 3 else "vehicle") for i in range(50)]
    message = build_message(alerts)
    assert message is not None
    assert len(message.embeds) == MAX_EMBEDS
    assert message.detailed_alerts == 9
    assert message.summarised_alerts == 41
    summary = message.embeds[-1]
    assert summary["title"] == "41 more detection alerts"
    counted = sum(int(f["value"].split(" ")[0]) for f in summary["fields"])
    assert counted == 41
    assert "50 detection alerts" in message.body["content"]


def test_nothing_to_say_is_no_message():
    assert build_message([]) is None


_texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=1024
).filter(lambda s: s.strip())


@st.composite
def _notification_batches(draw: st.DrawFn) -> list[Notification]:
    batch: list[Notification] = []
    for i in range(draw(st.integers(0, 60))):
        batch.append(
            _alert(
                i,
                object_class=draw(st.one_of(st.sampled_from(["person", "car"]), _texts)),
                camera_id=draw(st.one_of(st.none(), _texts)),
                track_id=draw(st.one_of(st.none(), _texts)),
                record_id=draw(st.one_of(st.just(f"r{i}"), _texts)),
                confidence=draw(st.floats(0, 1)),
                ce90_m=draw(st.floats(0, 1e9)),
            )
        )
    for i in range(draw(st.integers(0, 40))):
        batch.append(_dead_letter(i, reason=draw(_texts)))
    for i in range(draw(st.integers(0, 6))):
        endpoint = draw(_texts)
        batch.append(_disconnected(endpoint, f"d{i}") if i % 2 else _reconnected(endpoint, f"r{i}"))
    if not batch:
        batch.append(_alert())
    return draw(st.permutations(batch))


@settings(max_examples=60, deadline=None)
@given(_notification_batches())
def test_every_message_respects_discords_limits_and_accounts_for_every_alert(batch):
    message = build_message(batch)
    assert message is not None
    body = message.body
    embeds = message.embeds
    assert len(body["content"]) <= MAX_CONTENT_CHARS
    assert 1 <= len(embeds) <= MAX_EMBEDS
    assert sum(embed_chars(e) for e in embeds) <= MAX_TOTAL_EMBED_CHARS
    for embed in embeds:
        assert len(embed["title"]) <= MAX_TITLE_CHARS
        assert len(embed.get("description", "")) <= MAX_DESCRIPTION_CHARS
        assert len(embed.get("footer", {}).get("text", "")) <= MAX_FOOTER_CHARS
        assert len(embed.get("fields", [])) <= MAX_FIELDS
        for embed_field in embed.get("fields", []):
            assert 1 <= len(embed_field["name"]) <= MAX_FIELD_NAME_CHARS
            assert 1 <= len(embed_field["value"]) <= MAX_FIELD_VALUE_CHARS
    alerts = sum(n.kind == NotificationKind.DETECTION_ALERT for n in batch)
    assert message.detailed_alerts + message.summarised_alerts == alerts
    detailed = [e for e in embeds if e.get("footer", {}).get("text", "").startswith("record ")]
    assert len(detailed) == message.detailed_alerts
    if message.summarised_alerts:
        summary = next(e for e in embeds if re.fullmatch(r"\d+ more detection alerts?", e["title"]))
        assert summary["title"].startswith(f"{message.summarised_alerts} more")
        assert _summary_count(summary) == message.summarised_alerts
    json.dumps(body)  # serialisable as it is


def _summary_count(summary: dict) -> int:
    return sum(int(f["value"].split(" ")[0]) for f in summary["fields"])


def test_worst_case_batch_still_fits_and_counts_add_up():
    long = "x" * 1020
    batch = [_disconnected(f"{long}{i}", f"d{i}") for i in range(5)]
    batch += [_dead_letter(i, reason=long) for i in range(40)]
    batch += [
        _alert(i, object_class=f"{i % 40}{long}", camera_id=long, track_id=long, record_id=long)
        for i in range(60)
    ]
    message = build_message(batch)
    assert message is not None
    assert sum(embed_chars(e) for e in message.embeds) <= MAX_TOTAL_EMBED_CHARS
    assert len(message.embeds) <= MAX_EMBEDS
    assert message.detailed_alerts >= 1
    assert _summary_count(message.embeds[-1]) == message.summarised_alerts
    assert message.detailed_alerts + message.summarised_alerts == 60
    assert "… and" in message.embeds[1]["description"]  # dead letters listed, the rest counted


# --- TAK outages: one announcement per outage ---------------------------------------------------


def test_repeated_disconnects_of_one_outage_are_announced_once():
    batch = [_disconnected(job_id="d1"), _disconnected(job_id="d2"), _alert(1)]
    result = coalesce_tak_events(batch, {}, now=1000.0, memory_seconds=3600)
    assert [n.job_id for n in result.shown] == ["d1", "job1"]
    assert [n.job_id for n in result.dropped] == ["d2"]
    assert set(result.open_after) == {"tak.example:8089"}
    assert result.open_after["tak.example:8089"] == OpenOutage(since=100.0, announced_at=1000.0)

    # Later messages: the outage is open, another disconnect is still the same outage.
    later = coalesce_tak_events([_disconnected(job_id="d3")], result.open_after, 1500.0, 3600)
    assert later.shown == []
    assert [n.job_id for n in later.dropped] == ["d3"]


def test_a_reconnect_closes_the_outage_and_only_announced_outages_get_one():
    open_outages = {"tak.example:8089": OpenOutage(100.0, 1000.0)}
    batch = [_reconnected(job_id="r1"), _reconnected(job_id="r2"), _disconnected(job_id="d1")]
    result = coalesce_tak_events(batch, open_outages, now=1100.0, memory_seconds=3600)
    assert [n.job_id for n in result.shown] == ["r1", "d1"]  # a second, new outage
    assert [n.job_id for n in result.dropped] == ["r2"]
    assert result.open_after["tak.example:8089"].announced_at == 1100.0


def test_other_endpoints_and_forgotten_outages_are_announced():
    open_outages = {"a:1": OpenOutage(None, 0.0), "b:2": OpenOutage(None, 9000.0)}
    batch = [_disconnected("a:1", "da"), _disconnected("b:2", "db"), _disconnected("c:3", "dc")]
    result = coalesce_tak_events(batch, open_outages, now=9100.0, memory_seconds=3600)
    assert [n.job_id for n in result.shown] == ["da", "dc"]  # a:1 was announced 9100 s ago
    assert [n.job_id for n in result.dropped] == ["db"]


# --- rate limiting and backoff -----------------------------------------------------------------


def test_limiter_allows_n_per_window_then_waits_for_the_oldest_to_age_out():
    limiter = SlidingWindowLimiter(limit=2, window=60.0)
    assert limiter.delay(0.0) == 0.0
    limiter.record(0.0)
    assert limiter.delay(1.0) == 0.0
    limiter.record(10.0)
    assert limiter.delay(11.0) == pytest.approx(49.0)
    assert limiter.delay(60.0) == 0.0  # the send at t=0 left the window
    limiter.record(60.0)
    assert limiter.delay(61.0) == pytest.approx(9.0)


def test_limiter_inherits_history_from_another_notifier():
    limiter = SlidingWindowLimiter(limit=3, window=60.0)
    limiter.load([10.0, 20.0, 30.0, -100.0], now=40.0)
    assert len(limiter) == 3
    assert limiter.delay(40.0) == pytest.approx(30.0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 5),
    st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=1, max_size=80),
)
def test_limiter_never_lets_more_than_n_through_in_any_window(limit, gaps):
    """A greedy sender that posts whenever the limiter allows: never more than ``limit`` sends in
    any window (a token bucket of capacity N refilled N/min would allow 2N-1)."""
    window = 60.0
    limiter = SlidingWindowLimiter(limit, window)
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.delay(now) == 0.0:
            limiter.record(now)
            sent.append(now)
        else:
            assert limiter.delay(now) > 0
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + window]
        assert len(in_window) <= limit


def test_retry_delay_doubles_up_to_the_cap():
    assert [retry_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# --- webhook answers ---------------------------------------------------------------------------


def test_2xx_is_delivered():
    assert classify_response(204, {}, b"").outcome is Outcome.DELIVERED
    assert classify_response(200, {}, b'{"id": "1"}').outcome is Outcome.DELIVERED


def test_429_honours_retry_after_from_body_then_headers():
    body = json.dumps(
        {"message": "You are being rate limited.", "retry_after": 2.5, "global": False}
    )
    result = classify_response(429, {"Retry-After": "9"}, body.encode())
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after == 2.5
    assert classify_response(429, {"Retry-After": "9"}, b"").retry_after == 9.0
    assert classify_response(429, {"X-RateLimit-Reset-After": "1.25"}, b"").retry_after == 1.25
    assert classify_response(429, {}, b"").retry_after == 5.0
    assert (
        classify_response(429, {}, b'{"retry_after": 1e9}', max_retry_after=600).retry_after == 600
    )
    assert "(global)" in classify_response(429, {}, b'{"retry_after": 1, "global": true}').detail


def test_server_errors_and_timeouts_are_retried_others_rejected():
    assert classify_response(500, {}, b"oops").outcome is Outcome.RETRY
    assert classify_response(503, {"Retry-After": "7"}, b"").retry_after == 7.0
    assert classify_response(408, {}, b"").outcome is Outcome.RETRY
    rejected = classify_response(404, {}, b'{"message": "Unknown Webhook", "code": 10015}')
    assert rejected.outcome is Outcome.REJECTED
    assert rejected.detail == "HTTP 404: Unknown Webhook"
    assert classify_response(301, {}, b"").outcome is Outcome.REJECTED
    assert classify_response(400, {}, b"bad").outcome is Outcome.REJECTED


def test_answers_echoing_the_webhook_url_are_scrubbed():
    body = f"no webhook at {WEBHOOK}".encode()
    result = classify_response(404, {}, body, webhook_url=WEBHOOK)
    assert TOKEN not in result.detail
    assert "123456789012345678/" not in result.detail


# --- the URL is a secret -----------------------------------------------------------------------


def test_redacted_url_keeps_only_scheme_and_host():
    assert redact_url(WEBHOOK) == "https://discord.com/***"
    assert redact_url("http://127.0.0.1:8080/api/webhooks/1/tok") == "http://127.0.0.1:8080/***"


def test_scrub_removes_the_url_and_its_token_wherever_they_appear():
    text = f"failed {WEBHOOK} token={TOKEN} path=/api/webhooks/123456789012345678/{TOKEN}"
    cleaned = scrub(text, WEBHOOK)
    assert TOKEN not in cleaned
    assert re.search(r"webhooks/\d+/", cleaned) is None
    assert scrub("nothing secret", None) == "nothing secret"


def test_config_repr_never_shows_the_webhook_url():
    config = NotifierConfig(webhook_url=WEBHOOK, max_per_minute=3)
    assert TOKEN not in repr(config)
    assert "max_per_minute=3" in repr(config)
    assert NotifierConfig.from_settings(_settings(discord_webhook_url=WEBHOOK)).webhook_url == (
        WEBHOOK
    )


def test_only_http_urls_are_usable():
    assert usable_webhook_url(WEBHOOK)
    assert usable_webhook_url("http://127.0.0.1:9/x")
    assert not usable_webhook_url(None)
    assert not usable_webhook_url("")
    assert not usable_webhook_url("file:///etc/passwd")
    assert not usable_webhook_url("discord.com/api/webhooks/1/x")


def test_summary_counts_add_up_with_many_classes():
    alerts = [_alert(i, object_class=f"class-{i % 40}") for i in range(200)]
    message = build_message(alerts)
    assert message is not None
    summary = message.embeds[-1]
    counted = Counter()
    for embed_field in summary["fields"]:
        counted[embed_field["name"]] += int(embed_field["value"].split(" ")[0])
    assert sum(counted.values()) == message.summarised_alerts == 200 - message.detailed_alerts
    assert len(summary["fields"]) == MAX_FIELDS
    assert summary["fields"][-1]["name"] == "other classes"
