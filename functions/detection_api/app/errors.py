"""Every error the app answers is RFC 9457 problem+json (``problems.py``), counted by reason:
a ``Problem`` raised anywhere, werkzeug's HTTP errors (404, 405, 413...), a Redis failure (503),
and anything unexpected (500, logged, never a stack trace in the answer)."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from detection_api.app.metrics import FunctionMetrics
from detection_api.app.problems import PROBLEM_MEDIA_TYPE, Problem, redis_unavailable

log = logging.getLogger(__name__)

_HTTP_SLUGS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class ProblemResponder:
    """The app's error handlers; ``max_body_bytes`` words the 413 detail."""

    def __init__(self, metrics: FunctionMetrics, max_body_bytes: int) -> None:
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def install(self, app: Flask) -> None:
        app.register_error_handler(Problem, self.problem)
        app.register_error_handler(HTTPException, self.http_error)
        app.register_error_handler(Exception, self.unexpected)

    def problem(self, problem: Problem) -> Response:
        self.metrics.rejections.labels(problem.slug).inc()
        response = Response(
            json.dumps(problem.body(instance=request.path)),
            status=problem.status,
            mimetype=PROBLEM_MEDIA_TYPE,
        )
        for name, value in problem.headers.items():
            response.headers[name] = value
        return response

    def http_error(self, exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description
        if isinstance(exc, RequestEntityTooLarge):
            detail = f"the request body exceeds MAX_BODY_BYTES ({self.max_body_bytes} bytes)"
        slug = _HTTP_SLUGS.get(status, f"http_{status}")
        response = self.problem(Problem(status, slug, exc.name, detail))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    def unexpected(self, exc: Exception) -> Response:
        if isinstance(exc, RedisError):
            return self.problem(redis_unavailable())
        log.exception("unexpected error on %s %s", request.method, request.path)
        return self.problem(Problem(500, "internal", "Internal error", "the error was logged"))
