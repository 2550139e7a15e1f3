"""geo/intersect.py over numpy arrays: the first crossing of the ground-height surface for many
rays at once, with the scalar solver's first guess, Newton steps, bracket and stopping rule.

Elements it cannot settle within ``NEWTON_STEPS`` (or whose ray passes over the horizon) are
reported as unsettled, for the scalar ``first_ground_crossing`` to decide with its error.
"""

from __future__ import annotations

import numpy as np

from detection_api.geo.ellipsoid import SEMI_MAJOR_AXIS_M, SEMI_MINOR_AXIS_M
from detection_api.geo.ellipsoid_arrays import Bools, Floats, Geodetic, ecef_to_geodetic
from detection_api.geo.intersect import HEIGHT_TOLERANCE_M

NEWTON_STEPS = 8  # the scalar solver needs 1-3; anything slower goes to it


def first_ground_crossings(
    camera_ecef: tuple[Floats, Floats, Floats],
    unit_ray_ecef: tuple[Floats, Floats, Floats],
    ground: Floats,
    ok: Bools,
) -> tuple[Floats, Geodetic, Bools]:
    """geo/intersect.first_ground_crossing for the ``ok`` elements: the range along the unit ray,
    the geodetic position there, and which elements it settled (the inflated-ellipsoid entry, then
    the same Newton steps, bracket and stopping rule; a ray over the horizon, or one needing more
    than ``NEWTON_STEPS``, is left to the scalar solver)."""
    x0, y0, z0 = camera_ecef
    dx, dy, dz = unit_ray_ecef
    with np.errstate(all="ignore"):
        inv_a2 = 1.0 / (SEMI_MAJOR_AXIS_M + ground) ** 2
        inv_b2 = 1.0 / (SEMI_MINOR_AXIS_M + ground) ** 2
        qa = (dx * dx + dy * dy) * inv_a2 + dz * dz * inv_b2
        qb = (x0 * dx + y0 * dy) * inv_a2 + z0 * dz * inv_b2
        qc = (x0 * x0 + y0 * y0) * inv_a2 + z0 * z0 * inv_b2 - 1.0
        discriminant = qb * qb - qa * qc
        ok &= (qc <= 0.0) | ((qb < 0.0) & (discriminant >= 0.0))
        range_m = np.where(qc <= 0.0, 0.0, qc / (-qb + np.sqrt(discriminant)))
        above_range, below_range = np.zeros_like(range_m), np.full_like(range_m, np.inf)
        active = ok.copy()
        for _ in range(NEWTON_STEPS):
            x, y, z = x0 + range_m * dx, y0 + range_m * dy, z0 + range_m * dz
            hit = ecef_to_geodetic(x, y, z)
            miss = hit.height_m - ground
            active &= ~(np.abs(miss) <= HEIGHT_TOLERANCE_M)
            if not active.any():
                break
            hit_cos_lat = np.cos(hit.lat_rad)
            slope = (
                hit_cos_lat * np.cos(hit.lon_rad) * dx
                + hit_cos_lat * np.sin(hit.lon_rad) * dy
                + np.sin(hit.lat_rad) * dz
            )
            over_horizon = active & (miss > 0.0) & (slope >= 0.0) & np.isinf(below_range)
            ok &= ~over_horizon
            active &= ~over_horizon
            above_range = np.where(active & (miss > 0.0), range_m, above_range)
            below_range = np.where(active & ~(miss > 0.0), range_m, below_range)
            step = np.where(slope < 0.0, range_m - miss / slope, np.inf)
            step = np.where(
                (above_range < step) & (step < below_range), step, 0.5 * (above_range + below_range)
            )
            range_m = np.where(active, step, range_m)
    return range_m, hit, ok & ~active
