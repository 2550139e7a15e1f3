"""geo/ellipsoid.py over numpy arrays: the same WGS84 formulas, one element per detection.

For the batch path (geo/locate_batch.py): a request of many detections pays numpy's per-call
overhead once per operation instead of Python's per-detection cost. Each function is the array
twin of its scalar namesake in geo/ellipsoid.py, with the same algorithm and stopping rules, so
results agree to round-off (tests/test_geo_locate_batch.py). Radians and metres throughout.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from detection_api.geo import ellipsoid as scalar
from detection_api.geo.ellipsoid import FLATTENING, SEMI_MAJOR_AXIS_M, vincenty_length_m

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

_E2 = FLATTENING * (2.0 - FLATTENING)
_VINCENTY_TOLERANCE_RAD = 1e-13  # as in geo/ellipsoid.py
_VINCENTY_MAX_ITERATIONS = 200


class Geodetic(NamedTuple):
    lat_rad: Floats
    lon_rad: Floats
    height_m: Floats


def geodetic_to_ecef(
    sin_lat: Floats, cos_lat: Floats, sin_lon: Floats, cos_lon: Floats, height_m: Floats
) -> tuple[Floats, Floats, Floats]:
    """ECEF of geodetic points given by the sines and cosines of their latitude and longitude."""
    n = SEMI_MAJOR_AXIS_M / np.sqrt(1.0 - _E2 * sin_lat * sin_lat)
    horizontal = (n + height_m) * cos_lat
    return horizontal * cos_lon, horizontal * sin_lon, (n * (1.0 - _E2) + height_m) * sin_lat


def ecef_to_geodetic(x: Floats, y: Floats, z: Floats) -> Geodetic:
    """Vermeille's closed form: ``ellipsoid.ecef_to_geodetic`` with numpy's functions."""
    return Geodetic(*scalar.ecef_to_geodetic(x, y, z, sqrt=np.sqrt, cbrt=np.cbrt, atan2=np.arctan2))


def prime_vertical_radius_m(sin_lat: Floats) -> Floats:
    return SEMI_MAJOR_AXIS_M / np.sqrt(1.0 - _E2 * sin_lat * sin_lat)


def meridian_radius_m(sin_lat: Floats) -> Floats:
    w2 = 1.0 - _E2 * sin_lat * sin_lat
    return SEMI_MAJOR_AXIS_M * (1.0 - _E2) / (w2 * np.sqrt(w2))


def normalize_longitude_deg(lon_deg: Floats) -> Floats:
    """Longitude in [-180, 180) (numpy's ``%`` follows Python's sign rule)."""
    wrapped = (lon_deg + 180.0) % 360.0 - 180.0
    return np.where(wrapped >= 180.0, wrapped - 360.0, wrapped)


def geodesic_distance_m(
    lat1_rad: Floats, lon1_rad: Floats, lat2_rad: Floats, lon2_rad: Floats
) -> tuple[Floats, Bools]:
    """Vincenty inverse, as ``ellipsoid.geodesic_distance_m``; also which elements converged.

    The scalar stopping rule, applied to the last element to converge.
    """
    f = FLATTENING
    difference = lon2_rad - lon1_rad
    lon_difference = difference - math.tau * np.round(difference / math.tau)  # IEEE remainder
    u1 = np.arctan2((1.0 - f) * np.sin(lat1_rad), np.cos(lat1_rad))
    u2 = np.arctan2((1.0 - f) * np.sin(lat2_rad), np.cos(lat2_rad))
    sin_u1, cos_u1 = np.sin(u1), np.cos(u1)
    sin_u2, cos_u2 = np.sin(u2), np.cos(u2)

    lam = lon_difference
    converged = np.zeros(lam.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(_VINCENTY_MAX_ITERATIONS):
            sin_lam, cos_lam = np.sin(lam), np.cos(lam)
            sin_sigma = np.hypot(cos_u2 * sin_lam, cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam)
            cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam
            sigma = np.arctan2(sin_sigma, cos_sigma)
            sin_alpha = cos_u1 * cos_u2 * sin_lam / sin_sigma
            cos2_alpha = 1.0 - sin_alpha * sin_alpha
            cos_2sigma_m = np.where(
                cos2_alpha != 0.0, cos_sigma - 2.0 * sin_u1 * sin_u2 / cos2_alpha, 0.0
            )
            c = f / 16.0 * cos2_alpha * (4.0 + f * (4.0 - 3.0 * cos2_alpha))
            previous = lam
            lam = lon_difference + (1.0 - c) * f * sin_alpha * (
                sigma
                + c * sin_sigma * (cos_2sigma_m + c * cos_sigma * (-1.0 + 2.0 * cos_2sigma_m**2))
            )
            # Every element iterates until the last one converges: the extra iterations of the
            # others only refine them (each shrinks the step by ~f), far below the 1e-6 m asked.
            coincident = sin_sigma == 0.0
            converged = coincident | (np.abs(lam - previous) <= _VINCENTY_TOLERANCE_RAD)
            if converged.all():
                break

    length = vincenty_length_m(cos2_alpha, sin_sigma, cos_sigma, sigma, cos_2sigma_m)
    distance = np.where(coincident, 0.0, length)
    return distance, converged
