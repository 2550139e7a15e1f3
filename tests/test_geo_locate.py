"""locate(): the hit against an independent pymap3d solver, and hand-derived cases pinned."""

from __future__ import annotations

import math

import pymap3d
import pymap3d.vincenty
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from detection_api.geo.camera import camera_axes
from detection_api.geo.ellipsoid import SEMI_MAJOR_AXIS_M
from detection_api.geo.locate import (
    DEFAULT_SIGMAS,
    MAX_AXIS_OFFSET,
    MAX_CAMERA_HEIGHT_M,
    MAX_GROUND_HAE_M,
    MAX_SIGMAS,
    MIN_FOCAL_PX,
    locate,
)
from detection_api.geo.types import (
    CameraPose,
    ConfidenceFlag,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
    NoGroundIntersection,
)

CAMERA = Intrinsics(focal_px=1000.0, width_px=1920.0, height_px=1080.0, cx_px=960.0, cy_px=540.0)
CENTRE = (CAMERA.cx_px, CAMERA.cy_px)


def pose(
    lat: float = 47.0,
    lon: float = 8.0,
    height: float = 100.0,
    ground: float = 0.0,
    heading: float = 0.0,
    pitch: float = -45.0,
    roll: float = 0.0,
) -> CameraPose:
    return CameraPose(lat, lon, height, ground, heading, pitch, roll)


# --- an independent reference: rotation matrices + pymap3d + bisection --------------------------


def _matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def reference_axes_enu(
    heading_deg: float, pitch_deg: float, roll_deg: float
) -> tuple[list[float], list[float], list[float]]:
    """(right, down, forward) in ENU by composing elementary rotations, not camera.py's formulas.

    Start level, looking north: right = east, down = -up, forward = north. Roll about the forward
    (north) axis turning right towards down, then pitch about east raising forward, then heading
    clockwise about up: R = Rz(-h) Rx(p) Ry(r).
    """
    h, p, r = (math.radians(v) for v in (heading_deg, pitch_deg, roll_deg))
    rz = [[math.cos(h), math.sin(h), 0.0], [-math.sin(h), math.cos(h), 0.0], [0.0, 0.0, 1.0]]
    rx = [[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]]
    ry = [[math.cos(r), 0.0, math.sin(r)], [0.0, 1.0, 0.0], [-math.sin(r), 0.0, math.cos(r)]]
    rotation = _matmul(rz, _matmul(rx, ry))

    def rotate(v: tuple[float, float, float]) -> list[float]:
        return [sum(rotation[i][k] * v[k] for k in range(3)) for i in range(3)]

    return rotate((1.0, 0.0, 0.0)), rotate((0.0, 0.0, -1.0)), rotate((0.0, 1.0, 0.0))


def reference_hit(
    camera: CameraPose, intrinsics: Intrinsics, pixel_x: float, pixel_y: float
) -> tuple[tuple[float, float, float], float, float] | None:
    """(hit ECEF, slant range, lowest height above ground) by bisection on pymap3d heights.

    Geodetic height along a line is convex (signed distance to a convex body), so a golden-section
    search finds the lowest point of the ray and the first crossing is the single root before it.
    Returns None when the ray's lowest point is above the ground.
    """
    right, down, forward = reference_axes_enu(camera.heading_deg, camera.pitch_deg, camera.roll_deg)
    a = (pixel_x - intrinsics.cx_px) / intrinsics.focal_px
    b = (pixel_y - intrinsics.cy_px) / intrinsics.focal_px
    ray = [forward[i] + a * right[i] + b * down[i] for i in range(3)]
    norm = math.sqrt(sum(c * c for c in ray))
    d = pymap3d.enu2uvw(*(c / norm for c in ray), camera.lat_deg, camera.lon_deg)
    c = pymap3d.geodetic2ecef(
        camera.lat_deg, camera.lon_deg, camera.ground_hae_m + camera.height_above_ground_m
    )

    def point(t: float) -> tuple[float, float, float]:
        return (c[0] + t * d[0], c[1] + t * d[1], c[2] + t * d[2])

    def above_ground(t: float) -> float:
        return float(pymap3d.ecef2geodetic(*point(t))[2]) - camera.ground_hae_m

    lo, hi = 0.0, 200_000.0
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    while hi - lo > 1e-3:
        m1, m2 = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        if above_ground(m1) < above_ground(m2):
            hi = m2
        else:
            lo = m1
    lowest_t = 0.5 * (lo + hi)
    lowest = above_ground(lowest_t)
    if lowest > 0.0:
        return None
    lo, hi = 0.0, lowest_t
    while hi - lo > 1e-7:
        mid = 0.5 * (lo + hi)
        if above_ground(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return point(t), t, lowest


def hit_ecef(result: Geolocation) -> tuple[float, float, float]:
    return pymap3d.geodetic2ecef(result.lat_deg, result.lon_deg, result.hae_m)


# --- agreement with the reference ----------------------------------------------------------------

REFERENCE_CASES = {
    "steep": (pose(pitch=-80.0, heading=30.0), CENTRE),
    "nadir": (pose(pitch=-90.0, heading=123.0), (100.0, 1000.0)),
    "oblique_corner": (pose(height=250.0, pitch=-30.0, heading=300.0), (0.0, 1080.0)),
    "shallow_1deg_18km": (pose(height=300.0, pitch=-1.0, heading=45.0), CENTRE),
    "rolled": (pose(pitch=-35.0, heading=10.0, roll=25.0), (1700.0, 200.0)),
    "rolled_negative": (pose(pitch=-50.0, heading=200.0, roll=-40.0), (150.0, 950.0)),
    "southern": (pose(lat=-33.9, lon=18.4, height=80.0, pitch=-20.0, heading=135.0), CENTRE),
    "western": (pose(lat=40.7, lon=-74.0, height=400.0, pitch=-10.0, heading=270.0), (10, 1070)),
    "near_north_pole": (pose(lat=89.99, lon=0.0, height=500.0, pitch=-15.0, heading=180.0), CENTRE),
    "over_north_pole": (pose(lat=89.995, lon=45.0, height=900.0, pitch=-20.0, heading=0.0), CENTRE),
    "near_south_pole": (
        pose(lat=-89.95, lon=-120.0, height=2000.0, pitch=-12.0, heading=77.0),
        CENTRE,
    ),
    "antimeridian_east": (
        pose(lat=-16.0, lon=179.99, height=600.0, pitch=-3.0, heading=90.0),
        CENTRE,
    ),
    "antimeridian_west": (
        pose(lat=52.0, lon=-179.995, height=300.0, pitch=-5.0, heading=260.0),
        CENTRE,
    ),
    "high_plateau": (pose(lat=31.0, lon=91.0, height=200.0, ground=4500.0, pitch=-1.0), CENTRE),
    "below_sea_level": (pose(lat=31.5, lon=35.5, height=60.0, ground=-430.0, pitch=-8.0), (0, 540)),
    "low_camera_grazing": (pose(height=2.0, pitch=-0.1, heading=10.0), CENTRE),
    "tall_mast_far": (pose(height=3000.0, ground=1200.0, pitch=-9.0, heading=333.0), (1900, 1000)),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_hit_agrees_with_pymap3d_reference_within_1cm(case: str) -> None:
    camera, (px, py) = REFERENCE_CASES[case]
    result = locate(camera, CAMERA, px, py)
    reference = reference_hit(camera, CAMERA, px, py)
    assert reference is not None
    reference_point, reference_range, _ = reference
    assert reference_range <= 20_000.0
    assert math.dist(hit_ecef(result), reference_point) < 0.01
    assert result.slant_range_m == pytest.approx(reference_range, abs=0.01)
    assert -180.0 <= result.lon_deg < 180.0
    distance, _ = pymap3d.vincenty.vdist(
        camera.lat_deg, camera.lon_deg, result.lat_deg, result.lon_deg
    )
    assert result.ground_distance_m == pytest.approx(float(distance), abs=1e-3)


def test_shallow_case_really_is_long_range() -> None:
    camera, (px, py) = REFERENCE_CASES["shallow_1deg_18km"]
    # flat earth would say 300 / tan(1 deg) = 17.2 km; the curved ground falls away to ~18.8 km
    assert 18_000.0 < locate(camera, CAMERA, px, py).ground_distance_m < 19_500.0


def test_antimeridian_crossing_wraps_longitude() -> None:
    camera, (px, py) = REFERENCE_CASES["antimeridian_east"]
    result = locate(camera, CAMERA, px, py)
    assert -180.0 <= result.lon_deg < -179.9  # crossed from +179.99 going east
    camera, (px, py) = REFERENCE_CASES["antimeridian_west"]
    assert 179.9 < locate(camera, CAMERA, px, py).lon_deg < 180.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat=st.floats(-90.0, 90.0),
    lon=st.floats(-180.0, 180.0),
    height=st.floats(1.0, 3000.0),
    ground=st.floats(-400.0, 5000.0),
    heading=st.floats(0.0, 360.0, exclude_max=True),
    pitch=st.floats(-90.0, 10.0),
    roll=st.floats(-60.0, 60.0),
    px=st.floats(0.0, CAMERA.width_px),
    py=st.floats(0.0, CAMERA.height_px),
)
def test_random_geometry_agrees_with_reference(
    lat: float,
    lon: float,
    height: float,
    ground: float,
    heading: float,
    pitch: float,
    roll: float,
    px: float,
    py: float,
) -> None:
    camera = CameraPose(lat, lon, height, ground, heading, pitch, roll)
    reference = reference_hit(camera, CAMERA, px, py)
    try:
        result = locate(camera, CAMERA, px, py)
    except GeolocationError as error:
        if error.reason is NoGroundIntersection.ABOVE_HORIZON:
            assume(reference is None or reference[2] > -1e-3)  # skip ambiguous mm-grazing rays
            assert reference is None
        else:
            assert error.reason is NoGroundIntersection.BEYOND_MAX_RANGE
            assert reference is not None
            assume(abs(reference[1] - 20_000.0) > 0.01)
            assert reference[1] > 20_000.0
        return
    assert reference is not None
    assert math.dist(hit_ecef(result), reference[0]) < 0.01


def test_camera_axes_match_composed_rotations() -> None:
    for heading, pitch, roll in [
        (0, 0, 0),
        (33, -20, 5),
        (250, -89, -30),
        (90, 10, 170),
        (7, -90, 0),
    ]:
        axes = camera_axes(*(math.radians(v) for v in (heading, pitch, roll)))
        right, down, forward = reference_axes_enu(heading, pitch, roll)
        assert axes.right == pytest.approx(right, abs=1e-15)
        assert axes.down == pytest.approx(down, abs=1e-15)
        assert axes.forward == pytest.approx(forward, abs=1e-15)


# --- hand-derived cases ----------------------------------------------------------------------


def test_nadir_centre_pixel_lands_under_the_camera() -> None:
    for lat, lon in [(47.0, 8.0), (-12.5, -77.0), (89.5, 179.0), (0.0, -180.0)]:
        for height in (1.0, 100.0, 2500.0):
            result = locate(
                pose(lat=lat, lon=lon, height=height, pitch=-90.0, heading=41.0), CAMERA, *CENTRE
            )
            assert result.lat_deg == pytest.approx(lat, abs=1e-9)
            assert result.lon_deg == pytest.approx(lon, abs=1e-9)
            assert result.slant_range_m == pytest.approx(height, abs=1e-6)
            assert result.ground_distance_m == pytest.approx(0.0, abs=1e-6)
            assert result.hae_m == 0.0


# Camera 100 m above the equator (lon 0, ground 0), ray 45 deg below the horizontal towards east.
# At the equator east and up span the equatorial plane, and the ellipsoid meets that plane in a
# circle of radius a. Camera at (0, a + H), ray (1, -1)/sqrt2, hit where |P| = a:
#   s^2 - sqrt2 (a + H) s + (a + H)^2 - a^2 = 0, whose smaller root in stable form is
#   s = 2 H (2a + H) / (sqrt2 (a + H) + sqrt(4a^2 - 2 (a + H)^2)) = 141.422464896 m
# (flat earth: 141.421356). The hit is x = s/sqrt2 east of the camera's axis and y = a + H - x up;
# its longitude is theta = atan2(x, y) = 0.000898322326412 deg and, the equator being a geodesic,
# the ground distance is a * theta = 100.000783944 m: 0.78 mm farther than on a flat earth,
# because the ground drops by about x^2 / 2a = 0.78 mm under the ray.
EQUATOR_45_SLANT_M = 141.422464896
EQUATOR_45_LON_DEG = 0.000898322326412
EQUATOR_45_GROUND_M = 100.000783944


def _equator_45_expected() -> tuple[float, float, float]:
    a, h = SEMI_MAJOR_AXIS_M, 100.0
    s = 2 * h * (2 * a + h) / (math.sqrt(2) * (a + h) + math.sqrt(4 * a * a - 2 * (a + h) ** 2))
    theta = math.atan2(s / math.sqrt(2), a + h - s / math.sqrt(2))
    return s, math.degrees(theta), a * theta


def test_equator_45_pinned_values_match_their_derivation() -> None:
    slant, lon, ground = _equator_45_expected()
    assert slant == pytest.approx(EQUATOR_45_SLANT_M, abs=1e-9)
    assert lon == pytest.approx(EQUATOR_45_LON_DEG, abs=1e-15)
    assert ground == pytest.approx(EQUATOR_45_GROUND_M, abs=1e-9)


def _assert_equator_45(result: Geolocation) -> None:
    assert result.lat_deg == pytest.approx(0.0, abs=1e-12)
    assert result.lon_deg == pytest.approx(EQUATOR_45_LON_DEG, abs=1e-13)  # 11 nm
    assert result.slant_range_m == pytest.approx(EQUATOR_45_SLANT_M, abs=1e-6)
    assert result.ground_distance_m == pytest.approx(EQUATOR_45_GROUND_M, abs=1e-6)


def test_pitch_minus_45_heading_east_lands_100_m_east_with_curvature() -> None:
    _assert_equator_45(locate(pose(lat=0.0, lon=0.0, pitch=-45.0, heading=90.0), CAMERA, *CENTRE))


def test_pixel_offset_maps_through_the_focal_length() -> None:
    # nadir, heading north: image right is east; f pixels right of centre is a 45 deg ray to the
    # east, the same ray as the case above
    shifted = (CAMERA.cx_px + CAMERA.focal_px, CAMERA.cy_px)
    _assert_equator_45(locate(pose(lat=0.0, lon=0.0, pitch=-90.0, heading=0.0), CAMERA, *shifted))
    # half the focal length left: tan = 0.5, so 50 m west of a camera 100 m up (sub-mm curvature)
    result = locate(pose(lat=0.0, lon=0.0, pitch=-90.0), CAMERA, CAMERA.cx_px - 500.0, CAMERA.cy_px)
    assert result.ground_distance_m == pytest.approx(50.0, abs=1e-3)
    assert result.lon_deg < 0.0
    # image down at nadir, heading north, points south (the image top faces the heading)
    result = locate(pose(lat=0.0, lon=0.0, pitch=-90.0), CAMERA, CAMERA.cx_px, CAMERA.cy_px + 500.0)
    assert result.ground_distance_m == pytest.approx(50.0, abs=1e-3)
    assert result.lat_deg < 0.0


def test_pixel_below_centre_looks_down() -> None:
    # level camera: a pixel below the centre is below the horizon and hits the ground ahead (north)
    level = pose(lat=0.0, lon=0.0, height=100.0, pitch=0.0, heading=0.0)
    result = locate(level, CAMERA, CAMERA.cx_px, CAMERA.cy_px + CAMERA.focal_px)
    assert result.ground_distance_m == pytest.approx(100.0, abs=0.01)
    assert result.lat_deg > 0.0
    assert result.lon_deg == pytest.approx(0.0, abs=1e-12)


def test_positive_roll_turns_the_right_side_down() -> None:
    # level camera looking north, pixel f to the right of centre: ray (cos r, 1, -sin r) in ENU.
    # Roll +30 deg tips it below the horizontal, towards the north-east; roll -30 lifts it above.
    level = dict(lat=0.0, lon=0.0, height=100.0, pitch=0.0, heading=0.0)
    right_pixel = (CAMERA.cx_px + CAMERA.focal_px, CAMERA.cy_px)
    result = locate(pose(**level, roll=30.0), CAMERA, *right_pixel)
    # depression: tan = sin 30 / hypot(cos 30, 1) = 0.5 / 1.3229; horizontal run = 100 / that
    expected_run = 100.0 * math.hypot(math.cos(math.radians(30)), 1.0) / 0.5
    assert result.ground_distance_m == pytest.approx(expected_run, rel=1e-4)
    assert result.lat_deg > 0.0
    assert result.lon_deg > 0.0  # to the right of a north-looking camera is east
    with pytest.raises(GeolocationError) as raised:
        locate(pose(**level, roll=-30.0), CAMERA, *right_pixel)
    assert raised.value.reason is NoGroundIntersection.ABOVE_HORIZON

    # oblique camera: rolling right brings a right-of-centre pixel's hit closer
    oblique = dict(height=100.0, pitch=-30.0, heading=0.0)
    ranges = [
        locate(pose(**oblique, roll=r), CAMERA, 1500.0, 540.0).slant_range_m for r in (-5, 0, 5)
    ]
    assert ranges[0] > ranges[1] > ranges[2]


def test_ray_at_or_above_the_horizon_raises() -> None:
    for pitch, py in [(0.0, CAMERA.cy_px), (10.0, CAMERA.cy_px), (-5.0, CAMERA.cy_px - 200.0)]:
        with pytest.raises(GeolocationError) as raised:
            locate(pose(pitch=pitch), CAMERA, CAMERA.cx_px, py)
        assert raised.value.reason is NoGroundIntersection.ABOVE_HORIZON


def test_ray_below_horizontal_but_over_the_curved_horizon_raises() -> None:
    # from 1000 m the sea horizon is acos(R / (R + H)) ~ 1.01 deg below the horizontal
    camera = pose(lat=0.0, height=1000.0, pitch=-0.9, heading=90.0)
    with pytest.raises(GeolocationError) as raised:
        locate(camera, CAMERA, *CENTRE, max_range_m=1e7)
    assert raised.value.reason is NoGroundIntersection.ABOVE_HORIZON
    assert reference_hit(camera, CAMERA, *CENTRE) is None
    # just below the horizon it hits, ~100 km away
    result = locate(
        pose(lat=0.0, height=1000.0, pitch=-1.1, heading=90.0), CAMERA, *CENTRE, max_range_m=1e7
    )
    assert 60_000.0 < result.slant_range_m < 120_000.0


def test_beyond_max_range_raises() -> None:
    camera = pose(height=300.0, pitch=-1.0)  # ~18.8 km
    assert locate(camera, CAMERA, *CENTRE).slant_range_m > 18_000.0
    with pytest.raises(GeolocationError) as raised:
        locate(camera, CAMERA, *CENTRE, max_range_m=10_000.0)
    assert raised.value.reason is NoGroundIntersection.BEYOND_MAX_RANGE
    steep_enough_but_far = pose(height=2000.0, pitch=-2.0)  # flat earth: 57 km
    with pytest.raises(GeolocationError) as raised:
        locate(steep_enough_but_far, CAMERA, *CENTRE)
    assert raised.value.reason is NoGroundIntersection.BEYOND_MAX_RANGE
    reference = reference_hit(steep_enough_but_far, CAMERA, *CENTRE)
    assert reference is not None
    assert reference[1] > 20_000.0


@pytest.mark.parametrize("height", [0.0, -5.0])
def test_camera_at_or_below_ground_raises(height: float) -> None:
    with pytest.raises(GeolocationError) as raised:
        locate(pose(height=height, pitch=-90.0), CAMERA, *CENTRE)
    assert raised.value.reason is NoGroundIntersection.CAMERA_BELOW_GROUND


def test_invalid_numbers_raise_value_error_not_geolocation_error() -> None:
    for bad_pose, bad_camera in [
        (pose(lat=math.nan), CAMERA),
        (pose(heading=math.inf), CAMERA),
        (pose(lat=91.0), CAMERA),
        (pose(), Intrinsics(0.0, 1920.0, 1080.0, 960.0, 540.0)),
    ]:
        with pytest.raises(ValueError) as raised:
            locate(bad_pose, bad_camera, *CENTRE)
        assert not isinstance(raised.value, GeolocationError)
    with pytest.raises(ValueError):
        locate(pose(), CAMERA, *CENTRE, sigmas=InputSigmas(-1.0, 2.0, 2.0, 1.0, 1.0, 2.0))


def test_output_fields_follow_the_contract() -> None:
    result = locate(pose(ground=412.5, pitch=-40.0, heading=75.0), CAMERA, 1300.0, 800.0)
    assert result.hae_m == 412.5
    assert result.ce_m == pytest.approx(result.ce90_m / 2.1460, rel=1e-15)
    assert result.le90_m == pytest.approx(1.6449 * DEFAULT_SIGMAS.altitude_m, rel=1e-15)
    assert result.le_m == pytest.approx(result.le90_m / 1.6449, rel=1e-15)
    var_e, cov_en, var_n = result.covariance_en_m2
    assert var_e > 0.0
    assert var_n > 0.0
    assert cov_en * cov_en < var_e * var_n
    # ground distance < slant range, and the camera height closes the triangle (to curvature)
    assert result.ground_distance_m == pytest.approx(
        math.sqrt(result.slant_range_m**2 - 100.0**2), rel=1e-4
    )


def test_flag_cut_offs() -> None:
    camera = pose(height=100.0, pitch=-40.0)
    ce90 = locate(camera, CAMERA, *CENTRE).ce90_m
    assert locate(camera, CAMERA, *CENTRE).flag is ConfidenceFlag.GREEN  # defaults 30 / 100 m
    assert (
        locate(camera, CAMERA, *CENTRE, green_max_m=ce90, yellow_max_m=ce90 + 1).flag
        is ConfidenceFlag.GREEN
    )
    assert (
        locate(camera, CAMERA, *CENTRE, green_max_m=ce90 * 0.99, yellow_max_m=ce90).flag
        is ConfidenceFlag.YELLOW
    )
    assert (
        locate(camera, CAMERA, *CENTRE, green_max_m=1.0, yellow_max_m=ce90 * 0.99).flag
        is ConfidenceFlag.RED
    )
    far = locate(pose(height=300.0, pitch=-1.0), CAMERA, *CENTRE)
    assert far.flag is ConfidenceFlag.RED  # 1 deg of pitch at 1 deg grazing: kilometres
    assert far.ce90_m > 1000.0


# --- hostile input (formerly test_hostile_geometry.py) --------------------------------------------
# Hostile numbers against the geometry core (``geo.locate``), with no model in front of it.
#
# Contract of ``locate`` for any finite inputs: a ``Geolocation`` whose numbers are all finite with
# non-negative errors, or ``GeolocationError`` (no ground intersection, with its reason), or a plain
# ``ValueError`` (inputs outside the numeric domain). Never another exception (``OverflowError``,
# ``ArithmeticError``, ``ZeroDivisionError``), never a NaN in the answer.


FUZZ = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
finite = st.floats(allow_nan=False, allow_infinity=False)


def in_range(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats in [low, high], with the ends and their neighbours drawn often."""
    edges = [low, high, math.nextafter(low, math.inf), math.nextafter(high, -math.inf)]
    return st.one_of(st.sampled_from(edges), st.floats(low, high))


def assert_sound(result: Geolocation) -> None:
    numbers = (
        result.lat_deg,
        result.lon_deg,
        result.hae_m,
        result.slant_range_m,
        result.ground_distance_m,
        result.ce90_m,
        result.le90_m,
        result.ce_m,
        result.le_m,
        *result.covariance_en_m2,
    )
    assert all(math.isfinite(v) for v in numbers), result
    assert min(result.ce90_m, result.le90_m, result.ce_m, result.le_m) >= 0.0, result
    assert result.covariance_en_m2[0] >= 0.0 and result.covariance_en_m2[2] >= 0.0, result
    assert -90.0 <= result.lat_deg <= 90.0 and -180.0 <= result.lon_deg < 180.0, result
    assert result.slant_range_m >= 0.0 and result.ground_distance_m >= 0.0, result


def locate_or_refuse(
    pose: CameraPose,
    intrinsics: Intrinsics,
    pixel: tuple[float, float],
    sigmas: InputSigmas,
    max_range_m: float,
) -> Geolocation | GeolocationError | ValueError:
    try:
        result = locate(pose, intrinsics, *pixel, sigmas, max_range_m=max_range_m)
    except GeolocationError as exc:  # a subclass of ValueError: caught first
        return exc
    except ValueError as exc:
        return exc
    assert_sound(result)
    return result


poses = st.builds(CameraPose, finite, finite, finite, finite, finite, finite, finite)
intrinsics = st.builds(Intrinsics, finite, finite, finite, finite, finite)
sigmas = st.builds(InputSigmas, finite, finite, finite, finite, finite, finite)


@FUZZ
@given(
    pose=poses,
    camera=intrinsics,
    pixel=st.tuples(finite, finite),
    errors=sigmas,
    max_range_m=finite,
)
@example(  # found by fuzzing: OverflowError in a square of the ellipsoid
    pose=CameraPose(0.0, 6.1e-05, 1.8e308, -5.6e193, -5.6e193, -8.8e15, 0.0),
    camera=Intrinsics(4.2e16, -4.7e111, 4.3e16, 6.1e-05, 0.0),
    pixel=(1.1e-308, 6.4e16),
    errors=InputSigmas(0.0, 3.6e16, 0.0, 6.0, 2.0e292, 6.0),
    max_range_m=3.8e84,
)
@example(  # found by fuzzing: "ground intersection did not converge" (ArithmeticError)
    pose=CameraPose(47.0, 0.0, 2.0e16, -1.2e-07, -6.9e41, 4.6e16, 0.0),
    camera=Intrinsics(5e-324, -2.0e16, 5.3e96, 9.0e16, 0.0),
    pixel=(-0.0, -1.0e238),
    errors=InputSigmas(5.6e16, 5e-324, 4.6e16, 0.0, 47.0, 4.3e16),
    max_range_m=8e-172,
)
def test_any_finite_numbers_give_an_answer_or_a_named_refusal(
    pose: CameraPose,
    camera: Intrinsics,
    pixel: tuple[float, float],
    errors: InputSigmas,
    max_range_m: float,
) -> None:
    locate_or_refuse(pose, camera, pixel, errors, max_range_m)


# The numeric domain documented in geo/locate.py, with its extremes drawn often.
domain_poses = st.builds(
    CameraPose,
    lat_deg=in_range(-90.0, 90.0),
    lon_deg=in_range(-1e6, 1e6),
    height_above_ground_m=in_range(1e-6, MAX_CAMERA_HEIGHT_M),
    ground_hae_m=in_range(-MAX_GROUND_HAE_M, MAX_GROUND_HAE_M),
    heading_deg=in_range(-720.0, 720.0),
    pitch_deg=in_range(-180.0, 180.0),
    roll_deg=in_range(-720.0, 720.0),
)
domain_intrinsics = st.builds(
    Intrinsics,
    focal_px=in_range(MIN_FOCAL_PX, 1e9),
    width_px=st.just(1920.0),
    height_px=st.just(1080.0),
    cx_px=in_range(-1e5, 1e5),
    cy_px=in_range(-1e5, 1e5),
)
domain_sigmas = st.builds(
    InputSigmas,
    position_m=in_range(0.0, MAX_SIGMAS.position_m),
    altitude_m=in_range(0.0, MAX_SIGMAS.altitude_m),
    heading_deg=in_range(0.0, MAX_SIGMAS.heading_deg),
    pitch_deg=in_range(0.0, MAX_SIGMAS.pitch_deg),
    roll_deg=in_range(0.0, MAX_SIGMAS.roll_deg),
    pixel=in_range(0.0, MAX_SIGMAS.pixel),
)


@FUZZ
@given(
    pose=domain_poses,
    camera=domain_intrinsics,
    pixel=st.tuples(in_range(-1e5, 1e5), in_range(-1e5, 1e5)),
    errors=domain_sigmas,
    max_range_m=in_range(1e-3, 1e300),
)
@example(  # found by fuzzing: ground height 1e193 m made a square overflow (OverflowError)
    pose=CameraPose(0.0, 0.0, 1e6, MAX_GROUND_HAE_M, 0.0, -45.0, 0.0),
    camera=Intrinsics(MIN_FOCAL_PX, 1920.0, 1080.0, -1e5, 1e5),
    pixel=(1e5, -1e5),
    errors=MAX_SIGMAS,
    max_range_m=1e300,
)
def test_inside_the_numeric_domain_only_geometry_refuses(
    pose: CameraPose,
    camera: Intrinsics,
    pixel: tuple[float, float],
    errors: InputSigmas,
    max_range_m: float,
) -> None:
    """With the camera at least a micrometre up, every input inside the documented domain is
    placed or refused for a geometric reason: ValueError is only for numbers outside it."""
    outcome = locate_or_refuse(pose, camera, pixel, errors, max_range_m)
    assert not isinstance(outcome, ValueError) or isinstance(outcome, GeolocationError), outcome


LEVEL = CameraPose(45.0, 7.0, 100.0, 0.0, 90.0, -45.0, 0.0)
SIGMAS = InputSigmas(5.0, 2.0, 2.0, 1.0, 1.0, 2.0)


@pytest.mark.parametrize(
    ("pose", "camera", "pixel", "sigmas", "message"),
    [
        # Each of these raised OverflowError or ArithmeticError, or answered NaN, before the
        # numeric domain was enforced.
        (
            CameraPose(45.0, 7.0, 100.0, -5.6e193, 90.0, -45.0, 0.0),
            CAMERA,
            (960.0, 540.0),
            SIGMAS,
            "ground height",
        ),
        (
            CameraPose(45.0, 7.0, 1e308, 0.0, 90.0, -45.0, 0.0),
            CAMERA,
            (960.0, 540.0),
            SIGMAS,
            "camera height",
        ),
        (LEVEL, Intrinsics(5e-324, 1920.0, 1080.0, 960.0, 540.0), (961.0, 540.0), SIGMAS, "focal"),
        (LEVEL, Intrinsics(1e-3, 1920.0, 1080.0, 0.0, 0.0), (1e300, 1e300), SIGMAS, "off its axis"),
        (LEVEL, CAMERA, (960.0, 540.0), InputSigmas(1e300, 2.0, 2.0, 1.0, 1.0, 2.0), "sigmas"),
        (LEVEL, CAMERA, (960.0, 540.0), InputSigmas(5.0, 2.0, 2.0, math.nan, 1.0, 2.0), "sigmas"),
        # A camera 1e-323 m up (effectively on the ground) looking a hair below the horizon: the
        # hit is under it, but its sensitivity to the height error is ~1e232 m/m.
        (
            CameraPose(0.0, -180.0, 1e-323, 0.0, 0.0, -3.65e-231, 0.0),
            Intrinsics(855086.0, 14720.0, 2782.0, 0.0, 0.0),
            (0.0, 0.0),
            SIGMAS,
            "overflows",
        ),
    ],
)
def test_degenerate_numbers_are_a_value_error_that_says_why(
    pose: CameraPose,
    camera: Intrinsics,
    pixel: tuple[float, float],
    sigmas: InputSigmas,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        locate(pose, camera, *pixel, sigmas, max_range_m=1e12)
    assert not isinstance(info.value, GeolocationError)


def test_the_domain_edges_themselves_are_accepted() -> None:
    edge_pose = CameraPose(45.0, 7.0, 100.0, MAX_GROUND_HAE_M, 90.0, -45.0, 0.0)
    assert_sound(locate(edge_pose, CAMERA, 960.0, 540.0, MAX_SIGMAS))
    # A level camera with the narrowest focal length: a pixel half the axis-offset limit below
    # the principal point looks almost straight down.
    narrow = Intrinsics(MIN_FOCAL_PX, 1920.0, 1080.0, 0.0, 0.0)
    level = CameraPose(45.0, 7.0, 100.0, 0.0, 0.0, 0.0, 0.0)
    result = locate(level, narrow, 0.0, MIN_FOCAL_PX * MAX_AXIS_OFFSET / 2, SIGMAS)
    assert_sound(result)
    assert result.ground_distance_m < 1.0
