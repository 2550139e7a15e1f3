"""A batch of notifications as one Discord webhook message; one announcement per TAK outage.

Pure. A message keeps within Discord's limits (10 embeds, 2000 characters of content, 256 per
title, 4096 per description, 1024 per field, 6000 over all embeds) by construction: producer text
is cut to fixed budgets, Markdown-escaped and stripped of control characters, and detections get an
embed of their own while slots and characters remain; the rest are counted in one "N more detection
alerts" embed. Mentions are off: a class named ``@everyone`` pings no one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from detection_api.alerts.notify import (
    DeadLetter,
    DetectionAlert,
    Notification,
    TakDisconnected,
    TakReconnected,
    truncate,
)

MAX_EMBEDS = 10
MAX_EMBED_CHARS = 6000
LABEL_CHARS = 100  # a class, camera, track, endpoint or record id: at most 200 once escaped
SUMMARY_MIN_CHARS = 300  # kept free for the "N more" embed while detections are added
COLORS = {"GREEN": 0x2ECC71, "YELLOW": 0xF1C40F, "RED": 0xE74C3C, "": 0x95A5A6}
_TAK = (TakDisconnected, TakReconnected)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#@<])")  # formatting, masked links, mentions, headings
Embed = dict[str, Any]


def clean(text: str, limit: int = LABEL_CHARS) -> str:
    return truncate(_CONTROL_CHARS.sub("", text).strip(), limit)


def label(text: str, limit: int = LABEL_CHARS) -> str:
    """Producer text rendered literally (cut before escaping: no escape is cut in half)."""
    return _MARKDOWN.sub(r"\\\1", clean(text, limit)) or "?"


def map_link(lat: float, lon: float) -> str:
    at = f"{lat:.7f}/{lon:.7f}"
    return f"https://www.openstreetmap.org/?mlat={lat:.7f}&mlon={lon:.7f}#map=17/{at}"


def duration(seconds: float) -> str:
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _iso(moment: float | datetime) -> str:
    moment = moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _lines(lines: Sequence[str], max_chars: int) -> str:
    """As many whole lines as fit in ``max_chars``, then "… and N more"."""
    used = 20  # room for the last line
    for index, line in enumerate(lines):
        used += len(line) + 1
        if used > max_chars:
            return "\n".join([*lines[:index], f"… and {len(lines) - index} more"])
    return "\n".join(lines)


def embed_chars(embed: Embed) -> int:
    """Characters Discord counts against the 6000 of a message's embeds."""
    total = len(embed["title"]) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    return total + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))


def detection_embed(alert: DetectionAlert) -> Embed:
    link = map_link(alert.lat, alert.lon)
    flag = alert.flag.value if alert.flag else ""
    fields = {
        "Class": label(alert.object_class),
        "Confidence": f"{alert.confidence * 100:.1f}%",
        "Position": f"{alert.lat:.7f}, {alert.lon:.7f}",
        "CE90": f"{alert.ce90_m:.1f} m" + (f" ({flag})" if flag else ""),
    }
    if alert.camera_id:
        track = f" · track {label(alert.track_id)}" if alert.track_id else ""
        fields["Camera"] = label(alert.camera_id) + track
    return {
        "title": f"{label(alert.object_class)} detected ({alert.confidence * 100:.0f}%)",
        "color": COLORS[flag],
        "description": f"[Open map]({link})",
        "url": link,
        "fields": [{"name": k, "value": v, "inline": True} for k, v in fields.items()],
        "footer": {"text": f"record {clean(alert.record_id)}"},
        **({"timestamp": _iso(alert.timestamp)} if alert.timestamp else {}),
    }


def _tak_line(change: TakDisconnected | TakReconnected) -> str:
    server = f"the TAK server {label(change.endpoint)}"
    if isinstance(change, TakDisconnected):
        error = f" Last error: {label(change.error, 300)}" if change.error else ""
        down = duration(change.down_seconds)
        return f"No connection to {server} for {down}; detections stay queued.{error}"
    back = "" if change.down_seconds is None else f" after {duration(change.down_seconds)}"
    return f"Connected to {server} again{back}; queued detections are being delivered."


def tak_embed(changes: Sequence[TakDisconnected | TakReconnected], at: float) -> Embed:
    """Every TAK connection change of a batch, titled after the latest."""
    down = isinstance(changes[-1], TakDisconnected)
    return {
        "title": f"TAK server {'disconnected' if down else 'reconnected'}",
        "color": COLORS["RED" if down else "GREEN"],
        "description": _lines([_tak_line(change) for change in changes], 1000),
        "timestamp": _iso(at),
    }


def dead_letters_embed(letters: Sequence[DeadLetter]) -> Embed:
    lines = []
    for letter in letters:
        what = f" ({label(letter.object_class)})" if letter.object_class else ""
        record = clean(letter.record_id).replace("`", "")
        lines.append(f"`{record}`{what}: {label(letter.reason, 150)}")
    queues = clean(", ".join(sorted({letter.queue for letter in letters})))
    return {
        "title": _count(len(letters), "dead letter"),
        "color": 0xE67E22,
        "description": _lines(lines, 1500),
        "footer": {"text": f"failed registry of queue {queues}; requeue after fixing the cause"},
    }


def more_embed(alerts: Sequence[DetectionAlert], max_chars: int) -> Embed:
    """The alerts without an embed of their own: counted in the title, listed by class."""
    title = _count(len(alerts), "more detection alert")
    by_class = Counter(label(alert.object_class) for alert in alerts).most_common()
    lines = [f"{name} ×{count}" for name, count in by_class]
    return {
        "title": title,
        "color": COLORS[""],
        "description": _lines(lines, min(max_chars, 4096) - len(title)),
    }


def build_message(notifications: Sequence[Notification]) -> dict[str, Any] | None:
    """One webhook body for all ``notifications`` (None if there are none): TAK connection
    changes, dead letters, then detection alerts in arrival order."""
    if not notifications:
        return None
    tak = [n for n in notifications if isinstance(n.payload, _TAK)]
    letters = [n.payload for n in notifications if isinstance(n.payload, DeadLetter)]
    alerts = [n.payload for n in notifications if isinstance(n.payload, DetectionAlert)]
    embeds = [tak_embed([n.payload for n in tak], tak[-1].enqueued_at)] if tak else []  # type: ignore[misc]
    embeds += [dead_letters_embed(letters)] if letters else []
    summary = [e["title"] for e in embeds]
    used = sum(map(embed_chars, embeds))
    detailed = 0
    for alert in alerts:
        embed = detection_embed(alert)
        more = detailed < len(alerts) - 1  # a summary may still be needed after this one
        needed = used + embed_chars(embed) + more * SUMMARY_MIN_CHARS
        if len(embeds) + 1 + more > MAX_EMBEDS or needed > MAX_EMBED_CHARS:
            break
        embeds.append(embed)
        used += embed_chars(embed)
        detailed += 1
    if detailed < len(alerts):
        embeds.append(more_embed(alerts[detailed:], MAX_EMBED_CHARS - used))
    summary += [_count(len(alerts), "detection alert")] if alerts else []
    return {
        "username": "Detection API",
        "content": "**Detection API**: " + " · ".join(summary),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},  # never ping anyone, whatever the text says
    }


def dedupe_outages(
    notifications: Iterable[Notification], down: Iterable[str]
) -> tuple[list[Notification], list[Notification], dict[str, bool]]:
    """One announcement per TAK outage: a disconnect of an endpoint announced ``down``, or a
    reconnect of one that is not, is dropped. Returns (shown, dropped, {endpoint: down after the
    message} for each endpoint whose announced state changes)."""
    state = set(down)
    shown: list[Notification] = []
    dropped: list[Notification] = []
    changed: dict[str, bool] = {}
    for notification in notifications:
        if isinstance(notification.payload, _TAK):
            endpoint = notification.payload.endpoint
            is_down = isinstance(notification.payload, TakDisconnected)
            if (endpoint in state) == is_down:
                dropped.append(notification)
                continue
            (state.add if is_down else state.discard)(endpoint)
            changed[endpoint] = is_down
        shown.append(notification)
    return shown, dropped, changed
