"""Discord notifications and their rq job on queue ``notify``: written here (by ingest and the
forwarder, inside their own atomic write) and read back here for the notifier. Without
``DISCORD_WEBHOOK_URL``, :func:`notify_queue` is ``None``: nothing is enqueued."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from redis.client import Pipeline
from rq import Queue
from rq.serializers import JSONSerializer

from detection_api.geo.types import ConfidenceFlag
from detection_api.settings import Settings
from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME

# The function name rq records for a notify job. No rq worker runs it (the notifier posts the jobs
# itself); it stays what earlier revisions wrote, so the jobs they queued are still posted.
NOTIFY_FUNC = "detection_api.alerts.notifier.deliver_notification"
NOTIFY_PAYLOAD_VERSION = 1
OUTAGE_PREFIX = "detection:notify:tak_down:"  # + endpoint: its outage was announced


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Text = Annotated[str, Field(min_length=1, max_length=1024)]
_LongText = Annotated[str, Field(min_length=1), AfterValidator(lambda s: truncate(s, 1024))]


class _Payload(BaseModel):
    # Unknown fields are ignored: a newer producer may add some while an older notifier runs.
    model_config = ConfigDict(extra="ignore", frozen=True)


class DetectionAlert(_Payload):  # an ALERT_CLASSES detection at or above ALERT_MIN_CONFIDENCE
    record_id: _Text
    object_class: _Text
    confidence: Annotated[_Finite, Field(ge=0.0, le=1.0)]
    lat: Annotated[_Finite, Field(ge=-90.0, le=90.0)]
    lon: Annotated[_Finite, Field(ge=-180.0, le=180.0)]
    ce90_m: Annotated[_Finite, Field(ge=0.0)]
    flag: ConfidenceFlag | None = None
    camera_id: _Text | None = None
    track_id: _Text | None = None
    timestamp: AwareDatetime | None = None  # capture time


class TakDisconnected(_Payload):  # down longer than TAK_DISCONNECT_ALERT_SECONDS
    endpoint: _Text  # host:port of the TAK server (never credentials)
    down_seconds: Annotated[_Finite, Field(ge=0.0)]
    error: _LongText | None = None


class TakReconnected(_Payload):
    endpoint: _Text
    down_seconds: Annotated[_Finite, Field(ge=0.0)] | None = None


class DeadLetterAlert(_Payload):  # a detection the forwarder gave up on
    record_id: _Text
    reason: _LongText  # cut rather than refused: a long error is still news
    queue: _Text = "tak"
    object_class: _Text | None = None


NotificationPayload = DetectionAlert | TakDisconnected | TakReconnected | DeadLetterAlert
PAYLOAD_MODELS: Mapping[str, type[NotificationPayload]] = {
    "detection_alert": DetectionAlert,
    "tak_disconnected": TakDisconnected,
    "tak_reconnected": TakReconnected,
    "dead_letter": DeadLetterAlert,
}


def should_alert(object_class: str, confidence: float, settings: Settings) -> bool:
    """Class in ALERT_CLASSES (case-insensitive, ``*``: all), confidence ≥ ALERT_MIN_CONFIDENCE."""
    classes = settings.alert_class_set
    listed = "*" in classes or object_class.strip().lower() in classes
    return listed and confidence >= settings.alert_min_confidence


def _validated(kind: str, fields: Mapping[str, Any]) -> NotificationPayload:
    """The payload of ``kind``, checked (a ValueError naming the problem)."""
    if kind not in PAYLOAD_MODELS:
        raise ValueError(f"unknown notification kind {kind!r}")
    try:
        return PAYLOAD_MODELS[kind].model_validate(dict(fields))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"invalid {kind} payload at {where}: {first['msg']}") from None


def _builder(kind: str) -> Callable[..., dict[str, Any]]:
    """The checked payload of ``kind`` as JSON, from keyword arguments (its model's fields)."""
    return lambda **fields: _validated(kind, fields).model_dump(mode="json", exclude_none=True)


detection_alert_payload = _builder("detection_alert")
tak_disconnected_payload = _builder("tak_disconnected")
tak_reconnected_payload = _builder("tak_reconnected")
dead_letter_payload = _builder("dead_letter")


def notify_queue(redis: object, settings: Settings) -> Queue | None:
    """The ``notify`` queue, or ``None`` when DISCORD_WEBHOOK_URL is unset (notifications off)."""
    if not settings.discord_webhook_url:
        return None
    return Queue(NOTIFY_QUEUE_NAME, connection=redis, serializer=JSONSerializer)  # type: ignore[arg-type]


def enqueue_notification(
    queue: Queue | None, kind: str, payload: Mapping[str, Any], pipeline: Pipeline | None = None
) -> None:
    """One job on ``queue`` (None: does nothing; a TAK outage already announced: neither);
    with ``pipeline``, in the caller's write (in MULTI mode, as ``AtomicWriter.recorder`` is). A bad
    payload fails here, where it is made."""
    if queue is None:
        return
    checked = _builder(kind)(**payload)
    # One announcement per TAK outage, whoever reports it: a disconnect only if not announced yet,
    # a reconnect only if it was (checked at once, pipeline or not; forgotten after 6 h).
    outage = f"{OUTAGE_PREFIX}{checked.get('endpoint')}"
    if kind == "tak_disconnected" and not queue.connection.set(outage, 1, nx=True, ex=21_600):
        return
    if kind == "tak_reconnected" and not queue.connection.delete(outage):
        return
    queue.enqueue_call(
        NOTIFY_FUNC,
        kwargs={"v": NOTIFY_PAYLOAD_VERSION, "kind": kind, "payload": checked},
        result_ttl=0,  # nothing to keep once posted
        failure_ttl=7 * 86_400,  # a week to requeue what the webhook refused
        ttl=None,  # an outage of Discord must not drop notifications
        description=f"notify {kind}",
        pipeline=pipeline,
    )


def parse_notification(kwargs: Mapping[str, Any]) -> NotificationPayload:
    """A notify job's kwargs back into its payload, whose type is the kind (else a ValueError)."""
    if kwargs.get("v") != NOTIFY_PAYLOAD_VERSION:
        raise ValueError(f"unsupported notification payload version {kwargs.get('v')!r}")
    if not isinstance(payload := kwargs.get("payload"), dict):
        raise ValueError("the notification has no payload object")
    return _validated(str(kwargs.get("kind")), payload)
