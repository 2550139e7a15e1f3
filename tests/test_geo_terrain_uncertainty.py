"""ce90 on sloped terrain: analytic columns vs finite differences, and Monte-Carlo calibration.

Each draw perturbs the camera inputs and the DEM itself (a vertical offset with sigma DEM_SIGMA_M,
a horizontal shift with sigma spacing / sqrt(12) per axis), builds the perturbed DEM's posts and
re-solves exactly with the ray march. The fraction of hits inside the nominal ce90 must be 89-91%.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from detection_api.geo.ellipsoid import (
    enu_frame,
    geodetic_to_ecef,
    meridian_radius_m,
    prime_vertical_radius_m,
)
from detection_api.geo.heightgrid import GridExtent, HeightGrid, HeightMosaic
from detection_api.geo.terrain_locate import locate_on_terrain
from detection_api.geo.types import CameraPose, Geolocation, InputSigmas, Intrinsics
from detection_api.geo.uncertainty import DEFAULT_SIGMAS, input_sigma_vector

CAMERA = Intrinsics(focal_px=1400.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
SPACING = 1.0 / 3600.0  # 1" posts, as SRTM / GLO-30
LAT0, LON0 = 46.0, 8.0
ROWS = COLS = 141  # +-2.1 km around the camera: the hits are ~1 km away
DEM_SIGMA_M = 5.0
EXTENT = GridExtent("slope", LAT0 + 70 * SPACING, LON0 - 70 * SPACING, SPACING, SPACING, ROWS, COLS)
M_PER_DEG_N = meridian_radius_m(math.radians(LAT0)) * math.pi / 180.0
M_PER_DEG_E = (
    prime_vertical_radius_m(math.radians(LAT0)) * math.cos(math.radians(LAT0)) * (math.pi / 180.0)
)
SHIFT_SIGMA_N = SPACING * M_PER_DEG_N / math.sqrt(12.0)
SHIFT_SIGMA_E = SPACING * M_PER_DEG_E / math.sqrt(12.0)


def slope_surface(slope_deg: float, aspect_deg: float):
    """A plane rising at ``slope_deg`` towards azimuth ``aspect_deg``, linear in lat/lon."""
    rise = math.tan(math.radians(slope_deg))
    per_deg_n = rise * math.cos(math.radians(aspect_deg)) * M_PER_DEG_N
    per_deg_e = rise * math.sin(math.radians(aspect_deg)) * M_PER_DEG_E

    def surface(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return 1000.0 + per_deg_n * (lat - LAT0) + per_deg_e * (lon - LON0)

    return surface


def mosaic(surface, shift_e_m: float = 0.0, shift_n_m: float = 0.0, offset_m: float = 0.0):
    lats = EXTENT.lat0_deg - np.arange(ROWS) * SPACING
    lons = EXTENT.lon0_deg + np.arange(COLS) * SPACING
    values = (
        surface(lats[:, None] - shift_n_m / M_PER_DEG_N, lons[None, :] - shift_e_m / M_PER_DEG_E)
        + offset_m
    )
    grid = HeightGrid(EXTENT, values)
    return HeightMosaic([EXTENT], lambda _extent: grid)


def solve(
    dem: HeightMosaic, pose: CameraPose, hae: float, pixel: tuple[float, float], sigmas: InputSigmas
) -> Geolocation:
    got = locate_on_terrain(
        pose, CAMERA, *pixel, sigmas, dem=dem, camera_hae_m=hae, dem_sigma_m=DEM_SIGMA_M
    )
    assert isinstance(got, Geolocation)
    return got


def perturbed_pose(
    pose: CameraPose, hae: float, deltas: tuple[float, ...]
) -> tuple[CameraPose, float]:
    d_east, d_north, d_height, d_heading, d_pitch, d_roll = deltas[:6]
    lat = math.radians(pose.lat_deg)
    d_lat = d_north / (meridian_radius_m(lat) + hae)
    d_lon = d_east / ((prime_vertical_radius_m(lat) + hae) * math.cos(lat))
    moved = CameraPose(
        pose.lat_deg + math.degrees(d_lat),
        pose.lon_deg + math.degrees(d_lon),
        0.0,
        0.0,
        pose.heading_deg + d_heading,
        pose.pitch_deg + d_pitch,
        pose.roll_deg + d_roll,
    )
    return moved, hae + d_height


# (slope, aspect, heading, pitch): the camera at LAT0, LON0, 600 m above the slope there
CASES = {
    "facing_slope_20": (20.0, 0.0, 0.0, -30.0),  # the ground rises towards the camera's view
    "away_slope_15": (15.0, 0.0, 180.0, -40.0),  # the ground falls away: shallower incidence
    "across_slope_30": (30.0, 90.0, 0.0, -35.0),  # a 30 degree side slope
}
PIXEL = (1100.0, 600.0)
# An RTK drone with a good gimbal: the DEM's error is then the larger part of ce90, so the
# calibration says something about the slope terms (with DEFAULT_SIGMAS the camera dominates).
RTK_SIGMAS = InputSigmas(
    position_m=0.3, altitude_m=0.5, heading_deg=0.5, pitch_deg=0.3, roll_deg=0.3, pixel=1.0
)


def _case(name: str):
    slope, aspect, heading, pitch = CASES[name]
    surface = slope_surface(slope, aspect)
    hae = float(surface(np.array(LAT0), np.array(LON0))) + 600.0
    return surface, CameraPose(LAT0, LON0, 0.0, 0.0, heading, pitch, 0.0), hae


def test_slope_and_dem_error_grow_ce90() -> None:
    """The same camera over steeper ground falling away: larger ce90; with no DEM error, smaller."""
    flat_ish = _case("facing_slope_20")
    steep_away = slope_surface(30.0, 0.0)
    pose = CameraPose(LAT0, LON0, 0.0, 0.0, 180.0, -40.0, 0.0)
    hae = float(steep_away(np.array(LAT0), np.array(LON0))) + 600.0
    on_steep = solve(mosaic(steep_away), pose, hae, PIXEL, DEFAULT_SIGMAS)
    on_gentle = solve(
        mosaic(slope_surface(5.0, 0.0)), pose, hae - 600.0 + 600.0, PIXEL, DEFAULT_SIGMAS
    )
    assert on_steep.ce90_m > 1.5 * on_gentle.ce90_m
    surface, pose_f, hae_f = flat_ish
    with_error = solve(mosaic(surface), pose_f, hae_f, PIXEL, DEFAULT_SIGMAS)
    perfect = locate_on_terrain(
        pose_f,
        CAMERA,
        *PIXEL,
        DEFAULT_SIGMAS,
        dem=mosaic(surface),
        camera_hae_m=hae_f,
        dem_sigma_m=0.0,
    )
    assert isinstance(perfect, Geolocation)
    assert with_error.ce90_m > perfect.ce90_m


@pytest.mark.parametrize("name", CASES)
def test_dem_error_columns_match_finite_differences(name: str) -> None:
    """With exact camera inputs, the covariance is the DEM's alone: compare it with central
    differences of exact solves on offset and shifted DEMs."""
    surface, pose, hae = _case(name)
    zero = InputSigmas(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    expected = np.zeros(3)  # var_e, cov_en, var_n
    for key, sigma in (
        ("offset_m", DEM_SIGMA_M),
        ("shift_e_m", SHIFT_SIGMA_E),
        ("shift_n_m", SHIFT_SIGMA_N),
    ):
        plus = solve(mosaic(surface, **{key: 1.0}), pose, hae, PIXEL, zero)
        minus = solve(mosaic(surface, **{key: -1.0}), pose, hae, PIXEL, zero)
        d_e = (plus.lon_deg - minus.lon_deg) / 2 * M_PER_DEG_E
        d_n = (plus.lat_deg - minus.lat_deg) / 2 * M_PER_DEG_N
        expected += sigma**2 * np.array([d_e * d_e, d_e * d_n, d_n * d_n])
    got = solve(mosaic(surface), pose, hae, PIXEL, zero).covariance_en_m2
    assert np.allclose(got, expected, rtol=2e-3, atol=1e-3 * float(expected[0] + expected[2]))


@pytest.mark.parametrize("name", CASES)
def test_monte_carlo_on_slopes_lands_inside_ce90_ninety_percent_of_the_time(name: str) -> None:
    surface, pose, hae = _case(name)
    sigmas = RTK_SIGMAS
    nominal = solve(mosaic(surface), pose, hae, PIXEL, sigmas)
    hit_lat, hit_lon = math.radians(nominal.lat_deg), math.radians(nominal.lon_deg)
    origin = geodetic_to_ecef(hit_lat, hit_lon, nominal.hae_m)
    east, north, _ = enu_frame(hit_lat, hit_lon)
    sigma_vector = (*input_sigma_vector(sigmas), DEM_SIGMA_M, SHIFT_SIGMA_E, SHIFT_SIGMA_N)
    rng = random.Random(f"terrain-calibration-{name}")
    samples = 10_000  # binomial sd 0.3%: the 89-91% band is +-3.3 sd
    inside = 0
    sum_ee = sum_nn = 0.0
    for _ in range(samples):
        deltas = tuple(rng.gauss(0.0, s) for s in sigma_vector)
        moved_pose, moved_hae = perturbed_pose(pose, hae, deltas)
        dem = mosaic(surface, shift_e_m=deltas[9], shift_n_m=deltas[10], offset_m=deltas[8])
        pixel = (PIXEL[0] + deltas[6], PIXEL[1] + deltas[7])
        got = solve(dem, moved_pose, moved_hae, pixel, sigmas)
        point = geodetic_to_ecef(math.radians(got.lat_deg), math.radians(got.lon_deg), got.hae_m)
        d = (point[0] - origin[0], point[1] - origin[1], point[2] - origin[2])
        de = east[0] * d[0] + east[1] * d[1] + east[2] * d[2]
        dn = north[0] * d[0] + north[1] * d[1] + north[2] * d[2]
        inside += math.hypot(de, dn) <= nominal.ce90_m
        sum_ee += de * de
        sum_nn += dn * dn
    fraction = inside / samples
    print(f"{name}: {fraction:.4f} inside ce90 {nominal.ce90_m:.2f} m")
    assert 0.89 <= fraction <= 0.91, fraction
    var_e, _, var_n = nominal.covariance_en_m2
    scale = var_e + var_n
    assert sum_ee / samples == pytest.approx(var_e, abs=0.05 * scale)
    assert sum_nn / samples == pytest.approx(var_n, abs=0.05 * scale)
