"""The core pipeline with the real geometry: payload -> geolocation -> CoT."""

from __future__ import annotations

import copy
import json
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymap3d
import pytest

from detection_api.core import (
    BATCH_MIN,
    CoreConfig,
    geolocation_as_dict,
    geolocations_as_dicts,
    process_detection,
    process_detections,
)
from detection_api.cot import DETAIL_ELEMENT
from detection_api.cot_types import DEFAULT_TYPE_MAP
from detection_api.geo.types import (
    ConfidenceFlag,
    GeolocationError,
    NoGroundIntersection,
    Terrain,
)
from detection_api.model import Detection, parse_detection
from detection_api.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 27, 2, 40, 16, 123_456, tzinfo=UTC)
RECORD = "5d41402abc4b2a76b9719d911017c592"


def example(name: str = "detection.json") -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def detection(**meta: Any) -> Detection:
    data = example()
    data["sensor_metadata"].update(meta)
    return parse_detection(data, now=NOW)


def run(det: Detection, config: CoreConfig | None = None, record_id: str = RECORD):
    return process_detection(
        det, config or CoreConfig(), record_id=record_id, detection_id="det-1", now=NOW
    )


def test_pipeline_result_is_consistent() -> None:
    result = run(detection())
    assert result.record_id == RECORD
    assert result.detection_id == "det-1"
    assert result.uid == f"detection-api.{RECORD}"
    assert result.cot_type == "a-u-G-E-V"
    assert result.generated_at == NOW
    root = ET.fromstring(result.cot_xml)
    assert root.get("uid") == result.uid
    assert root.get("type") == result.cot_type
    assert root.get("time") == "2026-11-27T02:40:16.123Z"
    assert root.get("start") == "2026-11-26T14:05:09.250Z"
    assert root.get("stale") == "2026-11-27T02:45:16.123Z"
    point = root.find("point")
    geo = result.geolocation
    assert point.get("lat") == f"{geo.lat_deg:.7f}"
    assert point.get("lon") == f"{geo.lon_deg:.7f}"
    assert float(point.get("hae")) == 177.0 == geo.hae_m
    assert float(point.get("ce")) == pytest.approx(geo.ce90_m / 2.1460, abs=0.005)
    assert float(point.get("le")) == pytest.approx(geo.le90_m / 1.6449, abs=0.005)
    mine = root.find(f"detail/{DETAIL_ELEMENT}")
    assert mine.get("id") == "det-1"
    assert mine.get("record") == RECORD
    assert mine.get("flag") == geo.flag.value


def test_the_hit_lies_along_the_documented_ray() -> None:
    """Independent check that the payload reaches the geometry as documented (README "The
    detection payload", camera frame): the direction from camera to hit, computed by pymap3d, is
    the formula's ray."""
    det = detection()
    meta = det.sensor_metadata
    geo = run(det).geolocation
    h, p, r = (math.radians(a) for a in (meta.heading, meta.pitch, meta.roll))
    forward = (math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), math.sin(p))
    right0 = (math.cos(h), -math.sin(h), 0.0)
    # forward x right: the image's down at zero roll (camera x right, y down, z forward).
    down0 = (
        forward[1] * right0[2] - forward[2] * right0[1],
        forward[2] * right0[0] - forward[0] * right0[2],
        forward[0] * right0[1] - forward[1] * right0[0],
    )
    # Roll turns right towards down about forward.
    right = tuple(math.cos(r) * a + math.sin(r) * b for a, b in zip(right0, down0, strict=True))
    down = tuple(-math.sin(r) * a + math.cos(r) * b for a, b in zip(right0, down0, strict=True))
    x, y = det.pixel
    u = (x - meta.image_width / 2) / meta.focal_length
    v = (y - meta.image_height / 2) / meta.focal_length
    ray = [f + u * a + v * b for f, a, b in zip(forward, right, down, strict=True)]
    norm = math.sqrt(sum(c * c for c in ray))
    camera_hae = meta.ground_elevation + meta.location_elevation
    e, n, up = pymap3d.geodetic2enu(
        geo.lat_deg, geo.lon_deg, geo.hae_m, meta.location_lat, meta.location_lon, camera_hae
    )
    distance = math.sqrt(e * e + n * n + up * up)
    assert distance == pytest.approx(geo.slant_range_m, abs=0.01)
    for expected, actual in zip(ray, (e, n, up), strict=True):
        assert actual / distance == pytest.approx(expected / norm, abs=1e-7)


def test_nadir_pixel_at_the_principal_point_is_below_the_camera() -> None:
    det = detection(pitch=-90.0, heading=0.0, roll=0.0)
    data = det.model_dump()
    data["pixel_x"], data["pixel_y"] = 960.0, 540.0
    data["timestamp"] = "2026-11-26T14:05:09Z"
    geo = run(parse_detection(data, now=NOW)).geolocation
    assert geo.slant_range_m == pytest.approx(120.0, abs=0.01)
    assert geo.ground_distance_m == pytest.approx(0.0, abs=0.01)
    assert geo.lat_deg == pytest.approx(51.2185312, abs=1e-7)
    assert geo.lon_deg == pytest.approx(-1.8052475, abs=1e-7)


def test_principal_point_from_the_payload_is_used() -> None:
    centred = run(detection()).geolocation
    shifted = run(detection(principal_x=1184.5, principal_y=742.0)).geolocation
    # The pixel now sits on the optical axis: pitch -35 deg from 120 m.
    assert shifted.ground_distance_m == pytest.approx(120.0 / math.tan(math.radians(35)), rel=1e-3)
    assert shifted.ground_distance_m != pytest.approx(centred.ground_distance_m, rel=1e-3)


def test_given_sigmas_drive_the_uncertainty() -> None:
    tight = run(detection(heading_sigma_deg=0.1, position_sigma_m=0.1)).geolocation
    loose = run(detection(heading_sigma_deg=5.0, position_sigma_m=10.0)).geolocation
    assert tight.ce90_m < loose.ce90_m


def test_thresholds_from_config_set_the_flag() -> None:
    det = detection()
    ce90 = run(det).geolocation.ce90_m
    assert run(det, CoreConfig(green_max_m=ce90 + 1)).geolocation.flag is ConfidenceFlag.GREEN
    yellow = CoreConfig(green_max_m=ce90 - 1, yellow_max_m=ce90 + 1)
    assert run(det, yellow).geolocation.flag is ConfidenceFlag.YELLOW
    red = CoreConfig(green_max_m=ce90 / 3, yellow_max_m=ce90 / 2)
    result = run(det, red)
    assert result.geolocation.flag is ConfidenceFlag.RED
    assert 'flag="RED"' in result.cot_xml


def test_above_horizon_is_an_error_with_its_reason() -> None:
    with pytest.raises(GeolocationError) as info:
        run(detection(pitch=10.0))
    assert info.value.reason is NoGroundIntersection.ABOVE_HORIZON


def test_beyond_max_range_is_an_error_with_its_reason() -> None:
    with pytest.raises(GeolocationError) as info:
        run(detection(), CoreConfig(max_range_m=50.0))
    assert info.value.reason is NoGroundIntersection.BEYOND_MAX_RANGE


def test_track_gives_a_stable_uid_across_detections() -> None:
    data = example("batch.json")[1]
    first = run(parse_detection(data, now=NOW), record_id="a" * 32)
    moved = copy.deepcopy(data)
    moved["pixel_x"] += 25
    second = run(parse_detection(moved, now=NOW), record_id="b" * 32)
    assert first.uid == second.uid == "detection-api.drone-7-gimbal.track.42"
    assert first.geolocation.lat_deg != second.geolocation.lat_deg


def test_stale_period_and_type_map_come_from_config() -> None:
    config = CoreConfig(stale_seconds=60, type_map={"vehicle": "a-u-G-E-V-C"})
    result = run(detection(), config)
    root = ET.fromstring(result.cot_xml)
    assert result.cot_type == root.get("type") == "a-u-G-E-V-C"
    assert root.get("stale") == "2026-11-27T02:41:16.123Z"


def test_image_digest_reaches_the_event() -> None:
    data = example()
    data["image_base64"] = "aGVsbG8="
    result = run(parse_detection(data, now=NOW))
    mine = ET.fromstring(result.cot_xml).find(f"detail/{DETAIL_ELEMENT}")
    assert mine.get("image_sha256") == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    assert "aGVsbG8=" not in result.cot_xml


def test_xml_hostile_class_survives_the_pipeline() -> None:
    data = example()
    data["object_class"] = 'car & <van> "x"'
    result = run(parse_detection(data, now=NOW))
    root = ET.fromstring(result.cot_xml)
    assert root.find(f"detail/{DETAIL_ELEMENT}").get("class") == 'car & <van> "x"'
    assert "& " not in result.cot_xml


def test_default_now_is_the_clock() -> None:
    before = datetime.now(UTC)
    result = process_detection(detection(), CoreConfig(), record_id=RECORD, detection_id="d")
    assert before <= result.generated_at <= datetime.now(UTC)


def test_config_from_settings() -> None:
    settings = Settings(
        cot_stale_seconds=120,
        cot_type_map='{"Forklift": "a-u-G-E-V-U"}',
        max_range_m=5_000,
        ce90_green_m=10,
        ce90_yellow_m=50,
        max_image_bytes=1024,
    )
    config = CoreConfig.from_settings(settings)
    assert config.stale_seconds == 120
    assert config.type_map["forklift"] == "a-u-G-E-V-U"
    assert config.type_map["vehicle"] == DEFAULT_TYPE_MAP["vehicle"]
    assert (config.max_range_m, config.green_max_m, config.yellow_max_m) == (5_000, 10, 50)
    assert config.max_image_bytes == 1024
    with pytest.raises(TypeError):
        config.type_map["car"] = "a-u-A"  # type: ignore[index]


def test_config_defaults_match_settings_defaults() -> None:
    assert CoreConfig.from_settings(Settings()) == CoreConfig()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cot_type_map": "{oops"}, "COT_TYPE_MAP"),
        ({"cot_type_map": '{"car": "not a type"}'}, "COT_TYPE_MAP"),
        ({"ce90_green_m": 50, "ce90_yellow_m": 10}, "CE90_YELLOW_M"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"(?i){message}"):
        CoreConfig.from_settings(Settings(**overrides))


def test_geolocation_as_dict_is_json_ready() -> None:
    geo = run(detection()).geolocation
    data = geolocation_as_dict(geo)
    assert set(data) == {
        "lat",
        "lon",
        "hae_m",
        "slant_range_m",
        "ground_distance_m",
        "ce90_m",
        "le90_m",
        "ce_m",
        "le_m",
        "flag",
        "covariance_en_m2",
        "terrain",
    }
    assert data["terrain"] == "flat"
    assert json.loads(json.dumps(data)) == data
    assert data["lat"] == pytest.approx(geo.lat_deg, abs=1e-9)
    assert data["ce90_m"] == pytest.approx(geo.ce90_m, abs=1e-3)
    assert data["flag"] == geo.flag.value
    assert data["covariance_en_m2"][0] == pytest.approx(geo.covariance_en_m2[0], rel=1e-5)


@pytest.mark.parametrize("count", [1, BATCH_MIN - 1, BATCH_MIN, 3 * BATCH_MIN])
def test_geolocations_as_dicts_equal_one_by_one(count: int) -> None:
    """Below ``BATCH_MIN`` one by one, from it on rounded over arrays: the same dicts, to the
    bit, terrain fields included."""
    geos = []
    for i in range(count):
        det = detection(
            pitch=-30.0 - i * 0.37, heading=(i * 47.3) % 360, location_elevation=50.0 + i
        )
        geo = run(det).geolocation
        if i % 3 == 1:
            geo = geo._replace(dem="dem.tif", terrain=Terrain.DEM)
        elif i % 3 == 2:
            geo = geo._replace(terrain_note="outside_dem")
        geos.append(geo)
    batch = geolocations_as_dicts(geos)
    one_by_one = [geolocation_as_dict(geo) for geo in geos]
    assert json.dumps(batch) == json.dumps(one_by_one)  # repr of each double, key order too
    assert len({d["lat"] for d in batch}) == count


def test_geolocation_as_dict_keeps_tiny_variances() -> None:
    geo = run(
        detection(
            position_sigma_m=0.001,
            altitude_sigma_m=0.001,
            heading_sigma_deg=0.0001,
            pitch_sigma_deg=0.0001,
            roll_sigma_deg=0.0001,
            pixel_sigma=0.001,
        )
    ).geolocation
    variance_e = geolocation_as_dict(geo)["covariance_en_m2"][0]
    assert 0 < variance_e < 1e-3
    assert variance_e == pytest.approx(geo.covariance_en_m2[0], rel=1e-5)


def test_processing_is_repeatable() -> None:
    det = detection()
    assert run(det) == run(det)
    later = process_detection(
        det, CoreConfig(), record_id=RECORD, detection_id="det-1", now=NOW + timedelta(seconds=1)
    )
    assert later.geolocation == run(det).geolocation


# --- a request's detections in one pass --------------------------------------------------------


def _varied_detections(count: int) -> list[Detection]:
    detections = []
    for i in range(count):
        data = example()
        data.update(pixel_x=100.0 + (i * 37) % 1700, pixel_y=600.0 + (i * 13) % 400)
        data["detection_id"] = f"d-{i}"
        if i % 3 == 0:
            data["track_id"] = i
        data["sensor_metadata"].update(heading=(i * 29) % 360, roll=(i % 7) - 3.0)
        detections.append(parse_detection(data, now=NOW))
    return detections


@pytest.mark.parametrize("count", [1, BATCH_MIN - 1, BATCH_MIN, 3 * BATCH_MIN])
def test_processing_a_list_gives_what_each_detection_gives_alone(count: int) -> None:
    detections = _varied_detections(count)
    # one looks at the sky: its error takes its place, the others are still processed
    detections[-1] = detection(pitch=20.0)
    record_ids = [f"{i:032x}" for i in range(count)]
    detection_ids = [f"det-{i}" for i in range(count)]
    producers = [None if i % 2 else f"producer-{i}" for i in range(count)]
    results = process_detections(
        detections,
        CoreConfig(),
        record_ids=record_ids,
        detection_ids=detection_ids,
        producers=producers,
        now=NOW,
    )
    assert len(results) == count
    for i, (det, result) in enumerate(zip(detections, results, strict=True)):
        try:
            alone = process_detection(
                det,
                CoreConfig(),
                record_id=record_ids[i],
                detection_id=detection_ids[i],
                now=NOW,
                producer=producers[i],
            )
        except GeolocationError as exc:
            assert isinstance(result, GeolocationError)
            assert result.reason == exc.reason == NoGroundIntersection.ABOVE_HORIZON
            continue
        assert not isinstance(result, GeolocationError)
        assert (result.record_id, result.detection_id, result.uid, result.cot_type) == (
            alone.record_id,
            alone.detection_id,
            alone.uid,
            alone.cot_type,
        )
        assert result.geolocation.lat_deg == pytest.approx(alone.geolocation.lat_deg, abs=1e-9)
        assert result.geolocation.lon_deg == pytest.approx(alone.geolocation.lon_deg, abs=1e-9)
        assert result.geolocation.ce90_m == pytest.approx(alone.geolocation.ce90_m, abs=1e-6)
        assert result.geolocation.flag == alone.geolocation.flag
        # the same event, but for a last-digit rounding of numbers equal to 1e-9
        assert re.sub(r"\d+\.\d+", "#", result.cot_xml) == re.sub(r"\d+\.\d+", "#", alone.cot_xml)
        assert result.generated_at == alone.generated_at == NOW


def test_processing_a_list_with_non_ground_references_or_a_dem_falls_back_per_detection() -> None:
    detections = _varied_detections(BATCH_MIN)
    data = example()
    data["sensor_metadata"].update(altitude_reference="ellipsoid", location_elevation=297.0)
    detections[0] = parse_detection(data, now=NOW)
    results = process_detections(
        detections,
        CoreConfig(),
        record_ids=[RECORD] * BATCH_MIN,
        detection_ids=["d"] * BATCH_MIN,
        now=NOW,
    )
    alone = run(detections[0])
    first = results[0]
    assert not isinstance(first, GeolocationError)
    assert (first.geolocation.lat_deg, first.geolocation.lon_deg) == (
        alone.geolocation.lat_deg,
        alone.geolocation.lon_deg,
    )
