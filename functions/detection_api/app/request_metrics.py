"""Request metrics around the app's whole dispatch, and the ``/metrics`` endpoint.

The names and labels are a contract with the alert rules and canary checks in ``knative/``:
``detection_api_requests_total{method,endpoint,status}`` and
``detection_api_request_duration_seconds{method,endpoint}``, where ``endpoint`` is the route
template (``unmatched`` for a path no route matches), never a raw path. ``MeteredFlask`` observes
both around its whole dispatch, so requests that a before-request hook answers (401, 403, 429),
404s and 405s are counted as well as routed ones.

The two metrics are prometheus_client's, observed here rather than through
prometheus-flask-exporter's counter and histogram wrappers: the wrappers call
``inspect.getfullargspec`` on every label function for every request, and took 12% of a single
ingest request's instructions (README, "Benchmarks"). The exporter still serves ``/metrics``: the
app's own registry (domain metrics and the scrape-time queue-depth collector too), OpenMetrics
when the scraper asks for it. It answers 404 to anything that came through the ingress (which
always adds a forwarding header): Prometheus scrapes pods directly, and metrics are never public.

One gunicorn worker per pod (``WORKERS=1``, as the manifests set): the registry is the process's.
prometheus-flask-exporter's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) is not used; it would
drop the scrape-time queue-depth collector.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from timeit import default_timer
from typing import Any

from flask import Flask, Request, Response, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_flask_exporter import PrometheusMetrics

from detection_api.app.metrics import LATENCY_BUCKETS, LabelledChildren
from detection_api.app.problems import Problem

Dispatch = Callable[[], Response]


class MeteredFlask(Flask):
    """Flask whose whole dispatch (hooks, view, error handlers) runs inside ``metered``."""

    metered: Dispatch | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def full_dispatch_request(self) -> Response:
        if self.metered is None:
            return super().full_dispatch_request()
        return self.metered()

    def unmetered_dispatch(self) -> Response:
        return super().full_dispatch_request()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Flask asks ``inspect.iscoroutinefunction`` of every hook and view it calls, five times
        # a request; the answer for a function never changes, so it is asked once per function.
        try:
            known = self._sync.get(func)
        except TypeError:  # an unhashable callable object: asked every time, as Flask does
            return super().ensure_sync(func)
        if known is None:
            known = self._sync[func] = super().ensure_sync(func)
        return known


def _not_through_ingress(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded"):
            raise Problem(404, "not_found", "Not found", "no such path")
        return view(*args, **kwargs)

    return guarded


def install_request_metrics(app: MeteredFlask, registry: CollectorRegistry) -> PrometheusMetrics:
    exporter = PrometheusMetrics(
        app,
        path="/metrics",
        export_defaults=False,
        metrics_decorator=_not_through_ingress,
        registry=registry,
    )
    requests = Counter(
        "detection_api_requests",
        "HTTP requests by method, route template and status",
        ["method", "endpoint", "status"],
        registry=registry,
    )
    duration = Histogram(
        "detection_api_request_duration_seconds",
        "HTTP request duration by method and route template",
        ["method", "endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    durations, counts = LabelledChildren(duration), LabelledChildren(requests)
    dispatch = app.unmetered_dispatch

    def metered() -> Response:
        started = default_timer()
        status = "500"  # an exception escaped the error handlers: Flask answers 500
        try:
            response = dispatch()
            status = str(response.status_code)
            return response
        finally:
            req: Request = request._get_current_object()  # type: ignore[attr-defined]
            rule = req.url_rule  # (the proxy resolved once, not three times)
            method, endpoint = req.method, rule.rule if rule else "unmatched"
            durations(method, endpoint).observe(default_timer() - started)
            counts(method, endpoint, status).inc()

    app.metered = metered
    return exporter
