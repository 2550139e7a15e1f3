"""``POST /dead-letters``: the Broker Trigger's deadLetterSink. The event is stored for
``detection-api queue dead``; the same (source, id) twice is stored once."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from redis.exceptions import RedisError

from detection_api.app import cloudevents_io as ce
from detection_api.app.intake import read_body
from detection_api.app.problems import redis_unavailable
from detection_api.app.services import services
from detection_api.store import broker_dead_letters

log = logging.getLogger(__name__)

blueprint = Blueprint("dead_letters", __name__)


@blueprint.post("/dead-letters")
def receive_dead_letter() -> Response:
    found = services()
    letter = ce.parse_dead_letter(request.headers, read_body())
    try:
        stored = broker_dead_letters.store(
            found.redis,
            letter.attributes,
            letter.data,
            retention_seconds=found.settings.retention_seconds,
        )
    except RedisError:
        raise redis_unavailable() from None  # Knative retries 5xx: the letter is not lost
    label = error_code_label(letter.attributes.get("knativeerrorcode", ""))
    if stored:
        found.dead_letters_received.labels(label).inc()
    log.warning(
        "broker dead letter %s: error code %s",
        "stored" if stored else "already stored",
        label,
        extra={"event_id": letter.attributes.get("id", "")[:128]},
    )
    return Response(status=202)


def error_code_label(code: str) -> str:
    """The metric label of a dead letter's ``knativeerrorcode``: an HTTP status as it is, anything
    else ``other`` (a label per producer-chosen value would grow the metric without bound).
    ASCII digits only: ``str.isdigit`` also takes other scripts' digits ("٥٠٠", "５００")."""
    return code if len(code) == 3 and code.isascii() and code.isdigit() else "other"
