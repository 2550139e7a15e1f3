"""OpenAPI 3.1 description of the REST API (served at /openapi.json; schemathesis fuzzes from it).

The detection schema is the pydantic model's own JSON Schema, so the document cannot drift from
what the validator accepts.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from detection_api import __version__
from detection_api.model import Detection

_REF = "#/components/schemas/{model}"


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    detection = Detection.model_json_schema(ref_template=_REF)
    components: dict[str, Any] = dict(detection.pop("$defs", {}))
    components["Detection"] = detection
    components["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    components["Outcome"] = {
        "type": "object",
        "required": ["id", "detection_id", "state", "uid", "cot_type", "geolocation"],
        "properties": {
            "id": {"type": "string"},
            "detection_id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["queued", "filtered", "sent", "confirmed", "retrying", "dead"],
            },
            "uid": {"type": "string"},
            "cot_type": {"type": "string"},
            "object_class": {"type": "string"},
            "geolocation": {"type": "object"},
            "filter_reason": {"type": "string"},
            "duplicate": {"type": "boolean"},
        },
    }
    errors = {
        "400": _problem_response("Invalid detection (the errors name the field paths)"),
        "413": _problem_response("Body larger than MAX_BODY_BYTES"),
        "415": _problem_response("Not JSON"),
        "422": _problem_response("The ray through the pixel does not reach the ground"),
        "503": _problem_response("Queue unavailable; retry after Retry-After seconds"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Detection API",
            "version": __version__,
            "description": "AI object detections to TAK Cursor-on-Target markers.",
        },
        "paths": {
            "/api/v1/detections": {
                "post": {
                    "operationId": "createDetections",
                    "summary": "Geolocate detections and queue them for the TAK server",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": _REF.format(model="Detection")},
                                        {
                                            "type": "array",
                                            "minItems": 1,
                                            "items": {"$ref": _REF.format(model="Detection")},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored and queued (or filtered); CoT XML by default",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                            "content": {
                                "application/xml": {"schema": {"type": "string"}},
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": _REF.format(model="Outcome")},
                                            {
                                                "type": "array",
                                                "items": {"$ref": _REF.format(model="Outcome")},
                                            },
                                        ]
                                    }
                                },
                            },
                        },
                        **errors,
                    },
                }
            },
            "/api/v1/detections/{id}": {
                "get": {
                    "operationId": "getDetection",
                    "summary": "The record of a detection: geolocation, CoT and delivery state",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "The record",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "404": _problem_response("No such detection (or expired)"),
                        "503": errors["503"],
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "responses": {"200": {"description": "The process is alive"}},
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "responses": {
                        "200": {"description": "Redis is reachable"},
                        "503": errors["503"],
                    },
                }
            },
        },
        "components": {"schemas": components},
    }
