"""``GET /api/v1/detections/<id>`` (the record: geolocation, CoT, delivery state) and
``GET /api/v1/detections/<id>/events`` (its audit trail, oldest first).

Another producer's record is a 404 as well, so a reader learns nothing about ids not its own."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

from detection_api.app.problems import Problem
from detection_api.app.producers import may_read
from detection_api.app.services import principal, services

JSON = "application/json"
# Record fields that are bookkeeping, not part of the answer.
_INTERNAL_FIELDS = frozenset({"idem"})

blueprint = Blueprint("records", __name__)


@blueprint.get("/api/v1/detections/<record_id>")
def get_detection(record_id: str) -> Response:
    record = _readable_record(record_id)
    body = {k: v for k, v in record.items() if k not in _INTERNAL_FIELDS}
    return Response(json.dumps(body), mimetype=JSON)


@blueprint.get("/api/v1/detections/<record_id>/events")
def get_detection_events(record_id: str) -> Response:
    _readable_record(record_id)
    return Response(json.dumps(services().ingestor.audit.events_for(record_id)), mimetype=JSON)


def _readable_record(record_id: str) -> dict[str, Any]:
    record = services().ingestor.records.get(record_id) if _plausible_id(record_id) else None
    if record is None or not may_read(principal(), record.get("producer")):
        raise Problem(404, "not_found", "Not found", "no detection with that id")
    return record


def _plausible_id(record_id: str) -> bool:
    return record_id.isalnum() and len(record_id) <= 64
