"""A batch of notifications as one Discord webhook message, within Discord's limits by construction
(producer text cut to budgets, Markdown-escaped, no control characters; detections beyond what fits
counted in one "N more detection alerts" embed). Mentions are off: ``@everyone`` pings no one."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from detection_api.alerts.notify import (
    DeadLetterAlert,
    DetectionAlert,
    NotificationPayload,
    TakDisconnected,
    TakReconnected,
    truncate,
)

MAX_EMBEDS = 10
MAX_EMBED_CHARS = 6000
LABEL_CHARS = 100  # a class, camera, track, endpoint or record id: at most 200 once escaped
SUMMARY_MIN_CHARS = 300  # kept free for the "N more" embed while detections are added
COLORS = {"GREEN": 0x2ECC71, "YELLOW": 0xF1C40F, "RED": 0xE74C3C, "": 0x95A5A6}
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#@<])")  # formatting, masked links, mentions, headings
Embed = dict[str, Any]


def clean(text: str, limit: int = LABEL_CHARS) -> str:
    return truncate(_CONTROL_CHARS.sub("", text).strip(), limit)


def label(text: str, limit: int = LABEL_CHARS) -> str:
    """Producer text rendered literally (cut before escaping: no escape is cut in half)."""
    return _MARKDOWN.sub(r"\\\1", clean(text, limit)) or "?"


def duration(seconds: float) -> str:
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _list_embed(title: str, color: int, lines: list[str], max_chars: int, **extra: Any) -> Embed:
    """An embed listing as many whole ``lines`` as fit in ``max_chars``, then "… and N more"."""
    used = 20  # room for the last line
    for index, line in enumerate(lines):
        used += len(line) + 1
        if used > max_chars:
            lines = [*lines[:index], f"… and {len(lines) - index} more"]
            break
    return {"title": title, "color": color, "description": "\n".join(lines), **extra}


def embed_chars(embed: Embed) -> int:
    """Characters Discord counts against the 6000 of a message's embeds."""
    total = len(embed["title"]) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    return total + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))


def detection_embed(alert: DetectionAlert) -> Embed:
    lat, lon = f"{alert.lat:.7f}", f"{alert.lon:.7f}"
    link = f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"
    flag = alert.flag.value if alert.flag else ""
    fields = {
        "Class": label(alert.object_class),
        "Confidence": f"{alert.confidence * 100:.1f}%",
        "Position": f"{lat}, {lon}",
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
        **({"timestamp": alert.timestamp.isoformat()} if alert.timestamp else {}),
    }


def _tak_line(change: TakDisconnected | TakReconnected) -> str:
    server = f"the TAK server {label(change.endpoint)}"
    if isinstance(change, TakDisconnected):
        error = f" Last error: {label(change.error, 300)}" if change.error else ""
        down = duration(change.down_seconds)
        return f"No connection to {server} for {down}; detections stay queued.{error}"
    back = "" if change.down_seconds is None else f" after {duration(change.down_seconds)}"
    return f"Connected to {server} again{back}; queued detections are being delivered."


def _dead_letter_line(letter: DeadLetterAlert) -> str:
    what = f" ({label(letter.object_class)})" if letter.object_class else ""
    return f"`{clean(letter.record_id).replace('`', '')}`{what}: {label(letter.reason, 150)}"


def build_message(notifications: Sequence[NotificationPayload]) -> dict[str, Any]:
    """One webhook body for (one or more) ``notifications``: TAK connection changes, dead
    letters, then detection alerts in arrival order."""
    tak = [n for n in notifications if isinstance(n, TakDisconnected | TakReconnected)]
    letters = [n for n in notifications if isinstance(n, DeadLetterAlert)]
    alerts = [n for n in notifications if isinstance(n, DetectionAlert)]
    embeds = []
    if tak:  # every TAK connection change of the batch, titled after the latest
        down = isinstance(tak[-1], TakDisconnected)
        title = f"TAK server {'disconnected' if down else 'reconnected'}"
        lines = [_tak_line(change) for change in tak]
        embeds.append(_list_embed(title, COLORS["RED" if down else "GREEN"], lines, 1000))
    if letters:
        title = _count(len(letters), "dead letter")
        lines = [_dead_letter_line(letter) for letter in letters]
        footer = {"text": "in rq's failed registry: requeue after fixing the cause"}
        embeds.append(_list_embed(title, 0xE67E22, lines, 1500, footer=footer))
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
    if rest := alerts[detailed:]:  # counted in the title, listed by class
        title = _count(len(rest), "more detection alert")
        by_class = Counter(label(alert.object_class) for alert in rest).most_common()
        lines = [f"{name} ×{count}" for name, count in by_class]
        room = min(MAX_EMBED_CHARS - used, 4096) - len(title)
        embeds.append(_list_embed(title, COLORS[""], lines, room))
    summary += [_count(len(alerts), "detection alert")] if alerts else []
    return {
        "username": "Detection API",
        "content": "**Detection API**: " + " · ".join(summary),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},  # never ping anyone, whatever the text says
    }
