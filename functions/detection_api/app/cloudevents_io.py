"""CloudEvents over HTTP: binary, structured and batch requests in, reply events out (SDK based).

The SDK fills in a missing ``id`` and ``specversion`` with defaults; a producer that forgets them
must hear so instead, because (source, id) is what makes redelivery idempotent. So the required
attributes are checked here before the SDK parses the event. SDK error messages can embed the whole
body, so they are never passed to the client.

Hostile input stops here, as a 400 problem, before anything reaches Redis or a response header:
- JSON bodies must be UTF-8 without lone UTF-16 surrogates (``"\\ud800"`` is valid JSON syntax, but
  such a string can be neither stored nor sent as UTF-8); nesting is bounded by Python's recursion
  guard (``load_json``).
- Attribute values follow the CloudEvents String type: no control characters (U+0000-U+001F,
  U+007F-U+009F), no Unicode noncharacters, no unpaired surrogates. A newline in an ``id`` would
  otherwise reach the ``ce-subject`` header of the reply.
- Every attribute is bounded: ``MAX_ATTRIBUTE_CHARS`` characters (a few named ones more, see
  ``_ATTRIBUTE_LIMITS``) and at most ``MAX_ATTRIBUTES`` attributes, so an id can neither fill
  Redis, nor the logs, nor the reply's ``ce-subject`` header.
- Binary-mode ``ce-*`` header values are percent-decoded (UTF-8) as the HTTP binding requires
  (3.1.3.2) before anything looks at them; reply headers are percent-encoded (``binary_reply``),
  so any Unicode a producer put in its event id travels safely both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson
from cloudevents.conversion import to_binary, to_dict
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_dict, from_http

from detection_api.app.problems import Problem, invalid
from detection_api.settings import DETECTION_GEOLOCATED_TYPE

BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
REPLY_SOURCE = "/detection-api"
MAX_ATTRIBUTE_CHARS = 256
MAX_ATTRIBUTES = 32
# Longer bounds for attributes that are longer by nature: Knative's error data (the base64 of a
# failed delivery's answer, truncated by Knative) on dead letters, and URIs.
_ATTRIBUTE_LIMITS = {"knativeerrordata": 8192, "source": 512, "dataschema": 1024}

# CloudEvents 1.0 String type: these code points are not allowed in attribute values.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0, 0x110000, 0x10000)
)
_NOT_CE_STRING = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")
# Header values arrive as latin-1 text of raw bytes: bytes 0x80-0x9f are UTF-8 continuation bytes
# there, not C1 controls, so only C0 controls and DEL are refused in binary mode.
_NOT_HEADER_TEXT = re.compile("[\x00-\x1f\x7f]")
# A JSON escape in the surrogate range: only then can decoded text hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# load_json reads bodies with orjson first: a third of the standard library's time. orjson reads
# every document json.loads reads the same way but these: it refuses NaN/Infinity, numbers out of
# a double's range, lone surrogates, a byte order mark and nesting past 1024 (then json.loads
# decides, as before), and reads integers beyond 64 bits as floats, so a body with a run of 19
# digits anywhere goes to json.loads directly (found with one translate and one substring search,
# a tenth of a regular expression's time).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGIT_RUN = b"0" * 19
# Percent-encoded in header values (HTTP binding 3.1.3.2): all but printable ASCII, and '"' and '%'.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


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


def _check_attributes(
    attrs: Mapping[str, Any], where: str, forbidden: re.Pattern[str] = _NOT_CE_STRING
) -> None:
    errors = [
        {"path": f"{where}{name}", "message": "required CloudEvents attribute is missing"}
        for name in REQUIRED_ATTRIBUTES
        if not isinstance(attrs.get(name), str) or not attrs.get(name)
    ]
    if errors:
        raise invalid("missing CloudEvents attributes", errors)
    if len(attrs) > MAX_ATTRIBUTES + 2:  # (+ data / data_base64 of a structured event)
        raise invalid(f"a CloudEvent may carry at most {MAX_ATTRIBUTES} attributes")
    too_long = [
        {
            "path": f"{where}{name[:64]}",
            "message": f"longer than {_ATTRIBUTE_LIMITS.get(name, MAX_ATTRIBUTE_CHARS)} characters",
        }
        for name, value in attrs.items()
        if name not in {"data", "data_base64"}
        and (len(name) > 64 or len(str(value)) > _ATTRIBUTE_LIMITS.get(name, MAX_ATTRIBUTE_CHARS))
    ]
    if too_long:
        raise invalid("CloudEvents attribute too long", too_long)
    bad_text = [
        {
            "path": f"{where}{name}",
            "message": "control characters, noncharacters and lone surrogates are not allowed",
        }
        for name, value in attrs.items()
        if name not in {"data", "data_base64"}
        and isinstance(value, str)
        and forbidden.search(value)
    ]
    if bad_text:
        raise invalid("CloudEvents attribute values must be printable text", bad_text)
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


def _decoded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the ``ce-*`` values percent-decoded (UTF-8, strictly)."""
    out: dict[str, str] = {}
    bad: list[dict[str, str]] = []
    for name, value in headers.items():
        out[name] = value
        if name.startswith("ce-") and "%" in value:
            try:
                out[name] = unquote(value, encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                bad.append({"path": name[:64], "message": "percent-encoding is not UTF-8"})
    if bad:
        raise invalid("CloudEvents header values must percent-encode UTF-8", bad)
    return out


def _parse_binary(headers: Mapping[str, str], mt: str, body: bytes) -> IncomingEvent:
    raw = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
    _check_attributes(raw, "ce-", _NOT_HEADER_TEXT)  # raw bytes: no C0 controls in headers
    if any("%" in value for value in raw.values()):  # (most events need no decoding)
        headers = _decoded_headers(headers)
        attributes = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        _check_attributes(attributes, "ce-")  # decoded text: the CloudEvents String rules
    # No Content-Type at all is read as JSON (some producers omit it); anything else must say JSON.
    # A CloudEvents media type with ce-* headers is two modes at once (the SDK would read it as
    # structured and fail on the body): refused, not guessed.
    if mt in {STRUCTURED_MEDIA_TYPE, BATCH_MEDIA_TYPE}:
        raise _unsupported("ce-* headers make a binary-mode event: send its data as JSON")
    if mt and not _is_json_media(mt):
        raise _unsupported("binary-mode data must be JSON (Content-Type: application/json)")
    # The data is parsed here, strictly, and handed to the SDK already parsed.
    data = load_json(body, "the event data", path="data") if body.strip() else None
    try:
        event = from_http(headers, body, data_unmarshaller=lambda _raw: data)
    except GenericException:
        raise invalid("the CloudEvent could not be parsed") from None
    return _to_incoming(event)


def load_json(body: bytes, what: str = "the body", *, path: str | None = None) -> Any:
    """Parse a request body as strict JSON (UTF-8, optional BOM). Raises Problem 400 for invalid
    JSON, invalid UTF-8, nesting deeper than the recursion guard and lone surrogates."""

    def refused(detail: str, message: str) -> Problem:
        return invalid(f"{what} {detail}", [{"path": path, "message": message}] if path else [])

    if _DIGIT_RUN not in body.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library's reading below decides, and words the refusal
    try:
        text = body.decode("utf-8-sig")  # strict: refuses invalid and surrogate-encoding bytes
        value = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise refused("is not valid UTF-8 JSON", "not JSON") from None
    if _SURROGATE_ESCAPE.search(text):
        # Re-encoding as UTF-8 fails exactly on lone surrogates, in keys and values alike.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise refused(
                "holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape)", "lone surrogate"
            ) from None
        except RecursionError:
            raise refused("is nested too deeply", "too deep") from None
    return value


def _structured_from_dict(raw: Any, where: str) -> IncomingEvent:
    if not isinstance(raw, dict):
        raise invalid(
            "a structured CloudEvent must be a JSON object", [{"path": where or "(body)"}]
        )
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
    return _structured_from_dict(load_json(body), "")


def _parse_batch(body: bytes) -> list[IncomingEvent]:
    raw = load_json(body)
    if not isinstance(raw, list):
        raise invalid("a CloudEvents batch must be a JSON array of structured events")
    if not raw:
        raise invalid("the CloudEvents batch is empty")
    return [_structured_from_dict(item, f"[{i}].") for i, item in enumerate(raw)]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A CloudEvent the Broker could not deliver, as Knative hands it to a dead-letter sink."""

    attributes: dict[str, str]
    data: str  # the event data as text (truncated to MAX_DEAD_LETTER_DATA characters)


MAX_DEAD_LETTER_DATA = 65_536


def parse_dead_letter(headers: Mapping[str, str], body: bytes) -> DeadLetter:
    """Binary or structured; the data is kept as text whatever its type (a dead letter is stored
    for an operator to read, not processed). Attributes are checked as for any event."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "ce-specversion" in lowered or "ce-id" in lowered:
        raw = {name[3:]: value for name, value in lowered.items() if name.startswith("ce-")}
        _check_attributes(raw, "ce-", _NOT_HEADER_TEXT)
        decoded = _decoded_headers(lowered)
        attributes = {k[3:]: v for k, v in decoded.items() if k.startswith("ce-")}
        _check_attributes(attributes, "ce-")
        if lowered.get("content-type"):
            attributes["datacontenttype"] = lowered["content-type"][:MAX_ATTRIBUTE_CHARS]
        data = body.decode("utf-8", "replace")
    elif media_type(lowered.get("content-type")) == STRUCTURED_MEDIA_TYPE:
        event = load_json(body)
        if not isinstance(event, dict):
            raise invalid("a structured CloudEvent must be a JSON object")
        _check_attributes(event, "")
        attributes = {
            k: str(v)
            for k, v in event.items()
            if k not in {"data", "data_base64"} and v is not None
        }
        value = event.get("data", event.get("data_base64"))
        data = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    else:
        raise _unsupported("a dead letter is a CloudEvent, binary or structured")
    return DeadLetter(attributes, data[:MAX_DEAD_LETTER_DATA])


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
    """Binary-mode reply; ce-* values percent-encoded (UTF-8) as the HTTP binding requires, since
    the subject is the producer's id and may hold any Unicode."""
    headers, body = to_binary(event)
    encoded = {
        name: quote(value, safe=_HEADER_SAFE) if name.lower().startswith("ce-") else value
        for name, value in headers.items()
    }
    return encoded, body


def batch_reply(events: list[CloudEvent]) -> bytes:
    """A batch of structured events. With JSON data and text attributes (ours), a structured
    event is its attributes and ``data`` in one object, which is what ``to_dict`` returns: the
    batch is encoded once, not each event and then the batch again."""
    return json.dumps([to_dict(event) for event in events], separators=(",", ":")).encode()
