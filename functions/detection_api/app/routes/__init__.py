"""One blueprint per resource of the HTTP surface (README "HTTP API"):

- ``cloudevents``: ``POST /`` (CloudEvents 1.0, binary, structured, batch)
- ``detections``: ``POST /api/v1/detections`` (v1 REST)
- ``records``: ``GET /api/v1/detections/<id>`` and ``.../events`` (the record and its audit trail)
- ``dead_letters``: ``POST /dead-letters`` (the Broker's dead-letter sink)
- ``probes``: ``GET /health``, ``GET /ready``
- ``docs``: ``GET /openapi.json``

``/metrics`` is served by prometheus-flask-exporter (``app/request_metrics.py``).
"""

from __future__ import annotations

from flask import Blueprint

from detection_api.app.routes import cloudevents, dead_letters, detections, docs, probes, records

BLUEPRINTS: tuple[Blueprint, ...] = (
    cloudevents.blueprint,
    detections.blueprint,
    records.blueprint,
    dead_letters.blueprint,
    probes.blueprint,
    docs.blueprint,
)
