"""``POST /``: CloudEvents 1.0 in binary, structured or batch mode; answers reply events (or 202
when ``REPLY_EVENTS`` is off)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from detection_api.app import cloudevents_io as ce
from detection_api.app.intake import admit, ingest, read_body
from detection_api.app.problems import Problem
from detection_api.app.producers import producer_of
from detection_api.app.services import principal, services
from detection_api.app.submissions import Submission

blueprint = Blueprint("cloudevents", __name__)


@blueprint.post("/")
def receive_events() -> Response:
    settings = services().settings
    mode, events = ce.parse_request(request.headers, read_body())
    admit(len(events))
    accepted = settings.accepted_event_types
    wrong = [
        {"path": f"[{i}].type" if mode == "batch" else "type", "message": "not accepted"}
        for i, event in enumerate(events)
        if event.type not in accepted
    ]
    if wrong:
        raise Problem(
            400,
            "unsupported_event_type",
            "Unsupported event type",
            f"accepted event types: {', '.join(sorted(accepted))}",
            errors=wrong,
        )
    who = principal()
    submissions = [
        Submission(
            payload=event.data,
            identity=("ce", event.source, event.event_id),
            event_id=event.event_id,
            event_source=event.source,
            producer=producer_of(who, event.source),
            identity_path="id",
        )
        for event in events
    ]
    outcomes = ingest(submissions, batch=mode == "batch")
    if not settings.reply_events:
        return Response(status=202)
    replies = [
        ce.reply_event(
            {**o.as_json(), "cot": o.cot_xml}, event_id=o.record_id, subject=o.detection_id
        )
        for o in outcomes
    ]
    if mode == "batch":
        return Response(ce.batch_reply(replies), status=200, mimetype=ce.BATCH_MEDIA_TYPE)
    headers, body = ce.binary_reply(replies[0])
    return Response(body, status=200, headers=headers)
