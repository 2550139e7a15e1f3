"""OpenAPI 3.1 description of the HTTP surface (served at /openapi.json; schemathesis fuzzes it).

The detection schema is the pydantic model's own JSON Schema, so the document cannot drift from
what the validator accepts. Every answer the app can give an operation is documented, errors
included: 400/413/415/422 for bad input, 401/403 (bearer JWT) and 429 (with ``Retry-After``) on
protected operations, 409 for a redelivery racing itself, 503 (with ``Retry-After``) when Redis is
down. Open operations (health, readiness, metrics, this document) declare ``security: []``.
HEAD and OPTIONS are answered by Flask for every path and are not listed, as is customary.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from detection_api import __version__
from detection_api.geo.types import ConfidenceFlag
from detection_api.model import Detection
from detection_api.settings import DETECTION_CREATED_TYPE, DETECTION_GEOLOCATED_TYPE
from detection_api.store.audit import AuditEvent
from detection_api.store.records import DeliveryState

_REF = "#/components/schemas/{model}"
PROBLEM_MEDIA_TYPE = "application/problem+json"
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"

# A valid v1 payload: a fuzzer's examples phase (and a reader) starts from something that works.
DETECTION_EXAMPLE: dict[str, Any] = {
    "detection_id": "drone-7-000142",
    "object_class": "vehicle",
    "ai_confidence": 0.91,
    "source": "urn:detection-api:drone-7",
    "camera_id": "drone-7-gimbal",
    "timestamp": "2026-11-26T14:05:09.250Z",
    "pixel_x": 1184.5,
    "pixel_y": 742.0,
    "sensor_metadata": {
        "location_lat": 51.2185312,
        "location_lon": -1.8052475,
        "location_elevation": 120.0,
        "ground_elevation": 177.0,
        "heading": 135.0,
        "pitch": -35.0,
        "roll": 0.8,
        "focal_length": 1400.0,
        "image_width": 1920,
        "image_height": 1080,
    },
}


def _ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_RETRY_AFTER = {
    "Retry-After": _header(
        "seconds to wait", {"type": "string", "pattern": r"^\d+$"}, required=True
    )
}
_RATE_LIMIT_HEADERS = {
    **_RETRY_AFTER,
    **{
        name: _header(description, {"type": "string"}, required=False)
        for name, description in (
            ("RateLimit-Limit", "requests allowed per window"),
            ("RateLimit-Remaining", "requests left in the window"),
            ("RateLimit-Reset", "seconds until the window resets"),
        )
    },
}
_UNAVAILABLE = _problem(
    "Queue unavailable; nothing was stored. Retry after Retry-After", _RETRY_AFTER
)
_AUTH_ERRORS = {
    "401": _problem(
        "No valid bearer token",
        {"WWW-Authenticate": _header("Bearer challenge", {"type": "string"}, required=True)},
    ),
    "403": _problem("The token lacks the scope this operation needs"),
    "429": _problem("Rate limited; retry after Retry-After seconds", _RATE_LIMIT_HEADERS),
}
_INGEST_ERRORS = {
    "400": _problem("Invalid input (the errors name the field paths); nothing was stored"),
    **_AUTH_ERRORS,
    "409": _problem("The same event is being stored by a concurrent request; retry"),
    "413": _problem(
        "Body larger than MAX_BODY_BYTES, or more detections than MAX_DETECTIONS_PER_REQUEST"
    ),
    "415": _problem("Wrong media type"),
    "422": _problem("The ray through the pixel does not reach the ground; nothing was stored"),
    "503": _UNAVAILABLE,
}
_READ_ERRORS = {
    **_AUTH_ERRORS,
    "404": _problem("No such detection (or expired)"),
    "503": _UNAVAILABLE,
}
_RECORD_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "record id (the id of an ingest answer, the last segment of its Location)",
    "schema": {"type": "string"},
}


def _schemas() -> dict[str, Any]:
    detection = Detection.model_json_schema(ref_template=_REF)
    schemas: dict[str, Any] = dict(detection.pop("$defs", {}))
    schemas["Detection"] = detection
    text = {"type": "string"}
    number = {"type": "number"}
    schemas["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": text,
            "title": text,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": text,
            "instance": text,
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path"],
                    "properties": {"path": text, "message": text, "reason": text},
                },
            },
        },
    }
    schemas["Geolocation"] = {
        "type": "object",
        "required": ["lat", "lon", "hae_m", "ce90_m", "le90_m", "ce_m", "le_m", "flag"],
        "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lon": {"type": "number", "minimum": -180, "maximum": 180},
            "hae_m": number,
            "slant_range_m": {"type": "number", "minimum": 0},
            "ground_distance_m": {"type": "number", "minimum": 0},
            "ce90_m": {"type": "number", "minimum": 0},
            "le90_m": {"type": "number", "minimum": 0},
            "ce_m": {"type": "number", "minimum": 0},
            "le_m": {"type": "number", "minimum": 0},
            "flag": {"type": "string", "enum": [flag.value for flag in ConfidenceFlag]},
            "covariance_en_m2": {
                "type": "array",
                "items": number,
                "minItems": 3,
                "maxItems": 3,
                "description": "[var_east, cov_east_north, var_north], m²",
            },
            "terrain": {
                "type": "string",
                "enum": ["dem", "flat"],
                "description": "the hit lies on the DEM, or on the flat ground_elevation plane",
            },
            "dem": {"type": "string", "description": "the DEM raster the hit lies on"},
            "terrain_note": {
                "type": "string",
                "description": "why the flat ground was used: no_dem, outside_dem, dem_nodata",
            },
        },
    }
    state = {"type": "string", "enum": [s.value for s in DeliveryState]}
    schemas["Outcome"] = {
        "type": "object",
        "required": ["id", "detection_id", "state", "uid", "cot_type", "geolocation"],
        "properties": {
            "id": text,
            "detection_id": text,
            "state": state,
            "uid": text,
            "cot_type": text,
            "object_class": text,
            "geolocation": _ref("Geolocation"),
            "filter_reason": text,
            "duplicate": {"type": "boolean"},
        },
    }
    schemas["Reply"] = {
        "description": "data of the reply CloudEvent: the outcome and its CoT event",
        "allOf": [
            _ref("Outcome"),
            {"type": "object", "required": ["cot"], "properties": {"cot": text}},
        ],
    }
    schemas["Record"] = {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
            "id": text,
            "state": state,
            "attempts": {"type": "integer", "minimum": 0},
            "created_at": number,
            "updated_at": number,
            "first_sent_at": number,
            "sent_at": number,
            "confirmed_at": number,
            "detection_id": text,
            "uid": text,
            "cot_type": text,
            "cot": {
                "type": "string",
                "description": "the CoT event, while the detection is queued, in delivery or "
                "dead (read from its delivery job), and for a filtered one; absent once "
                "confirmed (the event is on the TAK server)",
            },
            "object_class": text,
            "ai_confidence": text,
            "camera_id": text,
            "track_id": text,
            "source": text,
            "event_source": text,
            "event_id": text,
            "producer": {
                "type": "string",
                "description": "the authenticated producer: sub:<token subject> or "
                "cluster:<CloudEvent source>",
            },
            "filter_reason": text,
            "last_error": text,
            "geolocation": _ref("Geolocation"),
        },
    }
    schemas["AuditEntry"] = {
        "type": "object",
        "required": ["event", "at"],
        "properties": {
            "event": {"type": "string", "enum": [e.value for e in AuditEvent]},
            "at": {"type": "number", "description": "Unix time, seconds"},
            "record_id": text,
            "detection_id": text,
            "event_id": text,
            "reason": text,
        },
    }
    schemas["DetectionEvent"] = {
        "type": "object",
        "description": "a structured CloudEvent carrying one detection",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "enum": [DETECTION_CREATED_TYPE]},
            "datacontenttype": {"type": "string", "enum": ["application/json"]},
            "subject": text,
            "time": {"type": "string", "format": "date-time"},
            "data": _ref("Detection"),
        },
    }
    schemas["ReplyEvent"] = {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": text,
            "source": text,
            "type": {"const": DETECTION_GEOLOCATED_TYPE},
            "subject": text,
            "datacontenttype": text,
            "data": _ref("Reply"),
        },
    }
    return schemas


def _dead_letter_operation() -> dict[str, Any]:
    return {
        "operationId": "receiveBrokerDeadLetter",
        "summary": "The Broker Trigger's deadLetterSink: store an undeliverable CloudEvent",
        "description": (
            "A CloudEvent in binary or structured mode, with Knative's knativeerrorcode, "
            "knativeerrordest and knativeerrordata attributes. Stored for `detection-api queue "
            "dead`; the same (source, id) twice is stored once. Authentication as for POST /."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/cloudevents+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {}},
            },
        },
        "responses": {
            "202": {"description": "Stored (or stored before)"},
            "400": _problem("Invalid CloudEvent attributes"),
            **_AUTH_ERRORS,
            "413": _problem("Body larger than MAX_BODY_BYTES"),
            "415": _problem("Not a CloudEvent"),
            "503": _UNAVAILABLE,
        },
    }


def _cloudevents_operation() -> dict[str, Any]:
    # Binary mode only: ce-specversion or ce-id makes a request binary. In structured and batch
    # mode the body carries the attributes and other ce-* headers are ignored, so none of these
    # can be constrained further here (the accepted type is checked, in either mode, after parsing).
    binary_headers = [
        {
            "name": f"ce-{name}",
            "in": "header",
            "required": False,
            "description": f"binary mode: the CloudEvent's {name}",
            "schema": schema,
        }
        for name, schema in (
            ("specversion", {"type": "string", "enum": ["1.0"]}),
            ("id", {"type": "string", "maxLength": 256}),
            ("source", {"type": "string", "maxLength": 512}),
            (
                "type",
                {
                    "type": "string",
                    "maxLength": 256,
                    "description": f"accepted: {DETECTION_CREATED_TYPE}",
                },
            ),
        )
    ]
    event_example = {
        "specversion": "1.0",
        "id": "drone-7-000142",
        "source": "urn:detection-api:drone-7",
        "type": DETECTION_CREATED_TYPE,
        "datacontenttype": "application/json",
        "data": DETECTION_EXAMPLE,
    }
    return {
        "operationId": "ingestCloudEvents",
        "summary": "CloudEvents 1.0 in binary, structured or batch mode",
        "description": (
            f"Accepted type: {DETECTION_CREATED_TYPE}. Answers a reply event of type "
            f"{DETECTION_GEOLOCATED_TYPE} (binary mode; a batch of them for a batch), or 202 "
            "when REPLY_EVENTS is off. Redeliveries (same source and id) get the same answer."
        ),
        "parameters": binary_headers,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _ref("Detection"),
                    "example": DETECTION_EXAMPLE,
                },
                STRUCTURED_MEDIA_TYPE: {
                    "schema": _ref("DetectionEvent"),
                    "example": event_example,
                },
                BATCH_MEDIA_TYPE: {
                    "schema": {"type": "array", "minItems": 1, "items": _ref("DetectionEvent")},
                    "example": [event_example],
                },
            },
        },
        "responses": {
            "200": {
                "description": "Stored and queued (or filtered): the reply event(s)",
                "headers": {
                    "ce-type": _header(
                        "binary-mode reply type",
                        {"const": DETECTION_GEOLOCATED_TYPE},
                        required=False,
                    ),
                    "ce-id": _header("the record id", {"type": "string"}, required=False),
                },
                "content": {
                    "application/json": {"schema": _ref("Reply")},
                    BATCH_MEDIA_TYPE: {"schema": {"type": "array", "items": _ref("ReplyEvent")}},
                },
            },
            "202": {"description": "Stored and queued (or filtered); replies are turned off"},
            **_INGEST_ERRORS,
        },
    }


def _rest_operation() -> dict[str, Any]:
    one_or_many = {
        "oneOf": [_ref("Detection"), {"type": "array", "minItems": 1, "items": _ref("Detection")}]
    }
    return {
        "operationId": "createDetections",
        "summary": "Geolocate detections and queue them for the TAK server (v1 REST)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": one_or_many, "example": DETECTION_EXAMPLE}},
        },
        "responses": {
            "201": {
                "description": "Stored and queued (or filtered); CoT XML unless JSON is accepted",
                "headers": {"Location": _header("the record", {"type": "string"}, required=True)},
                "content": {
                    "application/xml": {"schema": {"type": "string"}},
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ref("Outcome"),
                                {"type": "array", "items": _ref("Outcome")},
                            ]
                        }
                    },
                },
            },
            **_INGEST_ERRORS,
        },
    }


def _open_get(operation_id: str, description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "security": [],
            "responses": {"200": {"description": description, "content": content}},
        }
    }


@cache
def openapi_document() -> dict[str, Any]:
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    ready = _open_get("ready", "Redis is reachable", {"application/json": {"schema": status}})
    ready["get"]["responses"]["503"] = _UNAVAILABLE
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Detection API",
            "version": __version__,
            "description": "AI object detections to TAK Cursor-on-Target markers.",
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/": {"post": _cloudevents_operation()},
            "/api/v1/detections": {"post": _rest_operation()},
            "/dead-letters": {"post": _dead_letter_operation()},
            "/api/v1/detections/{id}": {
                "get": {
                    "operationId": "getDetection",
                    "summary": "The record of a detection: geolocation, CoT and delivery state",
                    "parameters": [_RECORD_ID],
                    "responses": {
                        "200": {
                            "description": "The record",
                            "content": {"application/json": {"schema": _ref("Record")}},
                        },
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/v1/detections/{id}/events": {
                "get": {
                    "operationId": "getDetectionEvents",
                    "summary": "The audit trail of a detection, oldest first",
                    "parameters": [_RECORD_ID],
                    "responses": {
                        "200": {
                            "description": "The audit entries",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "array", "items": _ref("AuditEntry")}
                                }
                            },
                        },
                        **_READ_ERRORS,
                    },
                }
            },
            "/health": _open_get(
                "health", "The process is alive", {"application/json": {"schema": status}}
            ),
            "/ready": ready,
            "/metrics": _open_get(
                "metrics",
                "Prometheus metrics (OpenMetrics when asked for)",
                {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                },
            ),
            "/openapi.json": _open_get(
                "openapi", "This document", {"application/json": {"schema": {"type": "object"}}}
            ),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "scopes in the token: detections:write, detections:read",
                }
            },
        },
    }
