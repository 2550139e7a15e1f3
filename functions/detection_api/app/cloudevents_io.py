"""CloudEvents over HTTP: binary, structured and batch requests in, reply events out (SDK based).

The SDK fills in a missing ``id`` and ``specversion`` with defaults; a producer that forgets them
must hear so instead, because (source, id) is what makes redelivery idempotent. So the required
attributes are checked here before the SDK parses the event. SDK error messages can embed the whole
body, so they are never passed to the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.exceptions import GenericException
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_dict, from_http

from detection_api.app.problems import Problem, invalid
from detection_api.settings import DETECTION_GEOLOCATED_TYPE

BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
REPLY_SOURCE = "/detection-api"


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    event_id: str
    source: str
    type: str
    data: Any
    subject: str | None = None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json_media(mt: str) -> bool:
    return mt == "application/json" or mt.endswith("+json") or mt == "text/json"


def _unsupported(detail: str) -> Problem:
    return Problem(415, "unsupported_media_type", "Unsupported media type", detail)


def _check_attributes(attrs: Mapping[str, Any], where: str) -> None:
    errors = [
        {"path": f"{where}{name}", "message": "required CloudEvents attribute is missing"}
        for name in REQUIRED_ATTRIBUTES
        if not isinstance(attrs.get(name), str) or not attrs.get(name)
    ]
    if errors:
        raise invalid("missing CloudEvents attributes", errors)
    if attrs["specversion"] != "1.0":
        raise invalid(
            f"unsupported CloudEvents specversion {str(attrs['specversion'])[:16]!r}; use 1.0",
            [{"path": f"{where}specversion", "message": "must be 1.0"}],
        )


def _to_incoming(event: CloudEvent) -> IncomingEvent:
    return IncomingEvent(
        event_id=event["id"],
        source=event["source"],
        type=event["type"],
        data=event.data,
        subject=event.get("subject"),
    )


def parse_request(headers: Mapping[str, str], body: bytes) -> tuple[str, list[IncomingEvent]]:
    """Return (mode, events) where mode is binary, structured or batch. Raises Problem."""
    lowered = {k.lower(): v for k, v in headers.items()}
    mt = media_type(lowered.get("content-type"))
    if "ce-specversion" in lowered or "ce-id" in lowered:
        return "binary", [_parse_binary(lowered, mt, body)]
    if mt == STRUCTURED_MEDIA_TYPE:
        return "structured", [_parse_structured_json(body)]
    if mt == BATCH_MEDIA_TYPE:
        return "batch", _parse_batch(body)
    raise _unsupported(
        "send a CloudEvent: binary mode (ce-* headers with application/json data), "
        f"structured ({STRUCTURED_MEDIA_TYPE}) or batch ({BATCH_MEDIA_TYPE}); "
        "plain JSON goes to /api/v1/detections"
    )


def _parse_binary(headers: Mapping[str, str], mt: str, body: bytes) -> IncomingEvent:
    _check_attributes({name: headers.get(f"ce-{name}") for name in REQUIRED_ATTRIBUTES}, "ce-")
    # No Content-Type at all is read as JSON (some producers omit it); anything else must say JSON.
    if mt and not _is_json_media(mt):
        raise _unsupported("binary-mode data must be JSON (Content-Type: application/json)")
    try:
        event = from_http(headers, body)
    except GenericException:
        raise invalid("the CloudEvent could not be parsed") from None
    if isinstance(event.data, str | bytes):
        raise invalid("the event data is not valid JSON", [{"path": "data", "message": "not JSON"}])
    return _to_incoming(event)


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise invalid("the body is not valid JSON") from None


def _structured_from_dict(raw: Any, where: str) -> IncomingEvent:
    if not isinstance(raw, dict):
        raise invalid("a structured CloudEvent must be a JSON object", [{"path": where or "(body)"}])
    _check_attributes(raw, where)
    content_type = media_type(raw.get("datacontenttype") or "application/json")
    if "data_base64" in raw or not _is_json_media(content_type):
        raise _unsupported("event data must be JSON (datacontenttype application/json)")
    try:
        event = from_dict(raw)
    except GenericException:
        raise invalid("the CloudEvent could not be parsed") from None
    return _to_incoming(event)


def _parse_structured_json(body: bytes) -> IncomingEvent:
    return _structured_from_dict(_load_json(body), "")


def _parse_batch(body: bytes) -> list[IncomingEvent]:
    raw = _load_json(body)
    if not isinstance(raw, list):
        raise invalid("a CloudEvents batch must be a JSON array of structured events")
    if not raw:
        raise invalid("the CloudEvents batch is empty")
    return [_structured_from_dict(item, f"[{i}].") for i, item in enumerate(raw)]


def reply_event(data: Any, *, event_id: str, subject: str | None) -> CloudEvent:
    """The reply to a detection: a different type than the input, so a Broker cannot loop it."""
    attributes = {
        "type": DETECTION_GEOLOCATED_TYPE,
        "source": REPLY_SOURCE,
        "id": event_id,
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    return CloudEvent(attributes, data)


def binary_reply(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(event)
    return headers, body


def batch_reply(events: list[CloudEvent]) -> bytes:
    items = [json.loads(to_structured(event)[1]) for event in events]
    return json.dumps(items, separators=(",", ":")).encode()
