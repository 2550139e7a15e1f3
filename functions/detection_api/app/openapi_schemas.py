"""The schemas of the OpenAPI document (``components.schemas``), referenced as ``ref("Name")``.

The detection schema is the pydantic model's own JSON Schema, so the document cannot drift from
what the validator accepts; the others describe what the app answers (``openapi.py`` assembles the
operations around them).
"""

from __future__ import annotations

from typing import Any

from detection_api.geo.types import ConfidenceFlag
from detection_api.model import Detection
from detection_api.settings import DETECTION_CREATED_TYPE, DETECTION_GEOLOCATED_TYPE
from detection_api.store.audit import AuditEvent
from detection_api.store.records import DeliveryState

_REF = "#/components/schemas/{model}"


def ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


def component_schemas() -> dict[str, Any]:
    """``components.schemas``: the detection model's own JSON Schema (and its ``$defs``), and
    the shapes of answers, records, audit entries and CloudEvents."""
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
            "geolocation": ref("Geolocation"),
            "filter_reason": text,
            "duplicate": {"type": "boolean"},
        },
    }
    schemas["Reply"] = {
        "description": "data of the reply CloudEvent: the outcome and its CoT event",
        "allOf": [
            ref("Outcome"),
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
            "captured_at": {
                "type": "number",
                "description": "the detection's capture time (its timestamp; the CoT start), "
                "seconds since the epoch, to the millisecond",
            },
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
            "geolocation": ref("Geolocation"),
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
            "data": ref("Detection"),
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
            "data": ref("Reply"),
        },
    }
    return schemas
