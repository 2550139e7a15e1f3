"""The steps both ingest routes (CloudEvents on ``/``, v1 REST) take around the ``Ingestor``:
read the body within ``MAX_BODY_BYTES``, admit the request's detection count (the cap), ingest
with the rate-limit charge of one per detection (taken in the script that stores them; 429 when
refused), and count what the ingest decided."""

from __future__ import annotations

from flask import g, request
from werkzeug.exceptions import RequestEntityTooLarge

from detection_api.app.metrics import FunctionMetrics, observe_all
from detection_api.app.problems import Problem
from detection_api.app.services import services
from detection_api.app.submissions import Outcome, Submission
from detection_api.store.atomic import RateLimited


def read_body() -> bytes:
    body = request.get_data(cache=False)  # raises 413 past a declared Content-Length
    if len(body) > services().settings.max_body_bytes:
        raise RequestEntityTooLarge()
    return body


def admit(count: int) -> None:
    """Bounds on the request's number of detections, before any of them is processed."""
    found = services()
    cap = found.settings.max_detections_per_request
    if count > cap:
        raise Problem(
            413,
            "too_many_detections",
            "Too many detections",
            f"{count} detections in one request; MAX_DETECTIONS_PER_REQUEST is {cap}: "
            "split the request",
            max_detections=cap,
        )


def ingest(submissions: list[Submission], *, batch: bool) -> list[Outcome]:
    found = services()
    charges = found.rate_limits.window_charges(len(submissions))
    g.rate_charged = True  # from here the Ingestor takes the charge, stored or rejected
    try:
        outcomes = found.ingestor.ingest(submissions, batch=batch, charges=charges)
    except RateLimited as refused:
        raise found.rate_limits.refused(refused.index) from None
    except Problem:
        _count_rejected(found.metrics, submissions)
        raise
    _count_outcomes(found.metrics, outcomes)
    return outcomes


def _count_rejected(metrics: FunctionMetrics, submissions: list[Submission]) -> None:
    for submission in submissions:
        payload = submission.payload if isinstance(submission.payload, dict) else {}
        cls = payload.get("object_class")
        label = metrics.class_label(cls) if isinstance(cls, str) else "other"
        metrics.detections_by("rejected", label).inc()


def _count_outcomes(metrics: FunctionMetrics, outcomes: list[Outcome]) -> None:
    # One increment per (kind, class) of the request, not one per detection: a list of 100
    # mostly shares one class, and each increment takes the metric's lock. Classes are counted
    # as sent and mapped to their label once each; the ce90s go into the histogram together.
    counts: dict[tuple[str, str], int] = {}
    ce90s: list[float] = []
    for outcome in outcomes:
        if outcome.duplicate:
            kind = "duplicate"
        else:
            kind = "filtered" if outcome.state == "filtered" else "accepted"
            ce90s.append(outcome.geolocation["ce90_m"])
        key = (kind, outcome.object_class)
        counts[key] = counts.get(key, 0) + 1
    for (kind, object_class), count in counts.items():
        metrics.detections_by(kind, metrics.class_label(object_class)).inc(count)
    observe_all(metrics.ce90, ce90s)
