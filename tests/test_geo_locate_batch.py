"""locate_many(): the vectorised batch gives, element for element, what locate() gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detection_api.geo.locate import DEFAULT_SIGMAS, locate
from detection_api.geo.locate_batch import (
    ROW_FIELDS,
    LocateInput,
    item_of,
    locate_many,
    locate_vectorised,
    row_of,
)
from detection_api.geo.types import (
    CameraPose,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
    NoGroundIntersection,
)
from detection_api.model import parse_detection
from test_geo_locate import assert_sound, domain_intrinsics, domain_poses, domain_sigmas

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "detection.json"
CAMERA = Intrinsics(focal_px=1000.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
DEGREES = 1e-9  # ~0.1 mm on the ground
METRES = 1e-6


def item(
    lat: float = 47.0,
    lon: float = 8.0,
    height: float = 100.0,
    ground: float = 400.0,
    heading: float = 30.0,
    pitch: float = -30.0,
    roll: float = 2.0,
    px: float = 1200.0,
    py: float = 700.0,
    sigmas: InputSigmas = DEFAULT_SIGMAS,
) -> LocateInput:
    return (CameraPose(lat, lon, height, ground, heading, pitch, roll), CAMERA, px, py, sigmas)


def assert_same(batch: Geolocation | GeolocationError, scalar: Geolocation) -> None:
    assert isinstance(batch, Geolocation)
    assert batch.lat_deg == pytest.approx(scalar.lat_deg, abs=DEGREES)
    assert batch.lon_deg == pytest.approx(scalar.lon_deg, abs=DEGREES)
    assert batch.hae_m == scalar.hae_m
    for name in ("slant_range_m", "ground_distance_m", "ce90_m", "le90_m", "ce_m", "le_m"):
        assert getattr(batch, name) == pytest.approx(getattr(scalar, name), rel=1e-9, abs=METRES)
    for b, s in zip(batch.covariance_en_m2, scalar.covariance_en_m2, strict=True):
        assert b == pytest.approx(s, rel=1e-9, abs=METRES)
    assert batch.flag == scalar.flag
    assert (batch.terrain, batch.dem, batch.terrain_note) == (
        scalar.terrain,
        scalar.dem,
        scalar.terrain_note,
    )


def scalar_outcome(entry: LocateInput, **limits: float) -> Geolocation | GeolocationError:
    try:
        return locate(*entry, **limits)
    except GeolocationError as exc:
        return exc


def assert_batch_is_scalar(entries: list[LocateInput], **limits: float) -> None:
    for batch, entry in zip(locate_many(entries, **limits), entries, strict=True):
        scalar = scalar_outcome(entry, **limits)
        if isinstance(scalar, GeolocationError):
            assert isinstance(batch, GeolocationError)
            assert batch.reason == scalar.reason
        else:
            assert_same(batch, scalar)


VARIED = [
    item(),
    item(lat=0.0, lon=0.0, heading=90.0, pitch=-45.0, roll=0.0, px=960.0, py=540.0),
    item(lat=-33.9, lon=151.2, height=3000.0, ground=-50.0, heading=359.9, pitch=-5.0),
    item(lat=64.1, lon=-21.9, height=30.0, heading=200.0, pitch=-89.9, roll=-30.0, px=0.0),
    item(lat=89.99, lon=179.9999, height=500.0, heading=10.0, pitch=-60.0, py=1080.0),
    item(lon=-179.99999, heading=270.0, pitch=-20.0),  # the hit crosses the antimeridian
    item(sigmas=InputSigmas(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),  # no error at all: ce90 = 0
    item(sigmas=InputSigmas(100.0, 50.0, 10.0, 5.0, 5.0, 30.0)),  # RED
    item(height=0.01, pitch=-89.0),  # the lowest camera the model accepts
]


def test_varied_geometry_gives_the_scalar_results() -> None:
    assert_batch_is_scalar(VARIED * 3)


def test_the_vectorised_path_settles_ordinary_detections_itself() -> None:
    # Guards against a batch that silently hands everything to the scalar path.
    settled = locate_vectorised([row_of(entry) for entry in VARIED])
    assert all(result is not None for result in settled)
    for result, entry in zip(settled, VARIED, strict=True):
        assert result is not None
        assert_same(result, locate(*entry))


def test_misses_get_the_scalar_error_and_the_rest_still_their_hit() -> None:
    centre = {"px": CAMERA.cx_px, "py": CAMERA.cy_px}
    entries = [
        item(),
        item(pitch=10.0, **centre),  # above the horizon
        # from 1000 m the sea horizon is ~1.01 deg down: -0.9 passes over it, -1.1 hits ~100 km away
        item(lat=0.0, height=1000.0, pitch=-0.9, heading=90.0, **centre),
        item(lat=0.0, height=1000.0, pitch=-1.1, heading=90.0, **centre),
        item(height=300.0, pitch=-1.0, **centre),  # ~18.8 km: beyond a 10 km limit
        item(height=0.0),  # camera on the ground
        item(height=-5.0),
        item(pitch=-60.0, **centre),
    ]
    for max_range_m, far_hit in ((10_000.0, NoGroundIntersection.BEYOND_MAX_RANGE), (1e7, None)):
        results = locate_many(entries, max_range_m=max_range_m)
        reasons = [r.reason if isinstance(r, GeolocationError) else None for r in results]
        assert reasons == [
            None,
            NoGroundIntersection.ABOVE_HORIZON,
            NoGroundIntersection.ABOVE_HORIZON,
            far_hit,
            far_hit,
            NoGroundIntersection.CAMERA_BELOW_GROUND,
            NoGroundIntersection.CAMERA_BELOW_GROUND,
            None,
        ]
        assert_batch_is_scalar(entries, max_range_m=max_range_m)


def test_flag_cut_offs_and_range_limit_are_passed_through() -> None:
    limits = {"max_range_m": 5_000.0, "green_max_m": 5.0, "yellow_max_m": 10.0}
    assert_batch_is_scalar(VARIED, **limits)


def test_invalid_numbers_raise_the_scalar_value_error() -> None:
    with pytest.raises(ValueError, match="non-finite") as batch_error:
        locate_many([item(), item(lat=math.nan)])
    with pytest.raises(ValueError, match="non-finite") as scalar_error:
        locate(*item(lat=math.nan))
    assert str(batch_error.value) == str(scalar_error.value)
    with pytest.raises(ValueError, match="sigmas"):
        locate_many([item(sigmas=InputSigmas(-1.0, 0.0, 0.0, 0.0, 0.0, 0.0))])


def test_empty_batch() -> None:
    assert locate_many([]) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.builds(
            item,
            lat=st.floats(-89.0, 89.0),
            lon=st.floats(-180.0, 180.0),
            height=st.floats(0.01, 5000.0),
            ground=st.floats(-400.0, 5000.0),
            heading=st.floats(0.0, 360.0, exclude_max=True),
            pitch=st.floats(-90.0, 10.0),
            roll=st.floats(-60.0, 60.0),
            px=st.floats(0.0, CAMERA.width_px),
            py=st.floats(0.0, CAMERA.height_px),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_random_batches_give_the_scalar_results(entries: list[LocateInput]) -> None:
    assert_batch_is_scalar(entries)


def test_rows_carry_every_input_in_their_documented_order() -> None:
    entry = item(
        lat=1.0, lon=2.0, height=3.0, ground=4.0, heading=5.0, pitch=-6.0, roll=7.0, px=8.0, py=9.0
    )
    row = row_of(entry)
    assert len(row) == len(ROW_FIELDS)
    assert dict(zip(ROW_FIELDS, row, strict=True)) == {
        "lat_deg": 1.0,
        "lon_deg": 2.0,
        "height_above_ground_m": 3.0,
        "ground_hae_m": 4.0,
        "heading_deg": 5.0,
        "pitch_deg": -6.0,
        "roll_deg": 7.0,
        "focal_px": CAMERA.focal_px,
        "width_px": CAMERA.width_px,
        "height_px": CAMERA.height_px,
        "cx_px": CAMERA.cx_px,
        "cy_px": CAMERA.cy_px,
        "pixel_x": 8.0,
        "pixel_y": 9.0,
        "position_sigma_m": DEFAULT_SIGMAS.position_m,
        "altitude_sigma_m": DEFAULT_SIGMAS.altitude_m,
        "heading_sigma_deg": DEFAULT_SIGMAS.heading_deg,
        "pitch_sigma_deg": DEFAULT_SIGMAS.pitch_deg,
        "roll_sigma_deg": DEFAULT_SIGMAS.roll_deg,
        "pixel_sigma": DEFAULT_SIGMAS.pixel,
    }
    assert item_of(row) == entry


def test_a_detections_row_is_the_row_of_its_geometry_inputs() -> None:
    payload = json.loads(EXAMPLE.read_text())
    given = parse_detection(payload)
    payload["sensor_metadata"] = {
        k: v for k, v in payload["sensor_metadata"].items() if not k.endswith("sigma_m")
    } | {"principal_x": 900.5, "principal_y": 500.25}
    payload.pop("pixel_x")
    payload.pop("pixel_y")
    defaults = parse_detection(payload)  # bbox bottom-centre, principal point, default sigmas
    for det in (given, defaults):
        assert det.geometry_row() == row_of(det.geometry_inputs())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            domain_poses,
            domain_intrinsics,
            st.floats(-1e5, 1e5),
            st.floats(-1e5, 1e5),
            domain_sigmas,
        ),
        min_size=1,
        max_size=12,
    ),
    st.floats(1e-3, 1e300),
)
def test_hostile_numbers_inside_the_domain_give_the_scalar_outcome(
    entries: list[LocateInput], max_range_m: float
) -> None:
    # Anywhere in locate()'s numeric domain (grazing rays, 10,000 km high cameras, huge sigmas):
    # the same refusal, or a sound answer within round-off of the scalar one.
    for batch, entry in zip(locate_many(entries, max_range_m=max_range_m), entries, strict=True):
        scalar = scalar_outcome(entry, max_range_m=max_range_m)
        if isinstance(scalar, GeolocationError):
            assert isinstance(batch, GeolocationError)
            assert batch.reason == scalar.reason
            continue
        assert isinstance(batch, Geolocation)
        assert_sound(batch)
        assert batch.lat_deg == pytest.approx(scalar.lat_deg, abs=1e-7)
        assert math.remainder(batch.lon_deg - scalar.lon_deg, 360.0) == pytest.approx(0, abs=1e-7)
        assert batch.slant_range_m == pytest.approx(scalar.slant_range_m, rel=1e-6, abs=1e-6)
        assert batch.ce90_m == pytest.approx(scalar.ce90_m, rel=1e-6, abs=1e-6)
