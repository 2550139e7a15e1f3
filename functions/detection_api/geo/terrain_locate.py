"""locate_on_terrain(): geo/locate.py's answer, with the ground being a DEM instead of a plane.

The camera position is ``pose.lat/lon`` at ellipsoidal height ``camera_hae_m`` (the caller resolves
the altitude reference). The ray (geo/camera.py conventions) is marched through the DEM
(geo/terrain.py); the hit carries the terrain height as its HAE, and the uncertainty adds the DEM's
vertical error and the local slope (geo/terrain_uncertainty.py). When the march meets ground the DEM
does not cover, the result is the ``TerrainMiss``: the caller falls back to the flat ground.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from detection_api.geo.camera import ray_partials_enu
from detection_api.geo.ellipsoid import (
    enu_frame,
    frame_in_frame,
    geodetic_to_ecef,
    meridian_radius_m,
    prime_vertical_radius_m,
)
from detection_api.geo.locate import (
    _check_geometry_inputs,
    _check_sigmas,
    camera_ray,
    hit_geolocation,
)
from detection_api.geo.terrain import TerrainMiss, first_terrain_crossing
from detection_api.geo.terrain_uncertainty import (
    covariance_on_slope,
    hit_enu_jacobian_on_slope,
    shift_sigma_m,
)
from detection_api.geo.types import (
    CameraPose,
    Geolocation,
    GeolocationError,
    InputSigmas,
    Intrinsics,
    NoGroundIntersection,
    Terrain,
)

if TYPE_CHECKING:
    from detection_api.geo.heightgrid import HeightMosaic
from detection_api.geo.uncertainty import (
    LE90_PER_SIGMA,
)

_DEG = math.pi / 180.0


def locate_on_terrain(
    pose: CameraPose,
    intrinsics: Intrinsics,
    pixel_x: float,
    pixel_y: float,
    sigmas: InputSigmas,
    *,
    dem: HeightMosaic,
    camera_hae_m: float,
    dem_sigma_m: float,
    max_range_m: float = 20_000.0,
    green_max_m: float = 30.0,
    yellow_max_m: float = 100.0,
) -> Geolocation | TerrainMiss:
    """Geolocate on the DEM; GeolocationError when the ray meets no terrain within range."""
    _check_sigmas(sigmas)
    _check_geometry_inputs(pose, intrinsics, pixel_x, pixel_y, max_range_m)
    if not (math.isfinite(camera_hae_m) and math.isfinite(dem_sigma_m) and dem_sigma_m >= 0.0):
        raise ValueError(f"camera height {camera_hae_m} m / DEM sigma {dem_sigma_m} m invalid")
    lat, lon, camera_frame, axes, right_offset, down_offset, ray, ray_length, unit_ray_ecef = (
        camera_ray(pose, intrinsics, pixel_x, pixel_y)
    )
    hit = first_terrain_crossing(
        geodetic_to_ecef(lat, lon, camera_hae_m), unit_ray_ecef, dem, max_range_m
    )
    if isinstance(hit, TerrainMiss):
        return hit
    if hit.range_m > max_range_m:
        raise GeolocationError(
            NoGroundIntersection.BEYOND_MAX_RANGE,
            f"the ray meets the terrain {hit.range_m:.0f} m away, "
            f"beyond the {max_range_m:.0f} m limit",
        )

    # metres per degree at the hit, for the slope and the post spacing
    hit_m_per_deg_north = (meridian_radius_m(hit.lat_rad) + hit.height_m) * _DEG
    hit_m_per_deg_east = (
        (prime_vertical_radius_m(hit.lat_rad) + hit.height_m) * math.cos(hit.lat_rad) * _DEG
    )
    camera_radius_n = prime_vertical_radius_m(lat) + camera_hae_m
    jacobian = hit_enu_jacobian_on_slope(
        ray,
        ray_partials_enu(axes, right_offset, down_offset, intrinsics.focal_px),
        hit.range_m / ray_length,
        camera_lat_rad=lat,
        prime_vertical_plus_height_m=camera_radius_n,
        meridian_plus_height_m=meridian_radius_m(lat) + camera_hae_m,
        hit_frame_in_camera_enu=frame_in_frame(camera_frame, enu_frame(hit.lat_rad, hit.lon_rad)),
        slope_east=hit.dh_dlon_per_deg / hit_m_per_deg_east,
        slope_north=hit.dh_dlat_per_deg / hit_m_per_deg_north,
    )
    dlat_deg, dlon_deg = hit.post_spacing_deg
    covariance, var_up = covariance_on_slope(
        jacobian,
        sigmas,
        dem_sigma_m,
        shift_sigma_m(dlon_deg * hit_m_per_deg_east),
        shift_sigma_m(dlat_deg * hit_m_per_deg_north),
    )
    if not (all(map(math.isfinite, covariance)) and math.isfinite(var_up)):
        raise ValueError("the position uncertainty of this geometry overflows (grazing ray)")
    return hit_geolocation(
        (lat, lon),
        (hit.lat_rad, hit.lon_rad),
        hit.height_m,
        hit.range_m,
        covariance,
        le90=LE90_PER_SIGMA * math.sqrt(var_up),
        flag_limits=(green_max_m, yellow_max_m),
        terrain=Terrain.DEM,
        dem=hit.tile,
    )
