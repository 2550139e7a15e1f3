"""The function (as the Procfile runs it) with DEM_PATH: the answer, the stored record and its CoT
say which ground the hit lies on, on the DEM and outside it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_client import post_json, request
from product import start_function

from support.dem_files import ARC_SECOND, write_dem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "detection.json").read_text())
CAM_LAT, CAM_LON = 51.2185312, -1.8052475


def slope(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return 180.0 + 0.1 * 111_000.0 * (lat - CAM_LAT) + 0.0 * lon


@pytest.fixture
def function_with_dem(redis_server, start_process, tmp_path: Path) -> str:
    dem = write_dem(
        tmp_path / "plain.tif",
        slope,
        north_deg=CAM_LAT + 0.01,
        west_deg=CAM_LON - 0.01,
        rows=73,
        cols=73,
        spacing_deg=ARC_SECOND,
    )
    return start_function(
        start_process,
        {
            "REDIS_URL": redis_server.url,
            "AUTH_DISABLED": "true",
            "DEM_PATH": str(dem),
            "DEM_VERTICAL_DATUM": "ellipsoid",
        },
    )


def detection(**meta: Any) -> dict[str, Any]:
    det = copy.deepcopy(EXAMPLE)
    det.pop("detection_id", None)
    det["sensor_metadata"].update(meta)
    return det


def test_the_record_and_cot_carry_the_terrain(function_with_dem: str) -> None:
    reply = post_json(
        function_with_dem, "/api/v1/detections", detection(), Accept="application/json"
    )
    assert reply.status == 201, reply.body
    geolocation = reply.json["geolocation"]
    assert geolocation["terrain"] == "dem"
    assert geolocation["dem"] == "plain.tif"
    record = request(function_with_dem, "GET", reply.header("location")).json
    assert record["geolocation"] == geolocation
    assert 'terrain="dem"' in record["cot"] and 'dem="plain.tif"' in record["cot"]
    # the hit lies on the slope: its height is the slope's there, not ground_elevation (177)
    expected = float(slope(np.array(geolocation["lat"]), np.array(geolocation["lon"])))
    assert geolocation["hae_m"] == pytest.approx(expected, abs=0.01)


def test_outside_the_dem_the_flat_ground_is_used_and_said(function_with_dem: str) -> None:
    reply = post_json(
        function_with_dem,
        "/api/v1/detections",
        detection(location_lat=CAM_LAT + 0.5),
        Accept="application/json",
    )
    assert reply.status == 201, reply.body
    geolocation = reply.json["geolocation"]
    assert geolocation["terrain"] == "flat"
    assert geolocation["terrain_note"] == "outside_dem"
    assert geolocation["hae_m"] == 177.0
    record = request(function_with_dem, "GET", reply.header("location")).json
    assert 'terrain="flat"' in record["cot"] and 'terrain_note="outside_dem"' in record["cot"]
