"""The first point along a ray whose WGS84 geodetic height equals the ground height.

Method: the ellipsoid inflated by the ground height (semi-axes a + h, b + h) is within millimetres
of the true constant-height surface, so its nearer intersection is the first guess. Newton steps on
the exact geodetic height g(t) of the point C + t d then finish the job; dg/dt = up(t) . d exactly,
because geodetic height is the signed distance to the ellipsoid and its gradient the unit normal.

g is convex along any line (signed distance to a convex body), which makes the search safe:
- g(0) is the camera's height above the ground (> 0); a bracket [above, below] is kept and a
  Newton step that leaves it is replaced by bisection, so only the first crossing can be found;
- a point still above the ground where the ray already climbs (dg/dt >= 0) means the ray's lowest
  point is above the ground: it passes over the horizon.
Iteration stops when the geodetic height is within 0.1 um of the ground height, far below the
1 cm promise (one or two conversions in practice).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from detection_api.geo.ellipsoid import (
    SEMI_MAJOR_AXIS_M,
    SEMI_MINOR_AXIS_M,
    Vec3,
    ecef_to_geodetic,
)
from detection_api.geo.types import GeolocationError, NoGroundIntersection

HEIGHT_TOLERANCE_M = 1e-7
_MAX_STEPS = 60  # Newton needs 1-3; bisection fallback halves a bracket of <= max range each time


class GroundCrossing(NamedTuple):
    range_m: float  # distance along the unit ray from the camera
    point_ecef: Vec3
    lat_rad: float
    lon_rad: float
    height_m: float  # geodetic height of the point (the ground height to 0.1 um)


def first_ground_crossing(
    camera_ecef: Vec3, unit_ray_ecef: Vec3, ground_hae_m: float, max_range_m: float
) -> GroundCrossing:
    """First crossing of the ground-height surface along a unit ray from a camera above it.

    Raises GeolocationError(ABOVE_HORIZON) when the ray never gets down to the ground height and
    GeolocationError(BEYOND_MAX_RANGE) when the crossing is farther than ``max_range_m``.
    """
    x0, y0, z0 = camera_ecef
    dx, dy, dz = unit_ray_ecef
    range_m = _inflated_ellipsoid_entry(camera_ecef, unit_ray_ecef, ground_hae_m)

    above_range, below_range = 0.0, math.inf  # bracket of the first crossing
    for _ in range(_MAX_STEPS):
        x, y, z = x0 + range_m * dx, y0 + range_m * dy, z0 + range_m * dz
        lat, lon, height = ecef_to_geodetic(x, y, z)
        miss_m = height - ground_hae_m
        if abs(miss_m) <= HEIGHT_TOLERANCE_M:
            break
        cos_lat = math.cos(lat)
        slope = cos_lat * math.cos(lon) * dx + cos_lat * math.sin(lon) * dy + math.sin(lat) * dz
        if miss_m > 0.0:
            if slope >= 0.0 and below_range == math.inf:
                raise GeolocationError(
                    NoGroundIntersection.ABOVE_HORIZON,
                    "the ray passes over the horizon without reaching the ground height",
                )
            above_range = range_m
        else:
            below_range = range_m
        next_range = range_m - miss_m / slope if slope < 0.0 else math.inf
        if not above_range < next_range < below_range:
            next_range = 0.5 * (above_range + below_range)
        range_m = next_range
    else:  # pragma: no cover - the bracket halves every step, so this means NaN inputs
        raise ArithmeticError("ground intersection did not converge")

    if range_m > max_range_m:
        raise GeolocationError(
            NoGroundIntersection.BEYOND_MAX_RANGE,
            f"the ray reaches the ground {range_m:.0f} m away, "
            f"beyond the {max_range_m:.0f} m limit",
        )
    return GroundCrossing(range_m, (x, y, z), lat, lon, height)


def _inflated_ellipsoid_entry(camera_ecef: Vec3, unit_ray_ecef: Vec3, ground_hae_m: float) -> float:
    """Nearer intersection with the ellipsoid of semi-axes (a + h, b + h): the first guess."""
    inv_a2 = 1.0 / (SEMI_MAJOR_AXIS_M + ground_hae_m) ** 2
    inv_b2 = 1.0 / (SEMI_MINOR_AXIS_M + ground_hae_m) ** 2
    x0, y0, z0 = camera_ecef
    dx, dy, dz = unit_ray_ecef
    # (x0 + t dx)^2/A^2 + ... = 1  <=>  qa t^2 + 2 qb t + qc = 0
    qa = (dx * dx + dy * dy) * inv_a2 + dz * dz * inv_b2
    qb = (x0 * dx + y0 * dy) * inv_a2 + z0 * dz * inv_b2
    qc = (x0 * x0 + y0 * y0) * inv_a2 + z0 * z0 * inv_b2 - 1.0
    if qc <= 0.0:
        # camera within millimetres of the ground: start at the camera, Newton does the rest
        return 0.0
    discriminant = qb * qb - qa * qc
    if qb >= 0.0 or discriminant < 0.0:
        raise GeolocationError(
            NoGroundIntersection.ABOVE_HORIZON,
            "the ray passes over the horizon without reaching the ground height",
        )
    # the numerically stable form of the smaller root
    return qc / (-qb + math.sqrt(discriminant))
