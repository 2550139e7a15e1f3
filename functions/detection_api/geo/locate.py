"""locate(): from a pixel and the camera's pose to the WGS84 ground point, with its uncertainty.

The answer is the first point along the pixel's ray (conventions in geo/camera.py)
whose WGS84 geodetic height equals the ground height: exact ellipsoid geometry in ECEF with the
ENU frame rotated at the camera, no flat-earth degree conversions (geo/intersect.py; within 1 um of
an exact solver, tested against pymap3d to 1 cm at up to 20 km). When there is no such point the
call raises GeolocationError naming the reason; it never falls back to the camera position:
- CAMERA_BELOW_GROUND: height above ground <= 0;
- ABOVE_HORIZON: the ray points at or above the local horizontal, or dips below it but passes
  over the curved Earth's horizon without reaching the ground height;
- BEYOND_MAX_RANGE: the slant range to the hit exceeds ``max_range_m``.
Invalid numbers raise plain ValueError: non-finite inputs, latitude outside [-90, 90], a ground
height beyond +-100 km or a camera more than 10,000 km above it, a focal length under 0.001 px, a
pixel farther than 1e9 focal lengths off the optical axis, sigmas that are negative or beyond
``MAX_SIGMAS``, and (the last guard) a geometry whose uncertainty overflows double precision, which
takes a ray grazing the ground from a camera within a micrometre of it. Inside these bounds every
intermediate stays far from overflow, so the answer is always finite.

Uncertainty is first-order propagation of ``sigmas`` (defaults ``DEFAULT_SIGMAS``: position 5 m,
altitude 2 m, heading 2 deg, pitch 1 deg, roll 1 deg, pixel 2 px; justified in geo/uncertainty.py)
through the analytic Jacobian of the hit; ce90 is exact for the resulting elliptical distribution
and le90 = 1.6449 * sigmas.altitude_m. ground_distance_m is the geodesic on the ellipsoid between
the points under the camera and the hit (Vincenty inverse, sub-millimetre at these distances).
About 40 us per call in CPython 3.11, ~3.4x one pymap3d geodetic->ECEF->geodetic round trip
(bench/geo_timing.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from detection_api.geo.camera import (
    CameraAxes,
    camera_axes,
    image_plane_offsets,
    ray_enu,
    ray_partials_enu,
)
from detection_api.geo.ellipsoid import (
    EnuFrame,
    Vec3,
    enu_frame,
    enu_to_ecef,
    frame_in_frame,
    geodesic_distance_m,
    geodetic_to_ecef,
    meridian_radius_m,
    normalize_longitude_deg,
    prime_vertical_radius_m,
)
from detection_api.geo.intersect import GroundCrossing, first_ground_crossing
from detection_api.geo.types import (
    CameraPose,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
    NoGroundIntersection,
    Terrain,
    pose_values,
    sigma_values,
)
from detection_api.geo.uncertainty import (
    CE90_PER_SIGMA_CIRCULAR,
    DEFAULT_SIGMAS,
    LE90_PER_SIGMA,
    EnColumn,
    ce90_m,
    confidence_flag,
    hit_en_jacobian,
    horizontal_covariance_en,
    le90_m,
)

__all__ = ["DEFAULT_SIGMAS", "MAX_SIGMAS", "GroundHit", "locate", "solve_ground_hit"]

# Numeric domain (see the module docstring): generous for any camera over the Earth, and tight
# enough that no product or square in the solver or the Jacobian can overflow.
MAX_GROUND_HAE_M = 100_000.0
MAX_CAMERA_HEIGHT_M = 10_000_000.0
MIN_FOCAL_PX = 1e-3
MAX_AXIS_OFFSET = 1e9  # |pixel - principal point| / focal length: 1e-9 rad short of 90 degrees
MAX_SIGMAS = InputSigmas(
    position_m=1e7, altitude_m=1e7, heading_deg=360.0, pitch_deg=360.0, roll_deg=360.0, pixel=1e7
)

_SIGMA_LIMITS = sigma_values(MAX_SIGMAS)


class GroundHit(NamedTuple):
    """The exact hit and the Jacobian of its East/North offsets (uncertainty.INPUT_NAMES order)."""

    camera_lat_rad: float
    camera_lon_rad: float
    crossing: GroundCrossing
    jacobian_en: tuple[EnColumn, ...]


def locate(
    pose: CameraPose,
    intrinsics: Intrinsics,
    pixel_x: float,
    pixel_y: float,
    sigmas: InputSigmas = DEFAULT_SIGMAS,
    *,
    max_range_m: float = 20_000.0,
    green_max_m: float = 30.0,
    yellow_max_m: float = 100.0,
) -> Geolocation:
    """Geolocate one detection; raises GeolocationError when the ray does not reach the ground."""
    _check_sigmas(sigmas)
    hit = solve_ground_hit(pose, intrinsics, pixel_x, pixel_y, max_range_m=max_range_m)
    crossing = hit.crossing
    covariance = horizontal_covariance_en(hit.jacobian_en, sigmas)
    if not all(map(math.isfinite, covariance)):
        # First-order propagation breaks down long before this (see geo/uncertainty.py); a
        # number that is not a number must never reach a map.
        raise ValueError(
            "the position uncertainty of this geometry overflows: the ray grazes the ground "
            "from a camera (nearly) on it"
        )
    return hit_geolocation(
        (hit.camera_lat_rad, hit.camera_lon_rad),
        (crossing.lat_rad, crossing.lon_rad),
        pose.ground_hae_m,
        crossing.range_m,
        covariance,
        le90=le90_m(sigmas),
        flag_limits=(green_max_m, yellow_max_m),
    )


def hit_geolocation(
    camera_rad: tuple[float, float],
    hit_rad: tuple[float, float],
    hae_m: float,
    slant_range_m: float,
    covariance: tuple[float, float, float],
    *,
    le90: float,
    flag_limits: tuple[float, float],
    terrain: Terrain = Terrain.FLAT,
    dem: str | None = None,
) -> Geolocation:
    """The answer for a hit at ``hit_rad`` (latitude, longitude) seen from ``camera_rad``, with this
    horizontal covariance and le90; ``flag_limits`` are the green and yellow ce90 limits."""
    ce90 = ce90_m(*covariance)
    # Positional, in field order: a named tuple called with keywords gets them as a dict.
    return Geolocation(
        math.degrees(hit_rad[0]),  # lat_deg
        normalize_longitude_deg(math.degrees(hit_rad[1])),  # lon_deg
        hae_m,
        slant_range_m,
        geodesic_distance_m(*camera_rad, *hit_rad),  # ground_distance_m
        ce90,  # ce90_m
        le90,  # le90_m
        ce90 / CE90_PER_SIGMA_CIRCULAR,  # ce_m
        le90 / LE90_PER_SIGMA,  # le_m
        covariance,  # covariance_en_m2
        confidence_flag(ce90, *flag_limits),  # flag
        terrain,
        dem,
    )


def solve_ground_hit(
    pose: CameraPose,
    intrinsics: Intrinsics,
    pixel_x: float,
    pixel_y: float,
    *,
    max_range_m: float = 20_000.0,
) -> GroundHit:
    """The geometry half of ``locate``: exact hit plus its first-order sensitivities."""
    _check_geometry_inputs(pose, intrinsics, pixel_x, pixel_y, max_range_m)
    if pose.height_above_ground_m <= 0.0:
        raise GeolocationError(
            NoGroundIntersection.CAMERA_BELOW_GROUND,
            f"camera height above ground is {pose.height_above_ground_m} m",
        )
    camera_height_m = pose.ground_hae_m + pose.height_above_ground_m
    lat, lon, camera_frame, axes, right_offset, down_offset, ray, ray_length, unit_ray_ecef = (
        camera_ray(pose, intrinsics, pixel_x, pixel_y)
    )
    if ray[2] >= 0.0:
        # the ground surface lies entirely below the camera's local horizontal plane (convexity)
        raise GeolocationError(
            NoGroundIntersection.ABOVE_HORIZON, "the ray points at or above the horizontal"
        )
    crossing = first_ground_crossing(
        geodetic_to_ecef(lat, lon, camera_height_m),
        unit_ray_ecef,
        pose.ground_hae_m,
        max_range_m,
    )

    jacobian = hit_en_jacobian(
        ray,
        ray_partials_enu(axes, right_offset, down_offset, intrinsics.focal_px),
        crossing.range_m / ray_length,
        tan_camera_lat=math.tan(lat),
        prime_vertical_plus_height_m=prime_vertical_radius_m(lat) + camera_height_m,
        meridian_plus_height_m=meridian_radius_m(lat) + camera_height_m,
        hit_frame_in_camera_enu=frame_in_frame(
            camera_frame, enu_frame(crossing.lat_rad, crossing.lon_rad)
        ),
    )
    return GroundHit(lat, lon, crossing, jacobian)


# camera_ray's answer: the camera's latitude and longitude (rad), its ENU axes in ECEF, the camera
# axes, the pixel's (right, down) offsets on the image plane, the unnormalised ray in the camera's
# ENU, its length, and the unit ray in ECEF. A plain tuple: this is the scalar hot path.
CameraRay = tuple[float, float, EnuFrame, CameraAxes, float, float, Vec3, float, Vec3]


def camera_ray(
    pose: CameraPose, intrinsics: Intrinsics, pixel_x: float, pixel_y: float
) -> CameraRay:
    """The pixel's ray; ValueError when the pixel is too far off the optical axis."""
    lat = math.radians(pose.lat_deg)
    lon = math.radians(pose.lon_deg)
    camera_frame = enu_frame(lat, lon)
    axes = camera_axes(
        math.radians(pose.heading_deg), math.radians(pose.pitch_deg), math.radians(pose.roll_deg)
    )
    right_offset, down_offset = image_plane_offsets(
        pixel_x, pixel_y, intrinsics.focal_px, intrinsics.cx_px, intrinsics.cy_px
    )
    if not max(abs(right_offset), abs(down_offset)) <= MAX_AXIS_OFFSET:
        raise ValueError(
            f"pixel ({pixel_x}, {pixel_y}) is more than {MAX_AXIS_OFFSET:.0e} focal lengths from "
            "the principal point: a pinhole camera cannot see that far off its axis"
        )
    ray = ray_enu(axes, right_offset, down_offset)
    length = math.sqrt(ray[0] * ray[0] + ray[1] * ray[1] + ray[2] * ray[2])
    unit_ecef = enu_to_ecef(camera_frame, (ray[0] / length, ray[1] / length, ray[2] / length))
    return lat, lon, camera_frame, axes, right_offset, down_offset, ray, length, unit_ecef


def _check_geometry_inputs(
    pose: CameraPose, intrinsics: Intrinsics, pixel_x: float, pixel_y: float, max_range_m: float
) -> None:
    values = (
        *pose_values(pose),
        intrinsics.focal_px,
        intrinsics.cx_px,
        intrinsics.cy_px,
        pixel_x,
        pixel_y,
    )
    if not all(map(math.isfinite, values)):
        raise ValueError(f"non-finite geometry input in {values}")
    if not -90.0 <= pose.lat_deg <= 90.0:
        raise ValueError(f"latitude {pose.lat_deg} is outside [-90, 90]")
    if not abs(pose.ground_hae_m) <= MAX_GROUND_HAE_M:
        raise ValueError(
            f"ground height {pose.ground_hae_m} m is beyond +-{MAX_GROUND_HAE_M:.0f} m"
        )
    if pose.height_above_ground_m > MAX_CAMERA_HEIGHT_M:
        raise ValueError(
            f"camera height {pose.height_above_ground_m} m is above {MAX_CAMERA_HEIGHT_M:.0f} m"
        )
    if intrinsics.focal_px <= 0.0:
        raise ValueError(f"focal length must be positive, got {intrinsics.focal_px} px")
    if intrinsics.focal_px < MIN_FOCAL_PX:
        raise ValueError(f"focal length {intrinsics.focal_px} px is below {MIN_FOCAL_PX} px")
    if not max_range_m > 0.0:
        raise ValueError(f"max_range_m must be positive, got {max_range_m}")


def _check_sigmas(sigmas: InputSigmas) -> None:
    values = sigma_values(sigmas)
    limits = _SIGMA_LIMITS
    # "0 <= v <= limit" is False for NaN, so this also refuses non-finite sigmas.
    if not all(0.0 <= v <= limit for v, limit in zip(values, limits, strict=True)):
        raise ValueError(f"input sigmas must be finite, >= 0 and within {MAX_SIGMAS}, got {sigmas}")
