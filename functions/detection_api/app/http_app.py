"""The function's HTTP surface (README "HTTP API") as a Flask app.

functions-framework (``functions/main.py``) hands every request to this app: with the HTTP signature
all paths reach the one target, so routing, errors and metrics live here. Routes are thin: parse,
call the ``Ingestor``, shape the answer.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cache
from typing import Any
from xml.etree import ElementTree as ET  # nosec B405 # ElementTree only wraps the CoT events we generated

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from detection_api.app import cloudevents_io as ce
from detection_api.app.ingest import Ingestor, Outcome, Submission
from detection_api.app.metrics import FunctionMetrics, QueueDepthCollector
from detection_api.app.openapi import openapi_document
from detection_api.app.problems import PROBLEM_MEDIA_TYPE, Problem, redis_unavailable
from detection_api.app.producers import may_read, producer_of
from detection_api.app.security import install_auth, install_cors_and_headers, install_rate_limits
from detection_api.auth import Principal
from detection_api.cot import DEFAULT_TYPE_MAP
from detection_api.logs import configure_logging
from detection_api.settings import ConfigError, Settings, get_settings
from detection_api.store import broker_dead_letters

log = logging.getLogger(__name__)

JSON = "application/json"
XML = "application/xml"
RECORD_PATH = "/api/v1/detections/"
# Record fields that are bookkeeping, not part of the answer.
_INTERNAL_FIELDS = frozenset({"idem"})


def redis_from_settings(settings: Settings) -> Redis:
    # Short timeouts: a request must answer 503 quickly when Redis is gone, not hang a thread.
    return Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    settings = settings or get_settings()
    redis = redis or redis_from_settings(settings)
    app = Flask("detection_api")
    # One byte more than allowed: werkzeug stops reading a chunked body (no Content-Length) at the
    # limit without an error, so read_body() must see that more came to answer 413, not 400.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(lambda: redis))
    metrics = FunctionMetrics(registry, DEFAULT_TYPE_MAP.keys())
    ingestor = Ingestor(settings, redis)

    # -- cross-cutting ----------------------------------------------------------------------------

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("started")
        if started is not None:
            metrics.request_duration.labels(request.method, endpoint).observe(
                time.perf_counter() - started
            )
        metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        return response

    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        metrics.rejections.labels(problem.slug).inc()
        response = Response(
            json.dumps(problem.body(instance=request.path)),
            status=problem.status,
            mimetype=PROBLEM_MEDIA_TYPE,
        )
        for name, value in problem.headers.items():
            response.headers[name] = value
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        slug = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(status, f"http_{status}")
        detail = exc.description
        if isinstance(exc, RequestEntityTooLarge):
            detail = f"the request body exceeds MAX_BODY_BYTES ({settings.max_body_bytes} bytes)"
        problem = Problem(status, slug, exc.name, detail)
        response = _problem(problem)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, RedisError):
            return _problem(redis_unavailable())
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _problem(Problem(500, "internal", "Internal error", "the error was logged"))

    # After the timer hook: auth first (the rate-limit key is the token subject), then limits.
    install_cors_and_headers(app, settings)
    install_auth(app, settings)
    charge = install_rate_limits(app, settings)
    dead_letters_received = Counter(
        "detection_api_broker_dead_letters_total",
        "Broker dead letters received on POST /dead-letters (stored for `queue dead`)",
        ["error_code"],
        registry=registry,
    )

    # -- ingest -----------------------------------------------------------------------------------

    def count_outcomes(outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            kind = "duplicate" if outcome.duplicate else "accepted"
            if outcome.state == "filtered" and not outcome.duplicate:
                kind = "filtered"
            metrics.detections.labels(kind, metrics.class_label(outcome.object_class)).inc()
            if not outcome.duplicate:
                metrics.ce90.observe(outcome.geolocation["ce90_m"])

    def principal() -> Principal:
        return g.principal  # type: ignore[no-any-return] # set by install_auth for every route here

    def admit(count: int) -> None:
        """Bounds on the request's number of detections, before any of them is processed."""
        cap = settings.max_detections_per_request
        if count > cap:
            raise Problem(
                413,
                "too_many_detections",
                "Too many detections",
                f"{count} detections in one request; MAX_DETECTIONS_PER_REQUEST is {cap}: "
                "split the request",
                max_detections=cap,
            )
        charge(count - 1)  # the request itself paid for one

    def ingest(submissions: list[Submission], *, batch: bool) -> list[Outcome]:
        try:
            outcomes = ingestor.ingest(submissions, batch=batch)
        except Problem:
            for submission in submissions:
                payload = submission.payload if isinstance(submission.payload, dict) else {}
                cls = payload.get("object_class")
                label = metrics.class_label(cls) if isinstance(cls, str) else "other"
                metrics.detections.labels("rejected", label).inc()
            raise
        count_outcomes(outcomes)
        return outcomes

    def read_body() -> bytes:
        body = request.get_data(cache=False)  # raises 413 past a declared Content-Length
        if len(body) > settings.max_body_bytes:
            raise RequestEntityTooLarge()
        return body

    @app.post("/")
    def cloudevents_endpoint() -> Response:
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
        submissions = [
            Submission(
                payload=event.data,
                identity=("ce", event.source, event.event_id),
                event_id=event.event_id,
                event_source=event.source,
                producer=producer_of(principal(), event.source),
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

    @app.post("/api/v1/detections")
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
        submissions = [
            Submission(payload=item, identity=_v1_identity(item), producer=producer)
            for item in items
        ]
        outcomes = ingest(submissions, batch=batch)
        wants = request.accept_mimetypes.best_match([XML, JSON], default=XML)
        if wants == JSON:
            body: Any = [o.as_json() for o in outcomes] if batch else outcomes[0].as_json()
            response = Response(json.dumps(body), status=201, mimetype=JSON)
        else:
            response = Response(_cot_document(outcomes, batch), status=201, mimetype=XML)
        response.headers["Location"] = RECORD_PATH + outcomes[0].record_id
        return response

    def existing_record(record_id: str) -> dict[str, Any]:
        """The record, if this reader may see it: another producer's record is a 404 as well,
        so a reader learns nothing about ids that are not its own."""
        record = ingestor.records.get(record_id) if _plausible_id(record_id) else None
        if record is None or not may_read(principal(), record.get("producer")):
            raise Problem(404, "not_found", "Not found", "no detection with that id")
        return record

    @app.get("/api/v1/detections/<record_id>")
    def get_detection(record_id: str) -> Response:
        record = existing_record(record_id)
        body = {k: v for k, v in record.items() if k not in _INTERNAL_FIELDS}
        return Response(json.dumps(body), mimetype=JSON)

    @app.get("/api/v1/detections/<record_id>/events")
    def get_detection_events(record_id: str) -> Response:
        existing_record(record_id)
        return Response(json.dumps(ingestor.audit.events_for(record_id)), mimetype=JSON)

    @app.post("/dead-letters")
    def receive_dead_letter() -> Response:
        """The Broker Trigger's deadLetterSink: store the event for `detection-api queue dead`."""
        letter = ce.parse_dead_letter(request.headers, read_body())
        try:
            stored = broker_dead_letters.store(
                redis,
                letter.attributes,
                letter.data,
                retention_seconds=settings.retention_seconds,
            )
        except RedisError:
            raise redis_unavailable() from None  # Knative retries 5xx: the letter is not lost
        code = letter.attributes.get("knativeerrorcode", "")
        label = code if code.isdigit() and len(code) == 3 else "other"
        if stored:
            dead_letters_received.labels(label).inc()
        log.warning(
            "broker dead letter %s: error code %s",
            "stored" if stored else "already stored",
            label,
            extra={"event_id": letter.attributes.get("id", "")[:128]},
        )
        return Response(status=202)

    # -- operations -------------------------------------------------------------------------------

    @app.get("/health")
    def health() -> Response:
        return Response(json.dumps({"status": "ok"}), mimetype=JSON)

    @app.get("/ready")
    def ready() -> Response:
        try:
            redis.ping()
        except RedisError:
            raise redis_unavailable() from None
        return Response(json.dumps({"status": "ready"}), mimetype=JSON)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        # Prometheus scrapes the pod directly; anything that came through the ingress (which
        # always adds a forwarding header) is a request from outside: metrics are never public.
        if request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded"):
            raise Problem(404, "not_found", "Not found", "no such path")
        # OpenMetrics when the scraper asks for it (Prometheus does), else the classic text.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(json.dumps(openapi_document()), mimetype=JSON)

    return app


def _plausible_id(record_id: str) -> bool:
    return record_id.isalnum() and len(record_id) <= 64


def _v1_identity(item: Any) -> tuple[str, ...] | None:
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


def _cot_document(outcomes: list[Outcome], batch: bool) -> bytes:
    if not batch:
        return outcomes[0].cot_xml.encode()
    wrapper = ET.Element("events")
    for outcome in outcomes:
        if not outcome.cot_xml:  # a duplicate whose record is gone: only its marker is left
            continue
        wrapper.append(ET.fromstring(outcome.cot_xml))  # noqa: S314 - our own generated XML  # nosec B314 # parses our own generated CoT, never input
    return ET.tostring(wrapper, encoding="utf-8")


@cache
def get_app() -> Flask:
    """The process-wide app, built when functions/main.py is imported (at start, not on the first
    request). Raises ``ConfigError`` (one printable line) for a bad setting."""
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        return create_app(settings)
    except (ValueError, OSError) as exc:  # settings only the components can judge (key files)
        raise ConfigError(f"invalid configuration: {str(exc).splitlines()[0][:300]}") from None
