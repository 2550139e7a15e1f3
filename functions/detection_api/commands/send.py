"""``detection-api send FILE``: a CloudEvents producer for users and scripts.

Each detection in FILE becomes an ``org.detectionapi.detection.created`` event, sent in binary or
structured mode one by one, or all at once as a batch. The event id is the detection's
``detection_id`` when it has one (so re-sending the same file is idempotent), else a new UUID.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from detection_api.app.cloudevents_io import BATCH_MEDIA_TYPE
from detection_api.commands.io import read_json_input
from detection_api.settings import DETECTION_CREATED_TYPE


def _event(detection: Any, source: str) -> CloudEvent:
    event_id = None
    if isinstance(detection, dict) and isinstance(detection.get("detection_id"), str):
        event_id = detection["detection_id"]
    return CloudEvent(
        {
            "type": DETECTION_CREATED_TYPE,
            "source": source,
            "id": event_id or str(uuid.uuid4()),
            "datacontenttype": "application/json",
        },
        detection,
    )


def _post(url: str, headers: dict[str, str], body: bytes, token: str | None) -> tuple[int, str]:
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise OSError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (http/https only, checked above)
    try:
        # The operator's own --url, http/https only (checked above).
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 # nosec B310 # see above
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    try:
        detections = read_json_input(args.file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = detections if isinstance(detections, list) else [detections]
    url = args.url or f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/"
    token = args.token or os.environ.get("DETECTION_API_TOKEN")
    events = [_event(item, args.source) for item in items]

    requests: list[tuple[dict[str, str], bytes]]
    if args.mode == "batch":
        body = json.dumps([json.loads(to_structured(e)[1]) for e in events]).encode()
        requests = [({"Content-Type": BATCH_MEDIA_TYPE}, body)]
    elif args.mode == "structured":
        requests = [to_structured(e) for e in events]
    else:
        requests = [to_binary(e) for e in events]

    failures = 0
    for headers, body in requests:
        try:
            status, text = _post(url, dict(headers), body, token)
        except OSError as exc:
            print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
            return 1
        ok = 200 <= status < 300
        failures += not ok
        print(f"{status} {text}" if text else str(status), file=sys.stdout if ok else sys.stderr)
    return 0 if failures == 0 else 1
