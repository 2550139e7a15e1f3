"""Value types of the geolocation core (inputs, outputs, errors).

The values are named tuples, not frozen dataclasses: every detection builds several of them, and
a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (three times the
cost of a named tuple's). They are as immutable; change values with ``_replace``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class CameraPose(NamedTuple):
    lat_deg: float  # WGS84 geodetic latitude of the camera
    lon_deg: float  # WGS84 longitude of the camera
    height_above_ground_m: float  # camera height above the ground plane (v1 location_elevation)
    ground_hae_m: float  # ground plane height above the WGS84 ellipsoid
    heading_deg: float  # azimuth of the optical axis, clockwise from true north
    pitch_deg: float  # elevation of the optical axis, negative below the horizon
    roll_deg: float  # rotation about the optical axis, positive turns the image's right side down


class Intrinsics(NamedTuple):
    focal_px: float
    width_px: float
    height_px: float
    cx_px: float  # principal point, defaults to width / 2
    cy_px: float  # principal point, defaults to height / 2


class InputSigmas(NamedTuple):
    """Independent zero-mean 1-sigma input errors (see geo/uncertainty.py for the defaults)."""

    position_m: float  # camera position, each horizontal axis
    altitude_m: float  # camera height above the ground
    heading_deg: float
    pitch_deg: float
    roll_deg: float
    pixel: float  # each image axis


class AltitudeReference(StrEnum):
    """What ``location_elevation`` (the camera altitude) is measured from."""

    GROUND = "ground"  # height above the ground below the camera (the DEM there, if any)
    ELLIPSOID = "ellipsoid"  # height above the WGS84 ellipsoid (HAE, what GNSS reports)
    GEOID = "geoid"  # height above the geoid (mean sea level)


class Terrain(StrEnum):
    """Which ground the hit lies on."""

    DEM = "dem"  # the terrain of the configured DEM
    FLAT = "flat"  # the ground plane at ``ground_elevation``


class ConfidenceFlag(StrEnum):
    GREEN = "GREEN"
    YELLOW = "YELLOW"
    RED = "RED"


class NoGroundIntersection(StrEnum):
    ABOVE_HORIZON = "ray_above_horizon"  # the ray never descends to the ground height
    BEYOND_MAX_RANGE = "beyond_max_range"  # it does, but farther than the configured range
    CAMERA_BELOW_GROUND = "camera_below_ground"


class GeolocationError(ValueError):
    """The ray through the pixel does not reach the ground: no position can be given."""

    def __init__(self, reason: NoGroundIntersection, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Geolocation(NamedTuple):
    lat_deg: float
    lon_deg: float
    hae_m: float  # ellipsoidal height of the hit (= the ground height)
    slant_range_m: float  # camera to hit, straight line
    ground_distance_m: float  # geodesic distance along the ellipsoid from under the camera
    ce90_m: float  # radius holding 90% of the horizontal error distribution
    le90_m: float  # half-height holding 90% of the vertical error distribution
    ce_m: float  # CoT ce: ce90 / 2.1460 (circular-normal 1-sigma)
    le_m: float  # CoT le: le90 / 1.6449
    # Horizontal covariance at the hit in local East/North metres: (var_e, cov_en, var_n).
    covariance_en_m2: tuple[float, float, float]
    flag: ConfidenceFlag
    terrain: Terrain = Terrain.FLAT
    dem: str | None = None  # the raster the hit lies on (terrain = dem)
    # why the flat ground was used although a DEM is configured (e.g. "outside_dem")
    terrain_note: str | None = None


# A value's fields in declaration order as a plain tuple: for named tuples, ``tuple`` itself (the
# attrgetters these were, one attribute per field, only repeated what a named tuple already is).
pose_values = intrinsics_values = sigma_values = tuple
