"""Rendering a batch of notifications as one Discord message within Discord's limits. Pure."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection_api.alerts.messages import (
    MAX_EMBED_CHARS,
    MAX_EMBEDS,
    build_message,
    embed_chars,
    label,
)
from detection_api.alerts.notify import (
    DetectionAlert,
    NotificationPayload,
    dead_letter_payload,
    detection_alert_payload,
    parse_notification,
    tak_disconnected_payload,
    tak_reconnected_payload,
)

# Discord's documented limits (https://discord.com/developers/docs/resources/message#embed-object)
MAX_CONTENT, MAX_TITLE, MAX_DESCRIPTION, MAX_FIELDS, MAX_FIELD_NAME, MAX_FIELD_VALUE = (
    2000,
    256,
    4096,
    25,
    256,
    1024,
)


def _notification(kind: str, payload: dict) -> NotificationPayload:
    return parse_notification({"v": 1, "kind": kind, "payload": payload})


def _alert(i: int = 0, **overrides: object) -> NotificationPayload:
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
    return _notification("detection_alert", detection_alert_payload(**{**fields, **overrides}))


def _down(endpoint: str = "tak.example:8089") -> NotificationPayload:
    payload = tak_disconnected_payload(endpoint=endpoint, down_seconds=75, error="refused")
    return _notification("tak_disconnected", payload)


def _back(endpoint: str = "tak.example:8089") -> NotificationPayload:
    payload = tak_reconnected_payload(endpoint=endpoint, down_seconds=300)
    return _notification("tak_reconnected", payload)


def _dead(i: int = 0, reason: str = "no confirmation after 10 attempt(s)") -> NotificationPayload:
    return _notification("dead_letter", dead_letter_payload(record_id=f"r{i}", reason=reason))


def _count(message: dict) -> int:
    """Detections a message accounts for: one embed each plus the "N more" title."""
    count = 0
    for embed in message["embeds"]:
        count += embed.get("footer", {}).get("text", "").startswith("record ")
        more = re.fullmatch(r"(\d+) more detection alerts?", embed["title"])
        count += int(more.group(1)) if more else 0
    return count


def test_a_detection_alert_shows_class_confidence_position_accuracy_and_a_map_link():
    message = build_message([_alert(7, confidence=0.934, ce90_m=12.345, flag="YELLOW")])
    (embed,) = message["embeds"]
    link = "https://www.openstreetmap.org/?mlat=48.1234567&mlon=11.7654321#map=17/48.1234567/11.7654321"
    assert embed["url"] == link
    assert embed["title"] == "person detected (93%)"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "Class": "person",
        "Confidence": "93.4%",
        "Position": "48.1234567, 11.7654321",
        "CE90": "12.3 m (YELLOW)",
        "Camera": "cam-1",
    }
    assert embed["color"] == 0xF1C40F
    assert embed["footer"]["text"] == "record rec0007"
    assert embed["timestamp"] == "2024-05-01T12:00:00+00:00"
    assert message["content"] == "**Detection API**: 1 detection alert"
    assert message["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize(
    ("flag", "color"), [("GREEN", 0x2ECC71), ("RED", 0xE74C3C), (None, 0x95A5A6)]
)
def test_embed_color_follows_the_confidence_flag(flag, color):
    assert build_message([_alert(flag=flag)])["embeds"][0]["color"] == color


def test_producer_text_cannot_mention_or_inject_links():
    message = build_message([_alert(object_class="@everyone [free](https://evil.example)")])
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    assert fields["Class"] == r"\@everyone \[free\]\(https://evil.example\)"
    assert "[free](" not in json.dumps(message)
    assert label("a\x00b\x1b_c") == r"ab\_c"
    assert label(" \x07 ") == "?"  # never blank: Discord refuses blank names


def test_tak_changes_and_dead_letters_come_first():
    message = build_message([_alert(1), _dead(1), _down(), _dead(2)])
    titles = [e["title"] for e in message["embeds"]]
    assert titles == ["TAK server disconnected", "2 dead letters", "person detected (91%)"]
    assert message["embeds"][0]["description"] == (
        "No connection to the TAK server tak.example:8089 for 1 min 15 s; detections stay queued."
        " Last error: refused"
    )
    assert "`r1`: no confirmation after 10 attempt\\(s\\)" in message["embeds"][1]["description"]
    assert message["content"] == (
        "**Detection API**: TAK server disconnected · 2 dead letters · 1 detection alert"
    )


def test_several_tak_changes_share_one_embed_titled_after_the_latest():
    (embed,) = build_message([_down("a:1"), _back("a:1")])["embeds"]
    assert embed["title"] == "TAK server reconnected"
    assert embed["description"].splitlines()[1] == (
        "Connected to the TAK server a:1 again after 5 min 0 s; "
        "queued detections are being delivered."
    )


def test_alerts_beyond_ten_embeds_are_counted_in_one_summary():
    alerts = [_alert(i, object_class="person" if i % 3 else "vehicle") for i in range(50)]
    message = build_message(alerts)
    assert len(message["embeds"]) == MAX_EMBEDS
    summary = message["embeds"][-1]
    assert summary["title"] == "41 more detection alerts"
    assert summary["description"] == "person ×27\nvehicle ×14"
    assert _count(message) == 50
    assert "50 detection alerts" in message["content"]


_texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=1024
).filter(lambda s: s.strip())


@st.composite
def _batches(draw: st.DrawFn) -> list[NotificationPayload]:
    batch: list[NotificationPayload] = []
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
    batch += [_dead(i, reason=draw(_texts)) for i in range(draw(st.integers(0, 40)))]
    for i in range(draw(st.integers(0, 6))):
        endpoint = draw(_texts)
        batch.append(_down(endpoint) if i % 2 else _back(endpoint))
    return draw(st.permutations(batch or [_alert()]))


@settings(max_examples=60, deadline=None)
@given(_batches())
def test_every_message_respects_discords_limits_and_accounts_for_every_alert(batch):
    message = build_message(batch)
    embeds = message["embeds"]
    assert len(message["content"]) <= MAX_CONTENT
    assert 1 <= len(embeds) <= MAX_EMBEDS
    assert sum(embed_chars(e) for e in embeds) <= MAX_EMBED_CHARS
    for embed in embeds:
        assert 1 <= len(embed["title"]) <= MAX_TITLE
        assert len(embed.get("description", "")) <= MAX_DESCRIPTION
        assert len(embed.get("fields", [])) <= MAX_FIELDS
        for field in embed.get("fields", []):
            assert 1 <= len(field["name"]) <= MAX_FIELD_NAME
            assert 1 <= len(field["value"]) <= MAX_FIELD_VALUE
    alerts = sum(isinstance(n, DetectionAlert) for n in batch)
    assert _count(message) == alerts
    assert any(e.get("footer", {}).get("text", "").startswith("record ") for e in embeds) == (
        alerts > 0
    )  # at least one alert in detail whenever there are alerts
    json.dumps(message)


def test_worst_case_batch_still_fits_and_counts_add_up():
    long = "x" * 1020
    batch = [_down(f"{long}{i}") for i in range(5)]
    batch += [_dead(i, reason=long) for i in range(40)]
    batch += [
        _alert(i, object_class=f"{i}{long}", camera_id=long, track_id=long, record_id=long)
        for i in range(60)
    ]
    message = build_message(batch)
    assert sum(embed_chars(e) for e in message["embeds"]) <= MAX_EMBED_CHARS
    assert _count(message) == 60
    assert "… and" in message["embeds"][1]["description"]  # dead letters listed, the rest counted
    assert "… and" in message["embeds"][-1]["description"]  # so are classes in the summary
