"""The WGS84 ellipsoid: geodetic <-> ECEF, local East-North-Up frames, geodesic distance.

Angles are radians and lengths metres throughout this module (callers convert degrees once).
Vectors are plain 3-tuples: for the handful of 3-vectors per detection, tuple arithmetic with the
``math`` module is several times faster than numpy.

Accuracy:
- ``geodetic_to_ecef`` is the exact closed form.
- ``ecef_to_geodetic`` is Vermeille's exact closed form (J. Geodesy 78, 2004, "Computing geodetic
  coordinates from geocentric coordinates"); round-off only (about 1e-9 m in height, 1e-15 rad in
  latitude) for every point farther than ~43 km from the Earth's centre, i.e. anywhere terrestrial.
- ``geodesic_distance_m`` is Vincenty's inverse (Survey Review 23, 1975): about 0.1 mm or better
  on the ellipsoid for the short lines (tens of km) used here; it is not meant for near-antipodal
  points, which no camera ray can reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

Vec3 = tuple[float, float, float]
# A float, or (in geo/*_arrays.py and geo/locate_batch.py) a numpy array of them: the formulas
# written as plain arithmetic serve both.
Real = TypeVar("Real")

SEMI_MAJOR_AXIS_M = 6_378_137.0
FLATTENING = 1.0 / 298.257223563
SEMI_MINOR_AXIS_M = SEMI_MAJOR_AXIS_M * (1.0 - FLATTENING)
ECCENTRICITY_SQUARED = FLATTENING * (2.0 - FLATTENING)

_E2 = ECCENTRICITY_SQUARED
_E4 = _E2 * _E2
_A2 = SEMI_MAJOR_AXIS_M * SEMI_MAJOR_AXIS_M
_VINCENTY_TOLERANCE_RAD = 1e-13  # ~0.6 um on the ground
_VINCENTY_MAX_ITERATIONS = 200


class EnuFrame(NamedTuple):
    """Unit vectors of the local East-North-Up frame, expressed in ECEF."""

    east: Vec3
    north: Vec3
    up: Vec3


def dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def enu_frame(lat_rad: float, lon_rad: float) -> EnuFrame:
    """Local East-North-Up at a geodetic position (up = the ellipsoid normal there)."""
    sin_lat, cos_lat = math.sin(lat_rad), math.cos(lat_rad)
    sin_lon, cos_lon = math.sin(lon_rad), math.cos(lon_rad)
    return EnuFrame(
        east=(-sin_lon, cos_lon, 0.0),
        north=(-sin_lat * cos_lon, -sin_lat * sin_lon, cos_lat),
        up=(cos_lat * cos_lon, cos_lat * sin_lon, sin_lat),
    )


def enu_to_ecef(frame: EnuFrame, vector_enu: Vec3) -> Vec3:
    """Rotate a vector given in East/North/Up components of ``frame`` into ECEF."""
    e, n, u = vector_enu
    east, north, up = frame
    return (
        e * east[0] + n * north[0] + u * up[0],
        e * east[1] + n * north[1] + u * up[1],
        e * east[2] + n * north[2] + u * up[2],
    )


def ecef_to_enu(frame: EnuFrame, vector_ecef: Vec3) -> Vec3:
    """Components of an ECEF vector along East/North/Up of ``frame``."""
    return (dot(frame.east, vector_ecef), dot(frame.north, vector_ecef), dot(frame.up, vector_ecef))


def frame_in_frame(reference: EnuFrame, frame: EnuFrame) -> EnuFrame:
    """The unit vectors of ``frame`` expressed in East/North/Up components of ``reference``."""
    re, rn, ru = reference
    east, north, up = frame
    # written out: a generator unpacked into the constructor was twice the cost
    return EnuFrame(
        (dot(re, east), dot(rn, east), dot(ru, east)),
        (dot(re, north), dot(rn, north), dot(ru, north)),
        (dot(re, up), dot(rn, up), dot(ru, up)),
    )


def prime_vertical_radius_m(lat_rad: float) -> float:
    """N: radius of curvature in the prime vertical (east-west) at a latitude."""
    sin_lat = math.sin(lat_rad)
    return SEMI_MAJOR_AXIS_M / math.sqrt(1.0 - _E2 * sin_lat * sin_lat)


def meridian_radius_m(lat_rad: float) -> float:
    """M: radius of curvature of the meridian (north-south) at a latitude."""
    sin_lat = math.sin(lat_rad)
    w2 = 1.0 - _E2 * sin_lat * sin_lat
    return SEMI_MAJOR_AXIS_M * (1.0 - _E2) / (w2 * math.sqrt(w2))


def geodetic_to_ecef(lat_rad: float, lon_rad: float, height_m: float) -> Vec3:
    sin_lat, cos_lat = math.sin(lat_rad), math.cos(lat_rad)
    n = SEMI_MAJOR_AXIS_M / math.sqrt(1.0 - _E2 * sin_lat * sin_lat)
    horizontal = (n + height_m) * cos_lat
    return (
        horizontal * math.cos(lon_rad),
        horizontal * math.sin(lon_rad),
        (n * (1.0 - _E2) + height_m) * sin_lat,
    )


def ecef_to_geodetic(
    x: Real,
    y: Real,
    z: Real,
    *,
    sqrt: Callable[[Real], Real] = math.sqrt,
    cbrt: Callable[[Real], Real] = math.cbrt,
    atan2: Callable[[Real, Real], Real] = math.atan2,
) -> tuple[Real, Real, Real]:
    """Exact (closed form, Vermeille 2004) ECEF -> (latitude rad, longitude rad, height m).

    geo/ellipsoid_arrays.py passes numpy arrays with numpy's sqrt, cbrt and arctan2; the defaults
    (local names, no attribute look-up) keep the scalar call as fast as a plain math version.
    """
    horizontal_sq = x * x + y * y
    p = horizontal_sq / _A2
    q = (1.0 - _E2) / _A2 * z * z
    r = (p + q - _E4) / 6.0
    s = _E4 * p * q / (4.0 * r * r * r)
    t = cbrt(1.0 + s + sqrt(s * (2.0 + s)))
    u = r * (1.0 + t + 1.0 / t)
    v = sqrt(u * u + _E4 * q)
    w = _E2 * (u + v - q) / (2.0 * v)
    k = sqrt(u + v + w * w) - w
    horizontal = sqrt(horizontal_sq)
    d = k * horizontal / (k + _E2)
    foot_distance = sqrt(d * d + z * z)
    lat = 2.0 * atan2(z, d + foot_distance)
    height = (k + _E2 - 1.0) / k * foot_distance
    return lat, atan2(y, x), height


def normalize_longitude_deg(lon_deg: float) -> float:
    """Longitude in [-180, 180)."""
    wrapped = (lon_deg + 180.0) % 360.0 - 180.0
    # float % can round a tiny negative up to exactly 360, which would give +180
    return wrapped - 360.0 if wrapped >= 180.0 else wrapped


def geodesic_distance_m(
    lat1_rad: float, lon1_rad: float, lat2_rad: float, lon2_rad: float
) -> float:
    """Length of the geodesic on the WGS84 ellipsoid between two points (Vincenty inverse)."""
    f = FLATTENING
    lon_difference = math.remainder(lon2_rad - lon1_rad, math.tau)
    # reduced latitudes, via atan2 so the poles need no special case
    u1 = math.atan2((1.0 - f) * math.sin(lat1_rad), math.cos(lat1_rad))
    u2 = math.atan2((1.0 - f) * math.sin(lat2_rad), math.cos(lat2_rad))
    sin_u1, cos_u1 = math.sin(u1), math.cos(u1)
    sin_u2, cos_u2 = math.sin(u2), math.cos(u2)

    lam = lon_difference
    for _ in range(_VINCENTY_MAX_ITERATIONS):
        sin_lam, cos_lam = math.sin(lam), math.cos(lam)
        sin_sigma = math.hypot(cos_u2 * sin_lam, cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam)
        if sin_sigma == 0.0:
            return 0.0  # coincident points
        cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = cos_u1 * cos_u2 * sin_lam / sin_sigma
        cos2_alpha = 1.0 - sin_alpha * sin_alpha
        # on the equator cos^2(alpha) = 0 and the term below vanishes
        cos_2sigma_m = cos_sigma - 2.0 * sin_u1 * sin_u2 / cos2_alpha if cos2_alpha else 0.0
        c = f / 16.0 * cos2_alpha * (4.0 + f * (4.0 - 3.0 * cos2_alpha))
        previous = lam
        lam = lon_difference + (1.0 - c) * f * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sigma_m + c * cos_sigma * (-1.0 + 2.0 * cos_2sigma_m**2))
        )
        if abs(lam - previous) <= _VINCENTY_TOLERANCE_RAD:
            break
    else:
        raise ArithmeticError("Vincenty inverse did not converge (nearly antipodal points)")

    return vincenty_length_m(cos2_alpha, sin_sigma, cos_sigma, sigma, cos_2sigma_m)


def vincenty_length_m(
    cos2_alpha: Real, sin_sigma: Real, cos_sigma: Real, sigma: Real, cos_2sigma_m: Real
) -> Real:
    """The closing series of Vincenty's inverse: the geodesic's length from the converged
    auxiliary-sphere quantities. Plain arithmetic, so geo/ellipsoid_arrays.py passes arrays."""
    b = SEMI_MINOR_AXIS_M
    u_sq = cos2_alpha * (_A2 - b * b) / (b * b)
    big_a = 1.0 + u_sq / 16384.0 * (4096.0 + u_sq * (-768.0 + u_sq * (320.0 - 175.0 * u_sq)))
    big_b = u_sq / 1024.0 * (256.0 + u_sq * (-128.0 + u_sq * (74.0 - 47.0 * u_sq)))
    delta_sigma = (
        big_b
        * sin_sigma
        * (
            cos_2sigma_m
            + big_b
            / 4.0
            * (
                cos_sigma * (-1.0 + 2.0 * cos_2sigma_m**2)
                - big_b
                / 6.0
                * cos_2sigma_m
                * (-3.0 + 4.0 * sin_sigma**2)
                * (-3.0 + 4.0 * cos_2sigma_m**2)
            )
        )
    )
    return b * big_a * (sigma - delta_sigma)
