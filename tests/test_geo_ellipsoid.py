"""WGS84 ellipsoid helpers against pymap3d (an independent implementation) and exact cases."""

from __future__ import annotations

import math
import random

import pymap3d
import pymap3d.vincenty
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detection_api.geo.ellipsoid import (
    ECCENTRICITY_SQUARED,
    SEMI_MAJOR_AXIS_M,
    SEMI_MINOR_AXIS_M,
    dot,
    ecef_to_enu,
    ecef_to_geodetic,
    enu_frame,
    enu_to_ecef,
    geodesic_distance_m,
    geodetic_to_ecef,
    meridian_radius_m,
    normalize_longitude_deg,
    prime_vertical_radius_m,
)

EDGE_LATITUDES = (-90.0, -89.9999999, -45.0, -1e-9, 0.0, 1e-9, 45.0, 89.9999999, 90.0)


def _random_points(count: int, seed: int) -> list[tuple[float, float, float]]:
    rng = random.Random(seed)
    points = [
        (lat, rng.uniform(-180.0, 180.0), rng.uniform(-500.0, 20_000.0)) for lat in EDGE_LATITUDES
    ]
    points += [
        (rng.uniform(-90.0, 90.0), rng.uniform(-180.0, 180.0), rng.uniform(-500.0, 20_000.0))
        for _ in range(count)
    ]
    return points


def test_wgs84_constants() -> None:
    assert SEMI_MAJOR_AXIS_M == 6_378_137.0
    assert abs(SEMI_MINOR_AXIS_M - 6_356_752.314245) < 1e-6
    assert abs(ECCENTRICITY_SQUARED - 6.69437999014e-3) < 1e-14


def test_geodetic_to_ecef_matches_pymap3d() -> None:
    for lat, lon, h in _random_points(2000, seed=1):
        ours = geodetic_to_ecef(math.radians(lat), math.radians(lon), h)
        reference = pymap3d.geodetic2ecef(lat, lon, h)
        assert math.dist(ours, reference) < 1e-6


def test_ecef_to_geodetic_round_trip_and_matches_pymap3d() -> None:
    worst_height = worst_lat = 0.0
    for lat, lon, h in _random_points(5000, seed=2):
        x, y, z = pymap3d.geodetic2ecef(lat, lon, h)
        lat_r, lon_r, h_back = ecef_to_geodetic(x, y, z)
        worst_height = max(worst_height, abs(h_back - h))
        worst_lat = max(worst_lat, abs(math.degrees(lat_r) - lat))
        if abs(lat) < 90.0:  # longitude is arbitrary at the poles
            lon_error = abs(normalize_longitude_deg(math.degrees(lon_r) - lon))
            assert lon_error < 1e-12
        ref_lat, _, ref_h = pymap3d.ecef2geodetic(x, y, z)
        assert abs(math.degrees(lat_r) - ref_lat) < 1e-11
        assert abs(h_back - ref_h) < 1e-6
    # closed form: round-off only (1e-11 deg is about 1 um)
    assert worst_height < 1e-6
    assert worst_lat < 1e-11


def test_ecef_to_geodetic_on_the_axes() -> None:
    assert ecef_to_geodetic(SEMI_MAJOR_AXIS_M, 0.0, 0.0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    lat, _, h = ecef_to_geodetic(0.0, 0.0, SEMI_MINOR_AXIS_M + 1234.5)
    assert lat == pytest.approx(math.pi / 2, abs=1e-15)
    assert h == pytest.approx(1234.5, abs=1e-8)
    lat, _, h = ecef_to_geodetic(0.0, 0.0, -SEMI_MINOR_AXIS_M + 10.0)
    assert lat == pytest.approx(-math.pi / 2, abs=1e-15)
    assert h == pytest.approx(-10.0, abs=1e-8)


@given(
    lat=st.floats(min_value=-90.0, max_value=90.0),
    lon=st.floats(min_value=-360.0, max_value=360.0),
)
def test_enu_frame_is_orthonormal_right_handed_and_matches_pymap3d(lat: float, lon: float) -> None:
    frame = enu_frame(math.radians(lat), math.radians(lon))
    east, north, up = frame
    for a in frame:
        assert dot(a, a) == pytest.approx(1.0, abs=1e-14)
    assert dot(east, north) == pytest.approx(0.0, abs=1e-14)
    assert dot(north, up) == pytest.approx(0.0, abs=1e-14)
    cross = (
        east[1] * north[2] - east[2] * north[1],
        east[2] * north[0] - east[0] * north[2],
        east[0] * north[1] - east[1] * north[0],
    )
    assert cross == pytest.approx(up, abs=1e-14)
    vector = (0.3, -1.7, 2.2)
    reference = pymap3d.enu2uvw(*vector, lat, lon)
    assert enu_to_ecef(frame, vector) == pytest.approx(reference, abs=1e-12)
    assert ecef_to_enu(frame, enu_to_ecef(frame, vector)) == pytest.approx(vector, abs=1e-12)


def test_radii_of_curvature() -> None:
    a, e2 = SEMI_MAJOR_AXIS_M, ECCENTRICITY_SQUARED
    assert prime_vertical_radius_m(0.0) == pytest.approx(a, abs=1e-9)
    assert meridian_radius_m(0.0) == pytest.approx(a * (1 - e2), abs=1e-8)
    # at the pole both equal a^2 / b
    assert prime_vertical_radius_m(math.pi / 2) == pytest.approx(
        a * a / SEMI_MINOR_AXIS_M, abs=1e-8
    )
    assert meridian_radius_m(math.pi / 2) == pytest.approx(a * a / SEMI_MINOR_AXIS_M, abs=1e-8)
    # definition: the ECEF point moves by (M + h) d(lat) and (N + h) cos(lat) d(lon)
    lat, lon, h, step = math.radians(52.0), math.radians(13.0), 250.0, 1e-7
    north_shift = math.dist(
        geodetic_to_ecef(lat + step, lon, h), geodetic_to_ecef(lat - step, lon, h)
    )
    east_shift = math.dist(
        geodetic_to_ecef(lat, lon + step, h), geodetic_to_ecef(lat, lon - step, h)
    )
    assert north_shift / (2 * step) == pytest.approx(meridian_radius_m(lat) + h, rel=1e-8)
    assert east_shift / (2 * step) == pytest.approx(
        (prime_vertical_radius_m(lat) + h) * math.cos(lat), rel=1e-8
    )


def test_geodesic_along_the_equator_is_the_arc() -> None:
    # the equator is a geodesic: its length is a * delta_lon exactly
    for delta_deg in (1e-6, 0.001, 0.1, 2.0):
        expected = SEMI_MAJOR_AXIS_M * math.radians(delta_deg)
        lon0 = math.radians(10.0)
        got = geodesic_distance_m(0.0, lon0, 0.0, lon0 + math.radians(delta_deg))
        assert got == pytest.approx(expected, abs=1e-7)


def _meridian_arc_m(lat1: float, lat2: float, intervals: int = 2000) -> float:
    """Integral of M(lat) d(lat) by Simpson's rule: an independent meridian distance."""
    a, e2 = SEMI_MAJOR_AXIS_M, ECCENTRICITY_SQUARED
    step = (lat2 - lat1) / intervals
    total = 0.0
    for i in range(intervals + 1):
        lat = lat1 + i * step
        weight = 1 if i in (0, intervals) else (4 if i % 2 else 2)
        total += weight * a * (1 - e2) / (1 - e2 * math.sin(lat) ** 2) ** 1.5
    return total * step / 3


@pytest.mark.parametrize(
    ("lat1", "lat2"), [(0.0, 0.2), (45.0, 45.18), (-33.0, -33.01), (89.9, 90.0)]
)
def test_geodesic_along_a_meridian_is_the_meridian_arc(lat1: float, lat2: float) -> None:
    lat1_r, lat2_r = math.radians(lat1), math.radians(lat2)
    lon = math.radians(-70.0)
    got = geodesic_distance_m(lat1_r, lon, lat2_r, lon)
    assert got == pytest.approx(abs(_meridian_arc_m(lat1_r, lat2_r)), abs=1e-6)


def test_geodesic_distance_matches_pymap3d_vincenty_and_is_symmetric() -> None:
    rng = random.Random(3)
    for _ in range(300):
        lat1 = rng.uniform(-89.5, 89.5)
        lon1 = rng.uniform(-180.0, 180.0)
        lat2 = lat1 + rng.uniform(-0.2, 0.2)
        lon2 = lon1 + rng.uniform(-0.2, 0.2)
        reference, _ = pymap3d.vincenty.vdist(lat1, lon1, lat2, lon2)
        args = [math.radians(v) for v in (lat1, lon1, lat2, lon2)]
        got = geodesic_distance_m(*args)
        assert got == pytest.approx(float(reference), abs=1e-4)
        assert geodesic_distance_m(args[2], args[3], args[0], args[1]) == pytest.approx(
            got, abs=1e-9
        )


def test_geodesic_distance_across_the_antimeridian_and_at_poles() -> None:
    east = geodesic_distance_m(0.0, math.radians(179.9995), 0.0, math.radians(-179.9995))
    assert east == pytest.approx(SEMI_MAJOR_AXIS_M * math.radians(0.001), abs=1e-7)
    assert geodesic_distance_m(0.3, 1.0, 0.3, 1.0) == 0.0
    # from the pole, any longitude: the meridian arc
    pole = math.pi / 2
    got = geodesic_distance_m(pole, 0.0, math.radians(89.9), math.radians(123.0))
    assert got == pytest.approx(_meridian_arc_m(math.radians(89.9), pole), abs=1e-6)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_normalize_longitude_lands_in_half_open_range(lon: float) -> None:
    wrapped = normalize_longitude_deg(lon)
    assert -180.0 <= wrapped < 180.0
    assert math.remainder(wrapped - lon, 360.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("lon", "expected"),
    [(180.0, -180.0), (-180.0, -180.0), (540.0, -180.0), (179.5, 179.5), (-190.0, 170.0)],
)
def test_normalize_longitude_exact_values(lon: float, expected: float) -> None:
    assert normalize_longitude_deg(lon) == expected


def test_normalize_longitude_rounding_edge() -> None:
    # just below -180, (x + 180) % 360 rounds up to exactly 360.0: the result must still be < 180
    just_below = math.nextafter(-180.0, -math.inf)
    assert (just_below + 180.0) % 360.0 == 360.0  # the float behaviour the guard exists for
    assert normalize_longitude_deg(just_below) == -180.0
