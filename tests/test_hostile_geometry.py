"""Hostile numbers against the geometry core (``geo.locate``), with no model in front of it.

Contract of ``locate`` for any finite inputs: a ``Geolocation`` whose numbers are all finite with
non-negative errors, or ``GeolocationError`` (no ground intersection, with its reason), or a plain
``ValueError`` (inputs outside the numeric domain). Never another exception (``OverflowError``,
``ArithmeticError``, ``ZeroDivisionError``), never a NaN in the answer.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detection_api.geo.locate import (
    MAX_AXIS_OFFSET,
    MAX_CAMERA_HEIGHT_M,
    MAX_GROUND_HAE_M,
    MAX_SIGMAS,
    MIN_FOCAL_PX,
    locate,
)
from detection_api.geo.types import (
    CameraPose,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
)

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
CAMERA = Intrinsics(1000.0, 1920.0, 1080.0, 960.0, 540.0)
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
