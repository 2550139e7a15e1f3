"""``POST /api/v1/detections``: v1 JSON, one object or a list. 201 with CoT XML by default (v1
clients expect it), JSON with ``Accept: application/json``; ``Location`` names the first record."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET  # nosec B405 # ElementTree only wraps the CoT events we generated

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from detection_api.app import cloudevents_io as ce
from detection_api.app.intake import admit, ingest, read_body
from detection_api.app.problems import Problem
from detection_api.app.producers import producer_of
from detection_api.app.services import principal
from detection_api.app.submissions import Outcome, Submission

JSON = "application/json"
XML = "application/xml"
RECORD_PATH = "/api/v1/detections/"

blueprint = Blueprint("detections", __name__)


@blueprint.post("/api/v1/detections")
def create_detections() -> Response:
    if not ce.media_type(request.content_type).endswith("json"):
        raise Problem(
            415, "unsupported_media_type", "Unsupported media type", "send application/json"
        )
    # Strict UTF-8 JSON: a lone surrogate would otherwise reach Redis and fail there.
    payload = ce.load_json(read_body())
    batch = isinstance(payload, list)
    items = payload if batch else [payload]
    admit(len(items))
    producer = producer_of(principal())
    # Positional, in field order (payload, identity, event_id, event_source, producer): a named
    # tuple called with keywords gets them as a dict, per detection.
    submissions = [Submission(item, v1_identity(item), None, None, producer) for item in items]
    outcomes = ingest(submissions, batch=batch)
    if wants_json(request.headers.get("Accept")):
        body: Any = [o.as_json() for o in outcomes] if batch else outcomes[0].as_json()
        # orjson: a list of 100 answers in a twelfth of the standard library's time (issue 12)
        response = Response(orjson.dumps(body), status=201, mimetype=JSON)
    else:
        response = Response(cot_document(outcomes, batch), status=201, mimetype=XML)
    response.headers["Location"] = RECORD_PATH + outcomes[0].record_id
    return response


# The Accept values producers send, decided without werkzeug's parser (3% of a single request's
# time); tests/test_routes_detections.py checks each against ``best_match``.
_WANTS_JSON = {None: False, "": False, "*/*": False, JSON: True, XML: False}


def wants_json(accept: str | None) -> bool:
    """Whether the answer to this ``Accept`` value is JSON: CoT XML unless the client prefers
    ``application/json``. Other values are parsed as ``request.accept_mimetypes`` parses them."""
    known = _WANTS_JSON.get(accept)
    if known is not None:
        return known
    return parse_accept_header(accept, MIMEAccept).best_match([XML, JSON], default=XML) == JSON


def v1_identity(item: Any) -> tuple[str, ...] | None:
    """v1 producers that send a detection_id get idempotent retries; others get a new record.
    The id is the producer's per camera (cameras commonly number from 1), so the camera is part
    of the identity (and the authenticated producer, added by the Submission)."""
    if not isinstance(item, dict):
        return None
    detection_id = _id_text(item.get("detection_id"))
    if detection_id is None:
        return None
    return ("v1", _id_text(item.get("camera_id")) or "", detection_id)


def _id_text(value: Any) -> str | None:
    """An id as the model reads it: text, or an integer as its decimal text (never a bool)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def cot_document(outcomes: list[Outcome], batch: bool) -> bytes:
    """One CoT event, or an ``<events>`` wrapper around a list's events."""
    if not batch:
        return outcomes[0].cot_xml.encode()
    wrapper = ET.Element("events")
    for outcome in outcomes:
        if not outcome.cot_xml:  # a duplicate whose record is gone: only its marker is left
            continue
        wrapper.append(ET.fromstring(outcome.cot_xml))  # noqa: S314 - our own generated XML  # nosec B314 # parses our own generated CoT, never input
    return ET.tostring(wrapper, encoding="utf-8")
