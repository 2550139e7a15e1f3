"""A REST list long enough for the batch path (core.BATCH_MIN), through the function and Redis.

Each detection's answer and stored record must be what the core gives for that detection alone,
and one detection without a ground hit must still reject the whole request, naming its index.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from http_client import post_json, request
from product import start_function

from detection_api.core import BATCH_MIN, CoreConfig, process_detection
from detection_api.local.ports import free_port
from detection_api.model import parse_detection

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
COUNT = BATCH_MIN + 5


@pytest.fixture
def function_url(redis_server, start_process) -> str:
    return start_function(
        start_process,
        {"REDIS_URL": redis_server.url, "AUTH_DISABLED": "true"},
        name=f"function-batch-{free_port()}",
    )


def detections() -> list[dict[str, Any]]:
    out = []
    for i in range(COUNT):
        det = copy.deepcopy(EXAMPLE)
        det.update(detection_id=f"batch-{i}", pixel_x=100.0 + 61.0 * i, pixel_y=600.0 + 17.0 * i)
        det["sensor_metadata"]["heading"] = (i * 29) % 360
        out.append(det)
    return out


def test_a_long_list_answers_what_each_detection_gives_alone(function_url, redis_server):
    sent = detections()
    reply = post_json(function_url, "/api/v1/detections", sent, Accept="application/json")
    assert reply.status == 201, reply.body
    body = reply.json
    assert [o["detection_id"] for o in body] == [d["detection_id"] for d in sent]
    now = datetime.now(UTC)
    for outcome, payload in zip(body, sent, strict=True):
        alone = process_detection(
            parse_detection(payload), CoreConfig(), record_id="r", detection_id="d", now=now
        ).geolocation
        geolocation = outcome["geolocation"]
        assert geolocation["lat"] == pytest.approx(alone.lat_deg, abs=2e-9)
        assert geolocation["lon"] == pytest.approx(alone.lon_deg, abs=2e-9)
        assert geolocation["ce90_m"] == pytest.approx(alone.ce90_m, abs=1.5e-3)
        assert geolocation["flag"] == alone.flag.value
        record = request(function_url, "GET", f"/api/v1/detections/{outcome['id']}").json
        assert record["geolocation"] == geolocation
        assert f'lat="{alone.lat_deg:.7f}"'[:-2] in record["cot"]  # (last digit may round)


def test_one_miss_in_a_long_list_rejects_it_and_stores_nothing(function_url, redis_server):
    sent = detections()
    sent[-1]["sensor_metadata"]["pitch"] = 20.0  # looks at the sky
    reply = post_json(function_url, "/api/v1/detections", sent, Accept="application/json")
    assert reply.status == 422, reply.body
    problem = reply.json
    assert [e["path"] for e in problem["errors"]] == [f"[{COUNT - 1}].sensor_metadata"]
    assert problem["errors"][0]["reason"] == "ray_above_horizon"
    assert not redis_server.client().keys("detection:record:*")
