"""Discord notifications: what a notification is, how it is enqueued, and how a batch of them
becomes one webhook message.

Notifications never go out inline in a request. Producers (ingest, the TAK forwarder) add one rq job
to queue ``notify`` (JSON serialised, never pickle), inside the pipeline of their own write when
they have one (ingest's atomic Lua write, the forwarder's transaction); the notifier
(``notifier.py``) coalesces and posts them. Kinds and their payloads:

``detection_alert``   a detection of an ``ALERT_CLASSES`` class at or above ``ALERT_MIN_CONFIDENCE``
``tak_disconnected``  the TAK connection has been down longer than ``TAK_DISCONNECT_ALERT_SECONDS``
``tak_reconnected``   it is back (announced only when its outage was announced)
``dead_letter``       a detection the forwarder gave up on

Who checks ``DISCORD_WEBHOOK_URL``: the producer side. :func:`notify_queue` returns ``None`` when
the URL is unset and :func:`enqueue_notification` with ``None`` does nothing, so no job piles up in
Redis that nobody will ever post. (The notifier also idles without the URL, leaving any job that a
configured revision enqueued for when the URL comes back.)

Message building is pure (no network, no Redis) and keeps within Discord's limits: 10 embeds,
2000 characters of content, 256 per title, 4096 per description, 1024 per field value, 25 fields,
6000 characters over all embeds. Whatever does not fit in detail is counted in a summary ("N more
detection alerts"), so every notification of a batch is accounted for in its message. Text from
producers is stripped of control characters and Markdown-escaped, and mentions are disabled: a
detection class named ``@everyone`` must not ping a channel.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from redis.client import Pipeline
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from detection_api.geo.types import ConfidenceFlag
from detection_api.settings import Settings
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME

NOTIFY_FUNC = "detection_api.alerts.notifier.deliver_notification"
NOTIFY_PAYLOAD_VERSION = 1
# Only the slow path (a plain ``rq worker notify --with-scheduler`` running deliver_notification)
# uses this; the notifier keeps failed posts queued itself. One interval per retry (rq reuses the
# first interval when the list is shorter than ``max``).
NOTIFY_RETRY = Retry(max=5, interval=[10, 30, 60, 120, 300])
# Failed notifications (rejected by the webhook) stay a week for an operator to requeue.
NOTIFY_FAILURE_TTL_SECONDS = 7 * 86_400

# Discord's documented limits (https://discord.com/developers/docs/resources/message#embed-object).
MAX_EMBEDS = 10
MAX_CONTENT_CHARS = 2000
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME_CHARS = 256
MAX_FIELD_VALUE_CHARS = 1024
MAX_FOOTER_CHARS = 2048
MAX_TOTAL_EMBED_CHARS = 6000

COLOR_BY_FLAG: Mapping[str, int] = {
    ConfidenceFlag.GREEN: 0x2ECC71,
    ConfidenceFlag.YELLOW: 0xF1C40F,
    ConfidenceFlag.RED: 0xE74C3C,
}
COLOR_UNKNOWN = 0x95A5A6
COLOR_OUTAGE = 0xE74C3C
COLOR_RECOVERED = 0x2ECC71
COLOR_DEAD_LETTER = 0xE67E22
MAP_ZOOM = 17
WEBHOOK_USERNAME = "Detection API"
# TAK connection changes shown as separate embeds; more are listed in one embed.
MAX_TAK_EMBEDS = 3
# Budgets for producer text, so that the fixed embeds (TAK, dead letters) can never crowd the
# detections out of the 6000 characters: at most 3 x ~1000 + ~1700.
LABEL_CHARS = 100  # a class name, camera, track, endpoint or record id
ERROR_CHARS = 300
DEAD_LETTER_REASON_CHARS = 150
DEAD_LETTERS_DESCRIPTION_CHARS = 1500
TAK_SUMMARY_CHARS = 1000


class NotificationKind(StrEnum):
    DETECTION_ALERT = "detection_alert"
    TAK_DISCONNECTED = "tak_disconnected"
    TAK_RECONNECTED = "tak_reconnected"
    DEAD_LETTER = "dead_letter"


# --- payloads ----------------------------------------------------------------------------------

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Text = Annotated[str, Field(min_length=1, max_length=1024)]
# Free text from exceptions and producers: cut rather than refused (a long error is still news).
_LongText = Annotated[str, Field(min_length=1), AfterValidator(lambda s: truncate(s, 1024))]


class _Payload(BaseModel):
    # Unknown fields are ignored: a newer producer may add some while an older notifier runs.
    model_config = ConfigDict(extra="ignore", frozen=True)


class DetectionAlert(_Payload):
    record_id: _Text
    object_class: _Text
    confidence: Annotated[_Finite, Field(ge=0.0, le=1.0)]
    lat: Annotated[_Finite, Field(ge=-90.0, le=90.0)]
    lon: Annotated[_Finite, Field(ge=-180.0, le=180.0)]
    ce90_m: Annotated[_Finite, Field(ge=0.0)]
    flag: ConfidenceFlag | None = None
    detection_id: _Text | None = None
    camera_id: _Text | None = None
    track_id: _Text | None = None
    timestamp: AwareDatetime | None = None  # capture time


class TakDisconnected(_Payload):
    endpoint: _Text  # host:port of the TAK server (never credentials)
    down_seconds: Annotated[_Finite, Field(ge=0.0)]
    since: _Finite | None = None  # epoch seconds when the connection was lost
    error: _LongText | None = None


class TakReconnected(_Payload):
    endpoint: _Text
    down_seconds: Annotated[_Finite, Field(ge=0.0)] | None = None


class DeadLetter(_Payload):
    record_id: _Text
    reason: _LongText
    queue: _Text = "tak"
    object_class: _Text | None = None


NotificationPayload = DetectionAlert | TakDisconnected | TakReconnected | DeadLetter

PAYLOAD_MODELS: Mapping[NotificationKind, type[_Payload]] = {
    NotificationKind.DETECTION_ALERT: DetectionAlert,
    NotificationKind.TAK_DISCONNECTED: TakDisconnected,
    NotificationKind.TAK_RECONNECTED: TakReconnected,
    NotificationKind.DEAD_LETTER: DeadLetter,
}


class InvalidNotification(ValueError):
    """A notification job that can never be rendered (it goes to the failed registry)."""


@dataclass(frozen=True, slots=True)
class Notification:
    job_id: str
    kind: NotificationKind
    payload: NotificationPayload
    enqueued_at: float  # epoch seconds


def should_alert(object_class: str, confidence: float, settings: Settings) -> bool:
    """A detection worth a Discord alert: its class is in ALERT_CLASSES (case-insensitive; ``*``
    means every class) and its confidence is at least ALERT_MIN_CONFIDENCE."""
    classes = settings.alert_class_set
    if not classes:
        return False
    listed = "*" in classes or object_class.strip().lower() in classes
    return listed and confidence >= settings.alert_min_confidence


def detection_alert_payload(
    *,
    record_id: str,
    object_class: str,
    confidence: float,
    lat: float,
    lon: float,
    ce90_m: float,
    flag: str | None = None,
    detection_id: str | None = None,
    camera_id: str | None = None,
    track_id: str | None = None,
    timestamp: datetime | str | None = None,
) -> dict[str, Any]:
    """The ``detection_alert`` payload, checked (raises pydantic's ValidationError if invalid)."""
    alert = DetectionAlert(
        record_id=record_id,
        object_class=object_class,
        confidence=confidence,
        lat=lat,
        lon=lon,
        ce90_m=ce90_m,
        flag=flag,  # type: ignore[arg-type]  (validated into ConfidenceFlag)
        detection_id=detection_id,
        camera_id=camera_id,
        track_id=track_id,
        timestamp=timestamp,  # type: ignore[arg-type]  (validated into a datetime)
    )
    return alert.model_dump(mode="json", exclude_none=True)


def tak_disconnected_payload(
    *, endpoint: str, down_seconds: float, since: float | None = None, error: str | None = None
) -> dict[str, Any]:
    return TakDisconnected(
        endpoint=endpoint, down_seconds=down_seconds, since=since, error=error
    ).model_dump(mode="json", exclude_none=True)


def tak_reconnected_payload(*, endpoint: str, down_seconds: float | None = None) -> dict[str, Any]:
    return TakReconnected(endpoint=endpoint, down_seconds=down_seconds).model_dump(
        mode="json", exclude_none=True
    )


def dead_letter_payload(
    *, record_id: str, reason: str, queue: str = "tak", object_class: str | None = None
) -> dict[str, Any]:
    return DeadLetter(
        record_id=record_id, reason=reason, queue=queue, object_class=object_class
    ).model_dump(mode="json", exclude_none=True)


# --- enqueueing --------------------------------------------------------------------------------


def notify_queue(redis: object, settings: Settings) -> Queue | None:
    """The ``notify`` queue, or ``None`` when DISCORD_WEBHOOK_URL is unset (notifications off)."""
    if not settings.discord_webhook_url:
        return None
    return Queue(NOTIFY_QUEUE_NAME, connection=redis, serializer=JSONSerializer)  # type: ignore[arg-type]


def enqueue_notification(
    queue: Queue | None,
    kind: str,
    payload: Mapping[str, Any],
    pipeline: Pipeline | None = None,
) -> None:
    """One rq job on queue ``notify``; with ``pipeline``, inside the caller's write (ingest hands
    its recorded pipeline to one Lua script, the forwarder executes a transaction). rq needs that
    pipeline in MULTI mode already (``pipe.multi()`` called, as ``AtomicWriter.recorder`` does) or
    still empty: it raises on a non-transactional command stack.
    ``queue=None`` (notifications off, see :func:`notify_queue`) does nothing.

    The payload is checked here: a bad one is the producer's bug and must fail where it is made,
    not later in the notifier.
    """
    if queue is None:
        return
    notification_kind = NotificationKind(kind)
    try:
        checked = PAYLOAD_MODELS[notification_kind].model_validate(dict(payload))
    except ValidationError as exc:
        raise InvalidNotification(f"invalid {kind} payload: {exc}") from exc
    queue.enqueue_call(
        NOTIFY_FUNC,
        kwargs={
            "v": NOTIFY_PAYLOAD_VERSION,
            "kind": notification_kind.value,
            "payload": checked.model_dump(mode="json", exclude_none=True),
            "enqueued_at": time.time(),
        },
        result_ttl=0,  # nothing to keep once posted
        failure_ttl=NOTIFY_FAILURE_TTL_SECONDS,
        ttl=None,  # an outage of Discord must not drop notifications
        timeout=60,
        retry=NOTIFY_RETRY,
        description=f"notify {notification_kind.value}",
        pipeline=pipeline,
    )


def parse_notification(job_id: str, kwargs: Mapping[str, Any]) -> Notification:
    """A notification job's kwargs back into a :class:`Notification` (InvalidNotification if it
    can never be rendered)."""
    version = kwargs.get("v")
    if version != NOTIFY_PAYLOAD_VERSION:
        raise InvalidNotification(f"unsupported notification payload version {version!r}")
    try:
        kind = NotificationKind(kwargs.get("kind"))
    except ValueError:
        raise InvalidNotification(f"unknown notification kind {kwargs.get('kind')!r}") from None
    payload = kwargs.get("payload")
    if not isinstance(payload, dict):
        raise InvalidNotification(f"{kind} notification has no payload object")
    try:
        model = PAYLOAD_MODELS[kind].model_validate(payload)
    except ValidationError as exc:
        raise InvalidNotification(
            f"invalid {kind} payload: {exc.error_count()} error(s), first at "
            f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}: {exc.errors()[0]['msg']}"
        ) from None
    enqueued_at = kwargs.get("enqueued_at")
    if not isinstance(enqueued_at, int | float) or isinstance(enqueued_at, bool):
        enqueued_at = time.time()
    return Notification(job_id, kind, model, float(enqueued_at))  # type: ignore[arg-type]


# --- text helpers ------------------------------------------------------------------------------

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Markdown, masked links, mentions and headings; other punctuation renders literally anyway.
_MARKDOWN_SPECIAL = re.compile(r"([\\*_~`|>\[\]()#@<])")


def clean_text(text: str) -> str:
    """Producer text for a message: no control characters (newlines and tabs kept)."""
    return _CONTROL_CHARS.sub("", text)


def escape_markdown(text: str) -> str:
    """Producer text rendered literally: no links, formatting or mentions injected through it."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", clean_text(text))


def label(text: str, limit: int = LABEL_CHARS) -> str:
    """Producer text for a title, field or line: cut to ``limit`` characters (before escaping,
    so an escape is never cut in half; escaped it is at most twice as long) and never blank
    (Discord refuses blank names)."""
    return escape_markdown(truncate(clean_text(text).strip(), limit)) or "?"


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def map_link(lat: float, lon: float, zoom: int = MAP_ZOOM) -> str:
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.7f}&mlon={lon:.7f}"
        f"#map={zoom}/{lat:.7f}/{lon:.7f}"
    )


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _iso(value: float | datetime) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


# --- embeds ------------------------------------------------------------------------------------

Embed = dict[str, Any]


def embed_chars(embed: Embed) -> int:
    """Characters Discord counts against the 6000 limit of a message's embeds."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    for embed_field in embed.get("fields", []):
        total += len(embed_field["name"]) + len(embed_field["value"])
    return total


def _field(name: str, value: str, *, inline: bool = True) -> dict[str, Any]:
    return {
        "name": truncate(name.strip() or "?", MAX_FIELD_NAME_CHARS),
        "value": truncate(value.strip() or "-", MAX_FIELD_VALUE_CHARS),
        "inline": inline,
    }


def _embed(
    title: str,
    *,
    color: int,
    description: str | None = None,
    fields: Sequence[dict[str, Any]] = (),
    url: str | None = None,
    footer: str | None = None,
    timestamp: str | None = None,
) -> Embed:
    embed: Embed = {"title": truncate(title.strip() or "?", MAX_TITLE_CHARS), "color": color}
    if description:
        embed["description"] = truncate(description, MAX_DESCRIPTION_CHARS)
    if url:
        embed["url"] = url
    if fields:
        embed["fields"] = list(fields[:MAX_FIELDS])
    if footer:
        embed["footer"] = {"text": truncate(footer, MAX_FOOTER_CHARS)}
    if timestamp:
        embed["timestamp"] = timestamp
    return embed


def detection_embed(alert: DetectionAlert) -> Embed:
    link = map_link(alert.lat, alert.lon)
    flag = alert.flag.value if alert.flag else None
    accuracy = f"{alert.ce90_m:.1f} m" + (f" ({flag})" if flag else "")
    fields = [
        _field("Class", label(alert.object_class)),
        _field("Confidence", f"{alert.confidence * 100:.1f}%"),
        _field("Position", f"{alert.lat:.7f}, {alert.lon:.7f}"),
        _field("CE90", accuracy),
    ]
    if alert.camera_id:
        camera = label(alert.camera_id)
        if alert.track_id:
            camera += f" · track {label(alert.track_id)}"
        fields.append(_field("Camera", camera))
    return _embed(
        f"{label(alert.object_class)} detected ({alert.confidence * 100:.0f}%)",
        color=COLOR_BY_FLAG.get(flag or "", COLOR_UNKNOWN),
        description=f"[Open map]({link})",
        url=link,
        fields=fields,
        footer=f"record {truncate(clean_text(alert.record_id), LABEL_CHARS)}",
        timestamp=_iso(alert.timestamp) if alert.timestamp else None,
    )


def more_detections_embed(
    alerts: Sequence[DetectionAlert], max_chars: int = MAX_TOTAL_EMBED_CHARS
) -> Embed:
    """The detections that did not fit in detail, counted by class (with the best confidence),
    most frequent classes first; classes beyond 25 fields or ``max_chars`` are counted together
    as "other classes", so the counts always add up."""
    by_class: Counter[str] = Counter(label(a.object_class) for a in alerts)
    best: dict[str, float] = {}
    for alert in alerts:
        name = label(alert.object_class)
        best[name] = max(best.get(name, 0.0), alert.confidence)
    embed = _embed(
        f"{_plural(len(alerts), 'more detection alert')}",
        color=COLOR_BY_FLAG.get(_worst_flag(alerts) or "", COLOR_UNKNOWN),
        description="Coalesced to respect the channel's rate limit; details are in the API.",
    )
    fields: list[dict[str, Any]] = []
    ranked = by_class.most_common()
    reserve = len("other classes") + len(str(len(alerts)))
    used = embed_chars(embed) + reserve
    for index, (name, count) in enumerate(ranked):
        candidate = _field(name, f"{count} × (best {best[name] * 100:.0f}%)")
        size = len(candidate["name"]) + len(candidate["value"])
        if len(fields) == MAX_FIELDS - 1 or used + size > max_chars:
            other = sum(n for _, n in ranked[index:])
            fields.append(_field("other classes", str(other)))
            break
        fields.append(candidate)
        used += size
    embed["fields"] = fields
    return embed


def _worst_flag(alerts: Sequence[DetectionAlert]) -> str | None:
    flags = {a.flag for a in alerts if a.flag}
    for flag in (ConfidenceFlag.RED, ConfidenceFlag.YELLOW, ConfidenceFlag.GREEN):
        if flag in flags:
            return flag.value
    return None


def tak_embed(notification: Notification) -> Embed:
    payload = notification.payload
    endpoint = label(payload.endpoint)
    if isinstance(payload, TakDisconnected):
        description = f"No connection to the TAK server {endpoint} for "
        description += f"{format_duration(payload.down_seconds)}; detections stay queued."
        if payload.error:
            description += f"\nLast error: {label(payload.error, ERROR_CHARS)}"
        since = payload.since if payload.since is not None else notification.enqueued_at
        return _embed(
            "TAK server disconnected",
            color=COLOR_OUTAGE,
            description=description,
            timestamp=_iso(since),
        )
    description = f"Connected to the TAK server {endpoint} again"
    if payload.down_seconds is not None:
        description += f" after {format_duration(payload.down_seconds)}"
    return _embed(
        "TAK server reconnected",
        color=COLOR_RECOVERED,
        description=description + "; queued detections are being delivered.",
        timestamp=_iso(notification.enqueued_at),
    )


def tak_summary_embed(notifications: Sequence[Notification]) -> Embed:
    lines = []
    for notification in notifications:
        state = "down" if notification.kind == NotificationKind.TAK_DISCONNECTED else "back"
        lines.append(
            f"{_iso(notification.enqueued_at)} {label(notification.payload.endpoint)} {state}"
        )
    last_down = notifications[-1].kind == NotificationKind.TAK_DISCONNECTED
    return _embed(
        _plural(len(notifications), "TAK connection change"),
        color=COLOR_OUTAGE if last_down else COLOR_RECOVERED,
        description=_lines_within(lines, TAK_SUMMARY_CHARS),
    )


def dead_letters_embed(letters: Sequence[DeadLetter]) -> Embed:
    lines = []
    for letter in letters:
        what = f" ({label(letter.object_class)})" if letter.object_class else ""
        record = truncate(clean_text(letter.record_id), LABEL_CHARS).replace("`", "")
        lines.append(f"`{record}`{what}: {label(letter.reason, DEAD_LETTER_REASON_CHARS)}")
    queues = sorted({label(letter.queue) for letter in letters})
    return _embed(
        _plural(len(letters), "dead letter"),
        color=COLOR_DEAD_LETTER,
        description=_lines_within(lines, DEAD_LETTERS_DESCRIPTION_CHARS),
        footer=f"failed registry of queue {', '.join(queues)}; requeue after fixing the cause",
    )


def _lines_within(lines: Sequence[str], max_chars: int) -> str:
    """As many whole lines as fit in ``max_chars`` (with room for "… and N more")."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        if used + len(line) + 1 > max_chars - 20:
            kept.append(f"… and {len(lines) - index} more")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


# --- the message -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    body: dict[str, Any]  # the webhook's JSON
    detailed_alerts: int  # detections with their own embed
    summarised_alerts: int  # detections counted in the "more" embed

    @property
    def embeds(self) -> list[Embed]:
        return list(self.body.get("embeds", []))


def build_message(notifications: Sequence[Notification]) -> WebhookMessage | None:
    """One webhook message for all ``notifications`` (None if there are none).

    Order of importance: TAK connection changes, dead letters, then detection alerts in arrival
    order, as many in detail as the limits allow and the rest counted in one summary embed.
    """
    if not notifications:
        return None
    tak = [n for n in notifications if n.kind in _TAK_KINDS]
    letters = [n.payload for n in notifications if n.kind == NotificationKind.DEAD_LETTER]
    alerts = [n.payload for n in notifications if n.kind == NotificationKind.DETECTION_ALERT]

    fixed: list[Embed] = []
    if len(tak) <= MAX_TAK_EMBEDS:
        fixed.extend(tak_embed(n) for n in tak)
    else:
        fixed.append(tak_summary_embed(tak))
    if letters:
        fixed.append(dead_letters_embed(letters))

    detailed = _fit_alerts(fixed, alerts)
    embeds = fixed + [detection_embed(a) for a in alerts[:detailed]]
    if detailed < len(alerts):
        room = MAX_TOTAL_EMBED_CHARS - sum(embed_chars(e) for e in embeds)
        embeds.append(more_detections_embed(alerts[detailed:], room))
    body: dict[str, Any] = {
        "username": WEBHOOK_USERNAME,
        "content": truncate(_summary_line(tak, letters, alerts), MAX_CONTENT_CHARS),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},  # never ping anyone, whatever the text says
    }
    return WebhookMessage(body, detailed, len(alerts) - detailed)


_TAK_KINDS = frozenset({NotificationKind.TAK_DISCONNECTED, NotificationKind.TAK_RECONNECTED})


def _fit_alerts(fixed: list[Embed], alerts: Sequence[DetectionAlert]) -> int:
    """How many alerts get their own embed: within 10 embeds and 6000 characters, keeping a slot
    (and room) for the summary embed when not all of them fit."""
    used = sum(embed_chars(e) for e in fixed)
    budget_slots = MAX_EMBEDS - len(fixed)
    # Only the first few can get an embed: size those, not every alert of a large batch.
    sizes = [embed_chars(detection_embed(a)) for a in alerts[:budget_slots]]
    if len(alerts) <= budget_slots and used + sum(sizes) <= MAX_TOTAL_EMBED_CHARS:
        return len(alerts)
    detailed = min(len(alerts), budget_slots - 1)
    while detailed > 0:
        remaining = MAX_TOTAL_EMBED_CHARS - used - sum(sizes[:detailed])
        if remaining > 0:
            summary = more_detections_embed(alerts[detailed:], remaining)
            if embed_chars(summary) <= remaining:
                break
        detailed -= 1
    return detailed


def _summary_line(
    tak: Sequence[Notification],
    letters: Sequence[DeadLetter],
    alerts: Sequence[DetectionAlert],
) -> str:
    parts: list[str] = []
    if tak:
        last = tak[-1]
        state = "disconnected" if last.kind == NotificationKind.TAK_DISCONNECTED else "reconnected"
        parts.append(f"TAK server {state}")
    if letters:
        parts.append(_plural(len(letters), "dead letter"))
    if alerts:
        classes = Counter(label(a.object_class) for a in alerts).most_common(5)
        detail = ", ".join(f"{name} ×{count}" for name, count in classes)
        parts.append(f"{_plural(len(alerts), 'detection alert')} ({detail})")
    return "**Detection API**: " + " · ".join(parts)
